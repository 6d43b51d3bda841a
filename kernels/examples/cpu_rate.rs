//! Kernel throughput per wall-second and per CPU-second of the measuring thread.
//!
//! On a machine shared with other jobs, wall-clock benchmarks (criterion) measure
//! how much CPU the scheduler granted as much as the kernels. This tool also divides
//! the work by the thread's own CPU time (Linux `/proc/thread-self/schedstat`), and
//! runs a register-only FMA loop as a yardstick for what the core delivers right now.
//!
//! `cargo run --release -p readout-kernels --example cpu_rate`

use std::time::Instant;

use readout_kernels::Path;
use readout_kernels::elementwise::{Unary, unary_with};
use readout_kernels::gemm::{GemmShape, gemm_with};

/// CPU time of the calling thread in nanoseconds (Linux), or `None` elsewhere.
fn cpu_ns() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Runs `f` `reps` times; returns (wall seconds, CPU seconds or NaN).
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let (t, c) = (Instant::now(), cpu_ns());
    for _ in 0..reps {
        f();
    }
    let cpu = match (c, cpu_ns()) {
        (Some(a), Some(b)) => (b - a) * 1e-9,
        _ => f64::NAN,
    };
    (t.elapsed().as_secs_f64(), cpu)
}

/// Twelve independent FMA chains on registers: the core's FMA throughput now.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut out = [0.0f32; 8];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = _mm256_cvtss_f32(a);
    }
    out.iter().sum()
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if Path::Avx2.is_available() {
        let iters = 300_000_000;
        // SAFETY: AVX2 and FMA were detected just above.
        let (w, c) = time(1, || {
            std::hint::black_box(unsafe { fma_loop(std::hint::black_box(iters)) });
        });
        // 12 FMAs of 8 lanes, 2 flops each, per iteration.
        let fl = iters as f64 * 12.0 * 16.0;
        println!(
            "FMA peak loop: {:.1} GFLOP/s wall, {:.1} per CPU-s",
            fl / w / 1e9,
            fl / c / 1e9
        );
    }
    let shapes = [
        (1024, 16, 16),
        (16384, 32, 32),
        (16384, 128, 128),
        (65536, 64, 64),
    ];
    for path in [readout_kernels::dispatch::best(), Path::Portable] {
        for (m, k, n) in shapes {
            let sh = GemmShape::new(m, n, k);
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 11) as f32 * 0.1 - 0.5).collect();
            let mut c = vec![0.0f32; m * n];
            let reps = (3e9 / sh.flops() as f64).max(1.0) as usize;
            let (w, cpu) = time(reps, || gemm_with(path, &sh, 1.0, &a, &b, 0.0, &mut c));
            let fl = sh.flops() as f64 * reps as f64;
            println!(
                "gemm {m}x{k}x{n} {path}: {:.1} GFLOP/s wall, {:.1} per CPU-s",
                fl / w / 1e9,
                fl / cpu / 1e9
            );
        }
    }
    let len = 1 << 20;
    let x: Vec<f32> = (0..len).map(|i| (i % 2001) as f32 / 100.0 - 10.0).collect();
    let mut out = vec![0.0f32; len];
    let ops = [
        ("exp", Unary::Exp),
        ("tanh", Unary::Tanh),
        ("sigmoid", Unary::Sigmoid),
        ("softplus", Unary::Softplus),
    ];
    for (name, op) in ops {
        let path = readout_kernels::dispatch::best();
        let (w, cpu) = time(100, || unary_with(path, op, &x, &mut out));
        let n = 100.0 * len as f64;
        println!(
            "{name} 1M {path}: {:.2} ns/elem wall, {:.2} per CPU",
            w * 1e9 / n,
            cpu * 1e9 / n
        );
    }
}

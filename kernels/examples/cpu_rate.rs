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
///
/// Each chain starts from a different value, so the compiler cannot merge them (with
/// equal starting values it may compute one chain and count it twelve times), and an
/// empty `asm!` per iteration keeps the loop from being reordered across iterations.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 12];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(seed * i as f32);
    }
    let (x, y) = (_mm256_set1_ps(0.999_99), _mm256_set1_ps(seed * 1e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
        // SAFETY: an empty assembly block: no instruction, touches no memory or stack.
        unsafe { std::arch::asm!("", options(nomem, nostack)) };
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    _mm256_cvtss_f32(s)
}

/// GFLOP/s of [`fma_loop`] on each of `threads` threads running at the same time.
#[cfg(target_arch = "x86_64")]
fn fma_peak(threads: usize) -> Vec<f64> {
    let iters = 200_000_000;
    let run = move || {
        let t = Instant::now();
        // SAFETY: AVX2 and FMA were detected by the caller.
        std::hint::black_box(unsafe { fma_loop(iters, std::hint::black_box(1.0)) });
        // 12 FMAs of 8 lanes, 2 flops each, per iteration.
        iters as f64 * 12.0 * 16.0 / t.elapsed().as_secs_f64() / 1e9
    };
    let handles: Vec<_> = (0..threads).map(|_| std::thread::spawn(run)).collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or(f64::NAN))
        .collect()
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if Path::Avx2.is_available() {
        let one = fma_peak(1);
        println!("FMA peak loop, 1 thread: {:.1} GFLOP/s", one[0]);
        let two = fma_peak(2);
        println!(
            "FMA peak loop, 2 threads at once: {:.1} + {:.1} = {:.1} GFLOP/s",
            two[0],
            two[1],
            two[0] + two[1]
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

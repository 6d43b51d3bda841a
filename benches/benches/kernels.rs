//! Kernel benchmarks: GEMM (readout at 1 and 2 threads, `matrixmultiply::sgemm`, a
//! naive loop on the small shapes) and the elementwise functions on 1M values.
//!
//! Throughput is reported in elements, which for GEMM are floating-point operations
//! (`2·m·n·k`): criterion's "Gelem/s" reads as GFLOP/s. Short run:
//! `cargo bench -p readout-benches --bench kernels -- --warm-up-time 1 --measurement-time 2 --noplot`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use readout_kernels::elementwise::{Unary, unary};
use readout_kernels::gemm::{GemmShape, gemm, gemm_with};
use readout_kernels::rows::softmax_rows;
use readout_kernels::{Path, dispatch};

/// M × K × N: the kernels issue's shapes, shared with the report tool.
const SHAPES: [(usize, usize, usize); 8] = readout_benches::GEMM_SHAPES;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// The textbook triple loop, for scale.
fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                s += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = s;
        }
    }
}

fn bench_gemm(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("gemm");
    g.sample_size(10);
    let pools: Vec<_> = [1, 2]
        .into_iter()
        .map(|t| {
            (
                t,
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    for (m, k, n) in SHAPES {
        let sh = GemmShape::new(m, n, k);
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let mut c = vec![0.0f32; m * n];
        let id = format!("{m}x{k}x{n}");
        g.throughput(Throughput::Elements(sh.flops()));
        for (t, pool) in &pools {
            // The whole timing loop runs inside the pool (entering a pool costs a few
            // microseconds, as much as the smallest GEMM here).
            g.bench_function(BenchmarkId::new(format!("readout_{t}t"), &id), |bn| {
                pool.install(|| bn.iter(|| gemm(&sh, 1.0, black_box(&a), &b, 0.0, &mut c)))
            });
        }
        if (m, k, n) == (16384, 128, 128) {
            // The `wide` path as a default build compiles it (two SSE halves).
            g.bench_function(BenchmarkId::new("readout_portable_1t", &id), |bn| {
                pools[0].1.install(|| {
                    bn.iter(|| gemm_with(Path::Portable, &sh, 1.0, black_box(&a), &b, 0.0, &mut c))
                })
            });
        }
        g.bench_function(BenchmarkId::new("matrixmultiply_1t", &id), |bn| {
            bn.iter(|| {
                // SAFETY: a is m×k, b is k×n, c is m×n, all row-major and contiguous,
                // so every strided access matrixmultiply makes is in bounds.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        black_box(a.as_ptr()),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
        if sh.flops() <= 2 * 16384 * 32 * 32 {
            g.bench_function(BenchmarkId::new("naive_1t", &id), |bn| {
                bn.iter(|| naive(m, n, k, black_box(&a), &b, &mut c))
            });
        }
    }
    g.finish();
}

fn bench_elementwise(cr: &mut Criterion) {
    const N: usize = 1 << 20;
    let mut g = cr.benchmark_group("unary_1M");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    // Inputs in [-10, 10] (softplus, tanh and sigmoid take every branch), [0, 20]
    // for ln and the Student-t kernel.
    let x: Vec<f32> = values(N, 3).iter().map(|v| v * 10.0).collect();
    let xpos: Vec<f32> = x.iter().map(|v| v + 10.0).collect();
    let mut out = vec![0.0f32; N];
    let ops: [(&str, Unary<f32>, &[f32]); 7] = [
        ("exp", Unary::Exp, &x),
        ("ln", Unary::Ln, &xpos),
        ("tanh", Unary::Tanh, &x),
        ("sigmoid", Unary::Sigmoid, &x),
        ("softplus", Unary::Softplus, &x),
        ("student_t_tau1", Unary::StudentT(1.0), &xpos),
        ("student_t_tau2.5", Unary::StudentT(2.5), &xpos),
    ];
    for (name, op, input) in ops {
        g.bench_function(BenchmarkId::new(name, dispatch::best()), |bn| {
            bn.iter(|| unary(op, black_box(input), &mut out))
        });
        g.bench_function(BenchmarkId::new(name, "scalar"), |bn| {
            bn.iter(|| {
                readout_kernels::elementwise::unary_with(
                    Path::Scalar,
                    op,
                    black_box(input),
                    &mut out,
                )
            })
        });
    }
    // Row softmax over 1M values in rows of 64.
    g.bench_function(BenchmarkId::new("softmax_rows64", dispatch::best()), |bn| {
        bn.iter(|| softmax_rows(black_box(&x), 64, &mut out))
    });
    g.finish();
}

criterion_group!(benches, bench_gemm, bench_elementwise);
criterion_main!(benches);

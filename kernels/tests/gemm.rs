//! GEMM on every path against an f64 triple loop, with the bound
//! `|c − c_exact| ≤ (k + 2)·ε·(|α|·Σ_p |a_ip||b_pj| + |β|·|c_ij|)` (plus a tiny absolute
//! slack for underflow): the classic forward error bound of a dot product in `f32`.

use proptest::prelude::*;
use readout_kernels::Path;
use readout_kernels::gemm::{GemmShape, gemm, gemm_with};

mod common;
use common::paths;

/// Deterministic pseudo-random values in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32) / ((1u64 << 23) as f32) - 1.0
        })
        .collect()
}

struct Case {
    sh: GemmShape,
    alpha: f32,
    beta: f32,
    /// Offset of the first element in each buffer (unaligned sub-slices).
    off: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        (m, n, k): (usize, usize, usize),
        (ta, tb): (bool, bool),
        (pa, pb, pc): (usize, usize, usize),
        alpha: f32,
        beta: f32,
        off: usize,
        seed: u64,
    ) -> Case {
        let mut sh = GemmShape::with_trans(m, n, k, ta, tb);
        sh.lda += pa;
        sh.ldb += pb;
        sh.ldc += pc;
        let a = fill(off + sh.a_len(), seed);
        let b = fill(off + sh.b_len(), seed + 1);
        let c = if beta == 0.0 {
            // beta = 0 must overwrite C without reading it.
            vec![f32::NAN; off + sh.c_len()]
        } else {
            fill(off + sh.c_len(), seed + 2)
        };
        Case {
            sh,
            alpha,
            beta,
            off,
            a,
            b,
            c,
        }
    }

    /// Runs `path` and checks every element of C (and that padding is untouched).
    fn check(&self, path: Path) {
        let s = &self.sh;
        let (a, b) = (&self.a[self.off..], &self.b[self.off..]);
        let mut c = self.c.clone();
        gemm_with(path, s, self.alpha, a, b, self.beta, &mut c[self.off..]);
        let c0 = &self.c[self.off..];
        let got = &c[self.off..];
        let eps = f32::EPSILON as f64;
        for i in 0..s.m {
            for j in 0..s.n {
                let (mut exact, mut mag) = (0.0f64, 0.0f64);
                for p in 0..s.k {
                    let x = if s.trans_a {
                        a[p * s.lda + i]
                    } else {
                        a[i * s.lda + p]
                    } as f64;
                    let y = if s.trans_b {
                        b[j * s.ldb + p]
                    } else {
                        b[p * s.ldb + j]
                    } as f64;
                    exact += x * y;
                    mag += (x * y).abs();
                }
                let alpha = self.alpha as f64;
                let mut want = alpha * exact;
                let mut bound_mag = alpha.abs() * mag;
                if self.beta != 0.0 {
                    let old = c0[i * s.ldc + j] as f64;
                    want += self.beta as f64 * old;
                    bound_mag += (self.beta as f64 * old).abs();
                }
                let bound = (s.k as f64 + 2.0) * eps * bound_mag + 1e-30;
                let g = got[i * s.ldc + j] as f64;
                assert!(
                    (g - want).abs() <= bound,
                    "{path:?} {s:?} alpha {} beta {}: C[{i},{j}] = {g}, want {want} (bound {bound})",
                    self.alpha,
                    self.beta
                );
            }
            // Columns between n and ldc are not part of C: untouched.
            if i + 1 < s.m && s.n > 0 {
                for j in s.n..s.ldc {
                    let (x, y) = (got[i * s.ldc + j], c0[i * s.ldc + j]);
                    assert!(
                        x.to_bits() == y.to_bits(),
                        "{path:?}: padding C[{i},{j}] changed"
                    );
                }
            }
        }
    }
}

/// Sizes around the micro-kernel's 6 × 16 tile and 8-lane vectors, plus random ones.
fn dim(special: &'static [usize], max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![prop::sample::select(special), 0..=max]
}

const MS: &[usize] = &[0, 1, 2, 5, 6, 7, 8, 9, 12, 13, 15, 16, 17, 31, 33];
const NS: &[usize] = &[0, 1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33];
const KS: &[usize] = &[0, 1, 7, 8, 9, 16, 17, 31, 33, 255, 256, 257];

proptest! {
    // Miri interprets every operation (~10⁴× slower): a few cases show the memory
    // accesses of each shape class are sound; the numbers are the native run's job.
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 6 } else { 192 }))]

    #[test]
    fn every_path_matches_f64(
        m in dim(MS, 40), n in dim(NS, 40), k in dim(KS, 70),
        ta in any::<bool>(), tb in any::<bool>(),
        pads in (0usize..3, 0usize..3, 0usize..3),
        alpha in prop::sample::select(&[1.0f32, -0.5, 2.5][..]),
        beta in prop::sample::select(&[0.0f32, 1.0, -1.5][..]),
        off in 0usize..3,
        seed in any::<u64>(),
    ) {
        let case = Case::new((m, n, k), (ta, tb), pads, alpha, beta, off, seed);
        for path in paths() {
            case.check(path);
        }
    }
}

/// Several K blocks (K > 256) and several column blocks (N > 64 with K = 256), in all
/// four transpose combinations.
#[test]
fn multiple_k_and_n_blocks() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let case = Case::new((20, 150, 600), (ta, tb), (1, 2, 3), 0.75, -1.0, 1, 7);
        for path in paths() {
            case.check(path);
        }
        let case = Case::new((13, 70, 257), (ta, tb), (0, 0, 0), 1.0, 0.0, 0, 8);
        for path in paths() {
            case.check(path);
        }
    }
}

/// The dispatched entry point (`gemm`, through `Real::run_kernel`) gives the same bits as its path.
#[test]
fn dispatched_gemm() {
    let case = Case::new((37, 19, 45), (false, true), (0, 1, 0), 1.0, 0.0, 1, 3);
    let mut c = case.c.clone();
    let o = case.off;
    gemm(&case.sh, 1.0, &case.a[o..], &case.b[o..], 0.0, &mut c[o..]);
    let mut want = case.c.clone();
    gemm_with(
        readout_kernels::dispatch::best(),
        &case.sh,
        1.0,
        &case.a[o..],
        &case.b[o..],
        0.0,
        &mut want[o..],
    );
    assert_eq!(c[o..], want[o..]);
}

/// Every path is exercised: AVX2 is skipped only when the CPU lacks it.
#[test]
fn all_paths_are_tested() {
    let p = paths();
    assert!(p.contains(&Path::Scalar) && p.contains(&Path::Portable));
    if !Path::Avx2.is_available() {
        eprintln!("note: this CPU has no AVX2+FMA; the AVX2 path is not tested here");
    }
}

/// The result does not depend on the number of threads (rows are split, K is not).
#[cfg(feature = "rayon")]
#[test]
fn thread_count_does_not_change_results() {
    let case = Case::new((2003, 40, 67), (false, true), (0, 0, 0), 1.0, 0.5, 0, 11);
    assert!(case.sh.flops() >= readout_kernels::gemm::PARALLEL_MIN_FLOPS);
    for path in paths() {
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = case.c.clone();
            pool.install(|| gemm_with(path, &case.sh, 1.0, &case.a, &case.b, 0.5, &mut c));
            outs.push(c);
        }
        for o in &outs[1..] {
            assert!(
                o.iter()
                    .zip(&outs[0])
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{path:?}"
            );
        }
        case.check(path);
    }
}

/// Degenerate shapes: nothing to do, or K = 0 (C = beta·C).
#[test]
fn empty_and_k_zero() {
    for path in paths() {
        let mut c = vec![3.0f32; 6];
        gemm_with(path, &GemmShape::new(2, 3, 0), 1.0, &[], &[], 2.0, &mut c);
        assert_eq!(c, [6.0; 6]);
        let mut c = vec![f32::NAN; 6];
        gemm_with(path, &GemmShape::new(2, 3, 0), 1.0, &[], &[], 0.0, &mut c);
        assert_eq!(c, [0.0; 6]);
        let mut c: Vec<f32> = vec![];
        gemm_with(
            path,
            &GemmShape::new(0, 3, 4),
            1.0,
            &[],
            &[0.0; 12],
            0.0,
            &mut c,
        );
    }
}

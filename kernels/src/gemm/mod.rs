//! General matrix multiply: `C = alpha·op(A)·op(B) + beta·C`, row-major.
//!
//! The kernel is `GemmKernel`: for `f32` the dispatched SIMD path
//! ([`crate::dispatch`]) runs a packed, register-blocked loop nest (`driver` →
//! `pack` → `microkernel`); the scalar reference is plain loops (and all of `f64`).
//! With the `rayon` feature, calls of at least [`PARALLEL_MIN_FLOPS`] are split into
//! row blocks of `C`, one per thread of the current rayon pool, before dispatch; the
//! result does not depend on the number of threads (the split is over rows of `C`
//! only, never over `K`).

mod driver;
mod microkernel;
mod pack;

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::Simd;

/// Shape and layout of one GEMM call, BLAS style but row-major.
///
/// `op(A)` is `m × k` and `op(B)` is `k × n`; `C` is `m × n`.
/// Without transpose, `A` is stored as `m` rows of length ≥ `k` at stride `lda`
/// (element `(i, p)` at `a[i·lda + p]`); with `trans_a`, `A` is stored as `k` rows of
/// length ≥ `m` (element `op(A)(i, p)` at `a[p·lda + i]`). Likewise for `B` with
/// `ldb`, and `C` element `(i, j)` is at `c[i·ldc + j]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of `op(A)` and `C`.
    pub m: usize,
    /// Columns of `op(B)` and `C`.
    pub n: usize,
    /// Columns of `op(A)`, rows of `op(B)`.
    pub k: usize,
    /// Whether `A` is stored transposed.
    pub trans_a: bool,
    /// Whether `B` is stored transposed.
    pub trans_b: bool,
    /// Leading dimension (row stride) of the stored `A`.
    pub lda: usize,
    /// Leading dimension (row stride) of the stored `B`.
    pub ldb: usize,
    /// Leading dimension (row stride) of `C`.
    pub ldc: usize,
}

impl GemmShape {
    /// Contiguous, untransposed `A [m, k]`, `B [k, n]`, `C [m, n]`.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmShape {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            lda: k,
            ldb: n,
            ldc: n,
        }
    }

    /// Contiguous operands with the given transposes: the leading dimensions are those
    /// of the stored matrices (`A` stored `[k, m]` when `trans_a`, `B` stored `[n, k]`
    /// when `trans_b`).
    pub fn with_trans(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Self {
        GemmShape {
            m,
            n,
            k,
            trans_a,
            trans_b,
            lda: if trans_a { m } else { k },
            ldb: if trans_b { k } else { n },
            ldc: n,
        }
    }

    /// Minimum length of the `a` slice for this shape.
    pub fn a_len(&self) -> usize {
        let (rows, cols) = stored(self.trans_a, self.m, self.k);
        min_len(rows, cols, self.lda)
    }

    /// Minimum length of the `b` slice for this shape.
    pub fn b_len(&self) -> usize {
        let (rows, cols) = stored(self.trans_b, self.k, self.n);
        min_len(rows, cols, self.ldb)
    }

    /// Minimum length of the `c` slice for this shape.
    pub fn c_len(&self) -> usize {
        min_len(self.m, self.n, self.ldc)
    }

    /// Floating-point operations of the call: `2·m·n·k`.
    pub fn flops(&self) -> u64 {
        2 * self.m as u64 * self.n as u64 * self.k as u64
    }

    /// Panics with a message if the slices or leading dimensions do not fit the shape.
    pub(crate) fn check(&self, a: usize, b: usize, c: usize) {
        let (ar, ac) = stored(self.trans_a, self.m, self.k);
        let (br, bc) = stored(self.trans_b, self.k, self.n);
        assert!(ar <= 1 || self.lda >= ac, "gemm: lda {} < {}", self.lda, ac);
        assert!(br <= 1 || self.ldb >= bc, "gemm: ldb {} < {}", self.ldb, bc);
        assert!(
            self.m <= 1 || self.ldc >= self.n,
            "gemm: ldc {} < {}",
            self.ldc,
            self.n
        );
        assert!(
            a >= self.a_len(),
            "gemm: a has {} elements, needs {}",
            a,
            self.a_len()
        );
        assert!(
            b >= self.b_len(),
            "gemm: b has {} elements, needs {}",
            b,
            self.b_len()
        );
        assert!(
            c >= self.c_len(),
            "gemm: c has {} elements, needs {}",
            c,
            self.c_len()
        );
    }
}

/// Rows and columns of the stored matrix whose `op` is `rows × cols`.
fn stored(trans: bool, rows: usize, cols: usize) -> (usize, usize) {
    if trans { (cols, rows) } else { (rows, cols) }
}

/// Minimum length of a `rows × cols` matrix stored with row stride `ld`.
fn min_len(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// `C = alpha·op(A)·op(B) + beta·C`.
///
/// When `beta` is zero, `C` is overwritten without being read (NaN in `C` does not
/// propagate), as in BLAS. With `k = 0`, `C = beta·C`.
///
/// # Panics
/// If a slice is shorter than the shape needs or a leading dimension is smaller than
/// its row length: these are caller bugs, the core validates user shapes first.
pub fn gemm<T: Real>(shape: &GemmShape, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
    let call = GemmArgs::new(shape, alpha, a, b, beta, c);
    call.for_each_row_block(|block| T::run_kernel::<GemmKernel>(block));
}

/// [`gemm`] for `f32` on a given [`Path`] instead of the dispatched one (tests,
/// benchmarks). Same contract and threading as [`gemm`].
///
/// # Panics
/// As [`gemm`], and if `path` is not available here ([`Path::is_available`]).
pub fn gemm_with(
    path: Path,
    shape: &GemmShape,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    let call = GemmArgs::new(shape, alpha, a, b, beta, c);
    call.for_each_row_block(|block| dispatch::run::<GemmKernel>(path, block));
}

/// Below this many floating-point operations (`2·m·n·k`) a call stays on one thread:
/// handing work to the rayon pool costs a few microseconds, which is what ~8 MFLOP
/// take on one core here (measured: see the crate README).
pub const PARALLEL_MIN_FLOPS: u64 = 8_000_000;

/// Runs `f` with every kernel call it makes kept on the calling thread (see
/// [`crate::parallel::on_this_thread`]).
pub use crate::parallel::on_this_thread;

/// The arguments of one GEMM call (slices already checked against the shape).
pub(crate) struct GemmArgs<'a, T> {
    shape: &'a GemmShape,
    alpha: T,
    a: &'a [T],
    b: &'a [T],
    beta: T,
    c: &'a mut [T],
}

impl<'a, T: Real> GemmArgs<'a, T> {
    /// Checks the slices against the shape.
    fn new(
        shape: &'a GemmShape,
        alpha: T,
        a: &'a [T],
        b: &'a [T],
        beta: T,
        c: &'a mut [T],
    ) -> Self {
        shape.check(a.len(), b.len(), c.len());
        GemmArgs {
            shape,
            alpha,
            a,
            b,
            beta,
            c,
        }
    }

    /// Runs `f` on the whole call, or, with the `rayon` feature and a call of at
    /// least [`PARALLEL_MIN_FLOPS`] made outside [`on_this_thread`], on one block of
    /// rows of `C` per thread of the current pool (a multiple of the micro-kernel's
    /// rows each), in parallel.
    fn for_each_row_block(self, f: impl Fn(GemmArgs<'_, T>) + Send + Sync) {
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            let sh = self.shape;
            let threads = crate::parallel::threads_here();
            let mr = microkernel::MR;
            if threads >= 2 && sh.flops() >= PARALLEL_MIN_FLOPS && sh.m >= 2 * mr {
                let blocks = threads.min(sh.m / mr);
                let rows = sh.m.div_ceil(blocks).div_ceil(mr) * mr;
                let c_len = sh.c_len();
                let (alpha, a, b, beta) = (self.alpha, self.a, self.b, self.beta);
                self.c[..c_len]
                    .par_chunks_mut(rows * sh.ldc)
                    .enumerate()
                    .for_each(|(i, c)| {
                        let i0 = i * rows;
                        let shape = &GemmShape {
                            m: rows.min(sh.m - i0),
                            ..*sh
                        };
                        let a = if sh.trans_a {
                            &a[i0..]
                        } else {
                            &a[i0 * sh.lda..]
                        };
                        // Checked again: a block is a valid call of its own.
                        f(GemmArgs::new(shape, alpha, a, b, beta, c));
                    });
                return;
            }
        }
        f(self)
    }
}

/// The GEMM kernel (see [`crate::dispatch`]).
pub(crate) struct GemmKernel;

impl Kernel for GemmKernel {
    type Args<'a, T: Real> = GemmArgs<'a, T>;
    type Output = ();

    /// Plain loops: the definition every fast path is tested against.
    fn reference<T: Real>(call: GemmArgs<'_, T>) {
        let (s, alpha, beta) = (call.shape, call.alpha, call.beta);
        let (a, b, c) = (call.a, call.b, call.c);
        if s.n == 0 {
            // C may be empty while m > 0: there is no row to slice.
            return;
        }
        let at = |i: usize, p: usize| {
            if s.trans_a {
                a[p * s.lda + i]
            } else {
                a[i * s.lda + p]
            }
        };
        let bt = |p: usize, j: usize| {
            if s.trans_b {
                b[j * s.ldb + p]
            } else {
                b[p * s.ldb + j]
            }
        };
        for i in 0..s.m {
            let row = &mut c[i * s.ldc..i * s.ldc + s.n];
            for (j, cij) in row.iter_mut().enumerate() {
                let mut acc = T::ZERO;
                for p in 0..s.k {
                    acc += at(i, p) * bt(p, j);
                }
                *cij = if beta == T::ZERO {
                    alpha * acc
                } else {
                    alpha * acc + beta * *cij
                };
            }
        }
    }

    /// The packed, register-blocked loop nest ([`driver`]).
    #[inline(always)]
    fn run<S: Simd>(s: S, call: GemmArgs<'_, f32>) {
        driver::gemm(s, call)
    }
}

//! General matrix multiply: `C = alpha·op(A)·op(B) + beta·C`, row-major.

use crate::Real;

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
        let (rows, cols) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        min_len(rows, cols, self.lda)
    }

    /// Minimum length of the `b` slice for this shape.
    pub fn b_len(&self) -> usize {
        let (rows, cols) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
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
        let (ar, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
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
    shape.check(a.len(), b.len(), c.len());
    T::gemm_hook(shape, alpha, a, b, beta, c)
}

/// Scalar reference GEMM: the definition every fast path is tested against.
pub mod reference {
    use super::GemmShape;
    use crate::Real;

    /// Plain loops; same contract as [`super::gemm`].
    pub fn gemm<T: Real>(s: &GemmShape, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) {
        s.check(a.len(), b.len(), c.len());
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
}

//! Matrix products over CSR segments of rows: the per-graph `Sᵀ·X` of a ragged batch
//! without padding every graph to the largest one.
//!
//! For CSR boundaries `ptr` (`B + 1` entries, segment `g` = rows `ptr[g] .. ptr[g+1]`):
//!
//! - [`Tape::segment_matmul_tn`]: `a [N, P]`, `c [N, Q]` → `[B, P, Q]`, `out_g = a_gᵀ·c_g`;
//! - [`Tape::segment_matmul_nn`]: `a [N, P]`, `b [B, P, Q]` → `[N, Q]`, `out_g = a_g·b_g`;
//! - [`Tape::segment_matmul_nt`]: `a [N, P]`, `b [B, Q, P]` → `[N, Q]`, `out_g = a_g·b_gᵀ`.
//!
//! The three are closed under differentiation, which is what makes them recordable:
//! for `out_g = a_gᵀ·c_g` with incoming gradient `G [B, P, Q]`, `da_g = c_g·G_gᵀ`
//! (`segment_matmul_nt`) and `dc_g = a_g·G_g` (`segment_matmul_nn`); for
//! `y_g = a_g·op(b_g)` with `G [N, Q]`, `da_g = G_g·op(b_g)ᵀ` (the other of `nn`/`nt`)
//! and `db_g = a_gᵀ·G_g` or `G_gᵀ·a_g` (`segment_matmul_tn`). Every segment is one
//! [`gemm`] call; empty segments give zero blocks. The work is `O(N·P·Q)` whatever
//! the segment sizes, where a padded batched product costs `O(B·max_g n_g·P·Q)`.

use alloc::sync::Arc;

use readout_kernels::gemm::{GemmShape, gemm};

use crate::op::{Contributions, Op};
use crate::ops::index::check_ptr;
use crate::tape::Parents;
use crate::{CoreError, Real, Shape, Tape, Tensor, Var};

/// Rows and columns of a rank-2 operand.
fn rank2(op: &'static str, arg: &'static str, s: Shape) -> Result<(usize, usize), CoreError> {
    match *s.dims() {
        [r, c] => Ok((r, c)),
        _ => Err(CoreError::bad_rank(op, arg, s, "rank 2")),
    }
}

/// Validates `ptr` against `n` rows and returns the number of segments.
fn segments(op: &'static str, ptr: &[usize], n: usize) -> Result<usize, CoreError> {
    check_ptr(op, ptr, n)?;
    Ok(ptr.len() - 1)
}

impl<T: Real> Tape<T> {
    /// Per-segment `aᵀ·c`: `a [N, P]`, `c [N, Q]` and CSR `ptr` (`B + 1` entries) give
    /// `[B, P, Q]` with block `g` equal to `a[ptr[g]..ptr[g+1]]ᵀ · c[ptr[g]..ptr[g+1]]`
    /// (zero for an empty segment). This is the batched `Sᵀ·X` of a ragged batch of
    /// graphs, computed on the `N` real rows only.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] unless `a` and `c` are rank 2; [`CoreError::ShapeMismatch`]
    /// if their row counts differ; [`CoreError::BadPtr`] unless `ptr` starts at 0,
    /// never decreases and ends at `N`; [`CoreError::TooLarge`] if the result cannot be
    /// allocated.
    pub fn segment_matmul_tn(&mut self, a: Var, c: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        const OP: &str = "segment_matmul_tn";
        let sa = self.check(OP, a)?.dims();
        let sc = self.check(OP, c)?.dims();
        let (n, _) = rank2(OP, "a", sa)?;
        let (nc, _) = rank2(OP, "c", sc)?;
        if n != nc {
            return Err(CoreError::ShapeMismatch {
                op: OP,
                arg: "c",
                got: sc,
                other: sa,
                why: "a and c must have the same number of rows",
            });
        }
        let segs = segments(OP, ptr, n)?;
        crate::tensor::check_alloc::<T>(OP, Shape::d3(segs, sa.cols(), sc.cols()))?;
        Ok(self.tn_shared(a, c, ptr.into()))
    }

    /// Per-segment `a·b`: `a [N, P]`, `b [B, P, Q]` and CSR `ptr` (`B + 1` entries) give
    /// `[N, Q]` with rows `ptr[g]..ptr[g+1]` equal to `a[ptr[g]..ptr[g+1]] · b[g]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] unless `a` is rank 2 and `b` rank 3;
    /// [`CoreError::BadPtr`] for an invalid `ptr` (see [`Tape::segment_matmul_tn`]);
    /// [`CoreError::ShapeMismatch`] if `b` does not have one `[P, Q]` block per segment;
    /// [`CoreError::TooLarge`] if the result cannot be allocated.
    pub fn segment_matmul_nn(&mut self, a: Var, b: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        self.segment_matmul_rows("segment_matmul_nn", a, b, ptr, false)
    }

    /// Per-segment `a·bᵀ`: `a [N, P]`, `b [B, Q, P]` and CSR `ptr` (`B + 1` entries) give
    /// `[N, Q]` with rows `ptr[g]..ptr[g+1]` equal to `a[ptr[g]..ptr[g+1]] · b[g]ᵀ`.
    ///
    /// # Errors
    /// As [`Tape::segment_matmul_nn`], with `b`'s blocks `[Q, P]`.
    pub fn segment_matmul_nt(&mut self, a: Var, b: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        self.segment_matmul_rows("segment_matmul_nt", a, b, ptr, true)
    }

    fn segment_matmul_rows(
        &mut self,
        op: &'static str,
        a: Var,
        b: Var,
        ptr: &[usize],
        trans_b: bool,
    ) -> Result<Var, CoreError> {
        let sa = self.check(op, a)?.dims();
        let sb = self.check(op, b)?.dims();
        let (n, p) = rank2(op, "a", sa)?;
        let &[bb, r, c] = sb.dims() else {
            let expected = "rank 3, one matrix per segment";
            return Err(CoreError::bad_rank(op, "b", sb, expected));
        };
        let segs = segments(op, ptr, n)?;
        if bb != segs {
            return Err(CoreError::ShapeMismatch {
                op,
                arg: "b",
                got: sb,
                other: Shape::d1(ptr.len()),
                why: "b must hold one matrix per segment (ptr.len() - 1 of them)",
            });
        }
        let inner = if trans_b { c } else { r };
        if inner != p {
            return Err(CoreError::ShapeMismatch {
                op,
                arg: "b",
                got: sb,
                other: sa,
                why: "inner dimensions differ",
            });
        }
        let q = if trans_b { r } else { c };
        crate::tensor::check_alloc::<T>(op, Shape::d2(n, q))?;
        Ok(self.rows_shared(a, b, ptr.into(), trans_b))
    }

    /// `segment_matmul_tn` on validated operands.
    fn tn_shared(&mut self, a: Var, c: Var, ptr: Arc<[usize]>) -> Var {
        let (ta, tc) = (self.val(a), self.val(c));
        let (p, q) = (ta.dims().cols(), tc.dims().cols());
        let segs = ptr.len() - 1;
        let shape = Shape::d3(segs, p, q);
        let mut out = self.buffer(shape.numel());
        let (va, vc) = (ta.data(), tc.data());
        for g in 0..segs {
            let (lo, hi) = (ptr[g], ptr[g + 1]);
            if lo == hi || p == 0 || q == 0 {
                continue;
            }
            let gs = GemmShape::with_trans(p, q, hi - lo, true, false);
            gemm(
                &gs,
                T::ONE,
                &va[lo * p..hi * p],
                &vc[lo * q..hi * q],
                T::ZERO,
                &mut out[g * p * q..(g + 1) * p * q],
            );
        }
        self.push(Op::SegmentMatMulTN(ptr), &[a, c], Tensor::raw(shape, out))
    }

    /// `segment_matmul_nn` / `_nt` on validated operands.
    fn rows_shared(&mut self, a: Var, b: Var, ptr: Arc<[usize]>, trans_b: bool) -> Var {
        let (ta, tb) = (self.val(a), self.val(b));
        let n = ta.dims().rows();
        let p = ta.dims().cols();
        let d = tb.dims();
        let (r, c) = (d.dims()[1], d.dims()[2]);
        let q = if trans_b { r } else { c };
        let shape = Shape::d2(n, q);
        let mut out = self.buffer(shape.numel());
        let (va, vb) = (ta.data(), tb.data());
        for g in 0..ptr.len() - 1 {
            let (lo, hi) = (ptr[g], ptr[g + 1]);
            if lo == hi || q == 0 {
                continue;
            }
            let gs = GemmShape::with_trans(hi - lo, q, p, false, trans_b);
            gemm(
                &gs,
                T::ONE,
                &va[lo * p..hi * p],
                &vb[g * r * c..(g + 1) * r * c],
                T::ZERO,
                &mut out[lo * q..hi * q],
            );
        }
        self.push(
            Op::SegmentMatMul { ptr, trans_b },
            &[a, b],
            Tensor::raw(shape, out),
        )
    }
}

/// Backward rules of both segment products, written in the segment products themselves
/// so that they can be recorded.
pub(crate) fn backward<T: Real>(
    tape: &mut Tape<T>,
    op: &Op<T>,
    ps: &Parents,
    needs: [bool; 3],
    g: Var,
) -> Result<Contributions, CoreError> {
    let (a, b) = (ps.at(0), ps.at(1));
    Ok(match op {
        // out_g = a_gᵀ·c_g (b is c here): da_g = c_g·G_gᵀ, dc_g = a_g·G_g.
        Op::SegmentMatMulTN(ptr) => {
            let da = needs[0].then(|| tape.rows_shared(b, g, ptr.clone(), true));
            let dc = needs[1].then(|| tape.rows_shared(a, g, ptr.clone(), false));
            [da, dc, None]
        }
        // y_g = a_g·b_g: da_g = G_g·b_gᵀ, db_g = a_gᵀ·G_g.
        // y_g = a_g·b_gᵀ: da_g = G_g·b_g, db_g = G_gᵀ·a_g.
        Op::SegmentMatMul { ptr, trans_b } => {
            let da = needs[0].then(|| tape.rows_shared(g, b, ptr.clone(), !trans_b));
            let db = needs[1].then(|| {
                if *trans_b {
                    tape.tn_shared(g, a, ptr.clone())
                } else {
                    tape.tn_shared(a, g, ptr.clone())
                }
            });
            [da, db, None]
        }
        _ => unreachable!("segment_matmul::backward called for {op:?}"),
    })
}

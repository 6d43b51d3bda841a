//! Matrix products: `op(A)·op(B)` for rank-2 operands and batched rank-3 operands.

use readout_kernels::gemm::{GemmShape, gemm};

use crate::op::{Contributions, Op};
use crate::tape::Parents;
use crate::{CoreError, Real, Shape, Tape, Tensor, Var};

const OP: &str = "matmul";

/// `(batch, rows, cols)` of a rank-2 or rank-3 operand as stored.
fn dims3(
    op: &'static str,
    arg: &'static str,
    s: Shape,
) -> Result<(usize, usize, usize), CoreError> {
    match *s.dims() {
        [r, c] => Ok((1, r, c)),
        [b, r, c] => Ok((b, r, c)),
        _ => Err(CoreError::bad_rank(op, arg, s, "rank 2 or 3")),
    }
}

impl<T: Real> Tape<T> {
    /// Matrix product `a·b`: `[M, K]·[K, N] → [M, N]`, or batched
    /// `[B, M, K]·[B, K, N] → [B, M, N]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] unless both are rank 2 or both rank 3;
    /// [`CoreError::ShapeMismatch`] if the inner or batch dimensions differ;
    /// [`CoreError::TooLarge`] if the product cannot be allocated (empty operands may
    /// have absurd outer dimensions).
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var, CoreError> {
        self.matmul_with(a, b, false, false)
    }

    /// Matrix product `op(a)·op(b)` where `op` transposes the last two axes when the
    /// flag is set: e.g. `matmul_with(x, w, false, true)` is `x·wᵀ`, a linear layer.
    ///
    /// # Errors
    /// As [`Tape::matmul`], on the transposed shapes.
    pub fn matmul_with(
        &mut self,
        a: Var,
        b: Var,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<Var, CoreError> {
        let sa = self.check(OP, a)?.dims();
        let sb = self.check(OP, b)?.dims();
        let (ba, ra, ca) = dims3(OP, "a", sa)?;
        let (bb, rb, cb) = dims3(OP, "b", sb)?;
        // Every mismatch is `b`'s shape against `a`'s.
        let mismatch = |why| CoreError::ShapeMismatch {
            op: OP,
            arg: "b",
            got: sb,
            other: sa,
            why,
        };
        if sa.rank() != sb.rank() {
            return Err(mismatch("both operands must have the same rank"));
        }
        if ba != bb {
            return Err(mismatch("batch dimensions differ"));
        }
        let (m, k) = if trans_a { (ca, ra) } else { (ra, ca) };
        let (k2, n) = if trans_b { (cb, rb) } else { (rb, cb) };
        if k != k2 {
            return Err(mismatch("inner dimensions differ"));
        }
        let out_shape = if sa.rank() == 3 {
            Shape::d3(ba, m, n)
        } else {
            Shape::d2(m, n)
        };
        crate::tensor::check_alloc::<T>(OP, out_shape)?;
        let mut out = self.buffer_overwritten(out_shape.numel());
        let gs = GemmShape::with_trans(m, n, k, trans_a, trans_b);
        let (va, vb) = (self.val(a).data(), self.val(b).data());
        for bi in 0..ba {
            let a_i = &va[bi * m * k..(bi + 1) * m * k];
            let b_i = &vb[bi * k * n..(bi + 1) * k * n];
            gemm(
                &gs,
                T::ONE,
                a_i,
                b_i,
                T::ZERO,
                &mut out[bi * m * n..(bi + 1) * m * n],
            );
        }
        Ok(self.push(
            Op::MatMul { trans_a, trans_b },
            &[a, b],
            Tensor::raw(out_shape, out),
        ))
    }
}

/// For `C = op(A)·op(B)`: `dA = g·op(B)ᵀ` (stored as `op(B)·gᵀ` when A is stored
/// transposed) and `dB = op(A)ᵀ·g` (stored as `gᵀ·op(A)` when B is).
pub(crate) fn matmul_backward<T: Real>(
    tape: &mut Tape<T>,
    ps: &Parents,
    trans_a: bool,
    trans_b: bool,
    needs: [bool; 3],
    g: Var,
) -> Result<Contributions, CoreError> {
    let (a, b) = (ps.at(0), ps.at(1));
    let da = if !needs[0] {
        None
    } else if trans_a {
        Some(tape.matmul_with(b, g, trans_b, true)?)
    } else {
        Some(tape.matmul_with(g, b, false, !trans_b)?)
    };
    let db = if !needs[1] {
        None
    } else if trans_b {
        Some(tape.matmul_with(g, a, true, trans_a)?)
    } else {
        Some(tape.matmul_with(a, g, !trans_a, false)?)
    };
    Ok([da, db, None])
}

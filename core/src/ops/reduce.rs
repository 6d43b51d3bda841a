//! Sums and means (of everything, per row, per column) and their adjoint, the
//! broadcast `expand`.

use readout_kernels::elementwise::Broadcast;
use readout_kernels::layout;
use readout_kernels::reduce::{sum_all, sum_cols, sum_rows};

use crate::op::Op;
use crate::{CoreError, Real, Shape, Tape, Tensor, Var};

impl<T: Real> Tape<T> {
    /// Sum of all values, a scalar (rank 0).
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn sum(&mut self, x: Var) -> Result<Var, CoreError> {
        let s = sum_all(self.check("sum", x)?.data());
        Ok(self.push(Op::SumAll, &[x], Tensor::scalar(s)))
    }

    /// Mean of all values, a scalar (NaN for an empty tensor, as in PyTorch).
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn mean(&mut self, x: Var) -> Result<Var, CoreError> {
        let n = self.check("mean", x)?.numel();
        let s = self.sum(x)?;
        self.scale(s, T::ONE / T::from_usize(n))
    }

    /// Sum over the last axis: `[.., C] → [..]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar.
    pub fn sum_rows(&mut self, x: Var) -> Result<Var, CoreError> {
        let t = self.check("sum_rows", x)?;
        let s = t.dims();
        if s.rank() == 0 {
            return Err(CoreError::bad_rank("sum_rows", "x", s, "rank 1 to 3"));
        }
        let out_shape = s.without_last();
        let mut out = self.buffer(out_shape.numel());
        sum_rows(t.data(), s.cols(), &mut out);
        Ok(self.push(Op::SumRows, &[x], Tensor::raw(out_shape, out)))
    }

    /// Mean over the last axis: `[.., C] → [..]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar.
    pub fn mean_rows(&mut self, x: Var) -> Result<Var, CoreError> {
        let cols = self.check("mean_rows", x)?.dims().cols();
        let s = self.sum_rows(x)?;
        self.scale(s, T::ONE / T::from_usize(cols))
    }

    /// Sum over every leading axis, one value per column: `[.., C] → [C]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar.
    pub fn sum_cols(&mut self, x: Var) -> Result<Var, CoreError> {
        let t = self.check("sum_cols", x)?;
        let s = t.dims();
        if s.rank() == 0 {
            return Err(CoreError::bad_rank("sum_cols", "x", s, "rank 1 to 3"));
        }
        let mut out = self.buffer(s.cols());
        sum_cols(t.data(), &mut out);
        Ok(self.push(Op::SumCols, &[x], Tensor::raw(Shape::d1(s.cols()), out)))
    }

    /// Mean over every leading axis: `[.., C] → [C]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar.
    pub fn mean_cols(&mut self, x: Var) -> Result<Var, CoreError> {
        let rows = self.check("mean_cols", x)?.dims().rows();
        let s = self.sum_cols(x)?;
        self.scale(s, T::ONE / T::from_usize(rows))
    }

    /// Broadcasts `x` to `shape`: one value (`Scalar`), one value per row (`Col`), or
    /// one value per column (`Row`). The caller guarantees `x` has the right count.
    pub(crate) fn expand(&mut self, x: Var, bcast: Broadcast, shape: Shape) -> Var {
        // `layout::expand` writes every value: no zeroing pass first (on `sum`'s
        // backward over a large tensor that pass cost as much as the expand).
        let mut out = self.buffer_overwritten(shape.numel());
        layout::expand(
            self.val(x).data(),
            bcast,
            shape.rows(),
            shape.cols(),
            &mut out,
        );
        self.push(Op::Expand(bcast), &[x], Tensor::raw(shape, out))
    }
}

/// Backward of the reductions (an expand) and of expand (a reduction).
pub(crate) fn backward<T: Real>(
    tape: &mut Tape<T>,
    op: &Op<T>,
    x: Var,
    g: Var,
) -> Result<Var, CoreError> {
    let xs = tape.val(x).dims();
    Ok(match op {
        Op::SumAll => tape.expand(g, Broadcast::Scalar, xs),
        Op::SumRows => tape.expand(g, Broadcast::Col, xs),
        Op::SumCols => tape.expand(g, Broadcast::Row, xs),
        Op::Expand(bcast) => {
            let r = match bcast {
                Broadcast::Same => g,
                Broadcast::Scalar => tape.sum(g)?,
                Broadcast::Row => tape.sum_cols(g)?,
                Broadcast::Col => tape.sum_rows(g)?,
            };
            tape.reshape(r, xs.dims())?
        }
        _ => unreachable!("reduce::backward called for {op:?}"),
    })
}

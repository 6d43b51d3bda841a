//! Softmax over the last axis.

use readout_kernels::elementwise::{Binary, Broadcast};
use readout_kernels::rows::softmax_rows;

use crate::op::Op;
use crate::{CoreError, Real, Tape, Tensor, Var};

impl<T: Real> Tape<T> {
    /// Softmax over the last axis (max-subtracted, so large inputs do not overflow).
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar.
    pub fn softmax(&mut self, x: Var) -> Result<Var, CoreError> {
        let t = self.check("softmax", x)?;
        let s = t.dims();
        if s.rank() == 0 {
            return Err(CoreError::bad_rank("softmax", "x", s, "rank 1 to 3"));
        }
        let mut out = self.buffer_overwritten(s.numel());
        softmax_rows(t.data(), s.cols(), &mut out);
        Ok(self.push(Op::Softmax, &[x], Tensor::raw(s, out)))
    }
}

/// `dx = y · (g − Σ_c g·y)`, the sum taken per row, in tape ops on the output `y`.
pub(crate) fn backward<T: Real>(tape: &mut Tape<T>, y: Var, g: Var) -> Result<Var, CoreError> {
    let gy = tape.binary_bc(Binary::Mul, Broadcast::Same, g, y);
    let s = tape.sum_rows(gy)?;
    let centred = tape.binary_bc(Binary::Sub, Broadcast::Col, g, s);
    Ok(tape.binary_bc(Binary::Mul, Broadcast::Same, y, centred))
}

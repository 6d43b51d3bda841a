//! Layer normalisation over the last axis, PyTorch's definition.

use alloc::vec;

use readout_kernels::elementwise::{Binary, Broadcast, Unary};
use readout_kernels::rows::{layer_norm_backward_rows, layer_norm_rows};

use crate::op::{Contributions, Op};
use crate::tape::Parents;
use crate::{CoreError, Real, Shape, Tape, Tensor, Var};

impl<T: Real> Tape<T> {
    /// `(x − mean) / √(var + eps) · weight + bias` over the last axis, with the biased
    /// variance, as `torch.nn.LayerNorm` (whose default `eps` is `1e-5`). `weight` and
    /// `bias` hold one value per column; pass `None` for no affine part.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar `x`, [`CoreError::ShapeMismatch`] when
    /// `weight` or `bias` is not `[C]`, [`CoreError::InvalidValue`] for a negative or
    /// non-finite `eps`.
    pub fn layer_norm(
        &mut self,
        x: Var,
        affine: Option<(Var, Var)>,
        eps: T,
    ) -> Result<Var, CoreError> {
        const OP: &str = "layer_norm";
        let s = self.check(OP, x)?.dims();
        if s.rank() == 0 {
            return Err(CoreError::bad_rank(OP, "x", s, "rank 1 to 3"));
        }
        if !(eps >= T::ZERO && eps.is_finite()) {
            return Err(CoreError::InvalidValue {
                op: OP,
                arg: "eps",
                value: eps.to_f64(),
                why: "must be finite and ≥ 0",
            });
        }
        if let Some((w, b)) = affine {
            for (arg, v) in [("weight", w), ("bias", b)] {
                let vs = self.check(OP, v)?.dims();
                if vs != Shape::d1(s.cols()) {
                    return Err(CoreError::ShapeMismatch {
                        op: OP,
                        arg,
                        got: vs,
                        other: s,
                        why: "must be [C], one value per column of x",
                    });
                }
            }
        }
        let rows = s.rows();
        let mut out = self.buffer_overwritten(s.numel());
        let (mut mean, mut rstd) = (vec![T::ZERO; rows], vec![T::ZERO; rows]);
        let wb = affine.map(|(w, b)| (self.val(w).data(), self.val(b).data()));
        layer_norm_rows(
            self.val(x).data(),
            s.cols(),
            eps,
            wb,
            &mut out,
            (&mut mean, &mut rstd),
        );
        let value = Tensor::raw(s, out);
        Ok(match affine {
            Some((w, b)) => self.push(Op::LayerNorm { eps, affine: true }, &[x, w, b], value),
            None => self.push(Op::LayerNorm { eps, affine: false }, &[x], value),
        })
    }
}

/// Backward of layer norm. With `ĝ = g·weight` and `x̂ = (x − mean)·rstd`:
/// `dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))`, `dweight = Σ_rows g·x̂`, `dbias = Σ_rows g`.
///
/// When recording, `x̂` and `rstd` are recomputed from `x` in tape ops so the rule
/// is itself differentiable; when not, the fused kernel computes `dx` directly.
pub(crate) fn backward<T: Real>(
    tape: &mut Tape<T>,
    ps: &Parents,
    eps: T,
    affine: bool,
    needs: [bool; 3],
    g: Var,
) -> Result<Contributions, CoreError> {
    let x = ps.at(0);
    let ghat = if affine {
        tape.binary_bc(Binary::Mul, Broadcast::Row, g, ps.at(1))
    } else {
        g
    };
    let (xhat, rstd) = normalized(tape, x, eps)?;
    let dx = if !needs[0] {
        None
    } else if tape.is_recording() {
        let mg = tape.mean_rows(ghat)?;
        let gx = tape.binary_bc(Binary::Mul, Broadcast::Same, ghat, xhat);
        let mgx = tape.mean_rows(gx)?;
        let t = tape.binary_bc(Binary::Mul, Broadcast::Col, xhat, mgx);
        let d = tape.binary_bc(Binary::Sub, Broadcast::Col, ghat, mg);
        let d = tape.binary_bc(Binary::Sub, Broadcast::Same, d, t);
        Some(tape.binary_bc(Binary::Mul, Broadcast::Col, d, rstd))
    } else {
        let s = tape.val(x).dims();
        let mut out = tape.buffer_overwritten(s.numel());
        layer_norm_backward_rows(
            tape.val(xhat).data(),
            tape.val(ghat).data(),
            tape.val(rstd).data(),
            &mut out,
        );
        Some(tape.constant(Tensor::raw(s, out)))
    };
    if !affine {
        return Ok([dx, None, None]);
    }
    let dw = if needs[1] {
        let gx = tape.binary_bc(Binary::Mul, Broadcast::Same, g, xhat);
        Some(tape.sum_cols(gx)?)
    } else {
        None
    };
    let db = if needs[2] {
        Some(tape.sum_cols(g)?)
    } else {
        None
    };
    Ok([dx, dw, db])
}

/// `x̂ = (x − mean)·rstd` and `rstd = (var + eps)^(−1/2)` per row, in tape ops.
fn normalized<T: Real>(tape: &mut Tape<T>, x: Var, eps: T) -> Result<(Var, Var), CoreError> {
    let mean = tape.mean_rows(x)?;
    let xc = tape.binary_bc(Binary::Sub, Broadcast::Col, x, mean);
    // Re-centred with the mean of the residue: the row mean is rounded (by up to half an
    // ulp of |mean|), which leaves Σ x̂ ≠ 0 where the spread is small next to |mean|,
    // and the backward's terms (rstd² in a second-order pass) cancel only for Σ x̂ = 0
    // (fuzz finding O1, core/tests/layer_norm_precision.rs).
    let residue = tape.mean_rows(xc)?;
    let xc = tape.binary_bc(Binary::Sub, Broadcast::Col, xc, residue);
    let sq = tape.map(Unary::Square, xc);
    let var = tape.mean_rows(sq)?;
    let ve = tape.map(Unary::AddScalar(eps), var);
    // 1/√v rather than v^(−1/2): both are exact-rounding SIMD kernels, `powf` is a
    // scalar loop.
    let sd = tape.map(Unary::Sqrt, ve);
    let rstd = tape.map(Unary::Recip, sd);
    let xhat = tape.binary_bc(Binary::Mul, Broadcast::Col, xc, rstd);
    Ok((xhat, rstd))
}

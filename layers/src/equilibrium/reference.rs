//! The reference path: PyG's inner loop recorded on the tape (`create_graph = True`),
//! PyG's equations in PyG's order. Any order of derivative goes through it; the fused
//! engines are held to it by the tests.
//!
//! ```text
//! reg(y)    = softplus(lamb) · mean_s ‖y_s‖²
//! energy(y) = potential(x, y, index) + reg(y)           potential: Σ_s mean_{i∈s} F
//! MomentumOptimizer.forward, from y = 0, m = 0, `grad_iter` times:
//!     grad = ∂energy/∂y                                 (recorded)
//!     delta = softplus(_lr) · grad
//!     m = sigmoid(_mom) · m − delta
//!     y = y + m
//! ```

use readout_core::{Real, Shape, Tape, Tensor, Var};

use super::params::{EquilibriumParams, Sizes};
use super::potential::HoistedInput;
use crate::error::LayerError;
use crate::segments::Layout;

impl EquilibriumParams<Var> {
    /// PyG's `reg(y)`: `softplus(lamb) · mean_s ‖y_s‖²`, with `softplus(lamb)` given.
    fn reg<T: Real>(tape: &mut Tape<T>, reg_weight: Var, y: Var) -> Result<Var, LayerError> {
        let y2 = tape.square(y)?;
        let norms = tape.sum_rows(y2)?;
        let mean_norm = tape.mean(norms)?;
        Ok(tape.mul(mean_norm, reg_weight)?)
    }

    /// PyG's `energy(x, y, index)`: `Σ_sets mean_{i ∈ set} F(x_i, y_set) + reg(y)`.
    fn energy<T: Real>(
        &self,
        tape: &mut Tape<T>,
        inp: &HoistedInput,
        reg_weight: Var,
        y: Var,
        layout: &Layout,
    ) -> Result<Var, LayerError> {
        let f = self.potential.forward(tape, inp, y, layout)?;
        // scatter(h, index, reduce='mean').sum()
        let per_set = layout.mean(tape, f)?;
        let potential = tape.sum(per_set)?;
        if layout.dim_size() == 0 {
            // No set, no regulariser: its mean over zero sets would be 0/0, a NaN energy
            // whose recorded gradient turns the gradients of `lamb` into NaN (0·∞).
            return Ok(potential);
        }
        let reg = Self::reg(tape, reg_weight, y)?;
        Ok(tape.add(potential, reg)?)
    }

    /// PyG's `optimizer(x, init_output(index), index, energy, grad_iter)`, every step
    /// recorded: the output `y`, `[dim_size, out_channels]`.
    pub(crate) fn record<T: Real>(
        &self,
        tape: &mut Tape<T>,
        sizes: &Sizes,
        grad_iter: usize,
        x: Var,
        layout: &Layout,
    ) -> Result<Var, LayerError> {
        let inp = self.potential.hoist(tape, x, sizes.cin)?;
        let reg_weight = tape.softplus(self.lamb)?;
        let lr = tape.softplus(self.optimizer.lr)?;
        let mom = tape.sigmoid(self.optimizer.mom)?;
        let zeros = Tensor::filled(Shape::d2(layout.dim_size(), sizes.cout), T::ZERO);
        let mut y = tape.variable(zeros);
        let mut momentum: Option<Var> = None;
        for _ in 0..grad_iter {
            let e = self.energy(tape, &inp, reg_weight, y, layout)?;
            let g = tape.grad(e, None, &[y], true)?[0];
            let delta = tape.mul(g, lr)?;
            let m = match momentum {
                // m_0 = 0, so the first step is −delta (PyG computes sigmoid(μ)·0 − delta).
                None => tape.neg(delta)?,
                Some(prev) => {
                    let decayed = tape.mul(prev, mom)?;
                    tape.sub(decayed, delta)?
                }
            };
            y = tape.add(y, m)?;
            momentum = Some(m);
        }
        Ok(y)
    }
}

//! PyG's `ResNetPotential` and the energy the inner loop minimises, on a tape, with
//! the `x` part of every linear map of `[x, y[index]]` hoisted out of the loop.
//!
//! Every linear layer that reads the raw input `inp = [x, y[index]]` (the first block
//! and every `res_trans` skip) splits its weight by columns, `W = [W_x | W_y]`, so
//! `inp·Wᵀ + b = (x·W_xᵀ + b) + (y·W_yᵀ)[index]`. The first term does not change
//! during the inner optimisation and is computed once per forward; the second runs on
//! `dim_size` rows, not `N`.

use alloc::vec::Vec;

use readout_core::{Real, Tape, Var};

use super::ParamIndex;
use crate::error::LayerError;
use crate::param::Bound;
use crate::segments::Layout;

/// PyTorch's `LayerNorm` default epsilon.
const LAYER_NORM_EPS: f64 = 1e-5;

/// One linear map of the raw input, split for hoisting.
struct InputLinear {
    /// `x·W_xᵀ + b`, `[N, out]`, computed once.
    x_part: Var,
    /// `W_y`, `[out, out_channels]`.
    w_y: Var,
}

/// What the energy needs that does not depend on `y`.
pub(crate) struct Hoisted {
    /// The first block's linear (or the only linear when there are no hidden layers).
    first: InputLinear,
    /// One per `res_trans` linear.
    res: Vec<InputLinear>,
    /// `softplus(lamb)`, the regulariser's weight.
    reg_weight: Var,
}

fn input_linear<T: Real>(
    tape: &mut Tape<T>,
    x: Var,
    w: Var,
    b: Var,
    in_channels: usize,
    out_channels: usize,
) -> Result<InputLinear, LayerError> {
    let w_x = tape.slice_cols(w, 0, in_channels)?;
    let w_y = tape.slice_cols(w, in_channels, out_channels)?;
    let xw = tape.matmul_with(x, w_x, false, true)?;
    let x_part = tape.add(xw, b)?;
    Ok(InputLinear { x_part, w_y })
}

impl InputLinear {
    /// `inp·Wᵀ + b` for the current `y`.
    fn apply<T: Real>(
        &self,
        tape: &mut Tape<T>,
        y: Var,
        layout: &Layout,
    ) -> Result<Var, LayerError> {
        let yw = tape.matmul_with(y, self.w_y, false, true)?;
        let spread = layout.spread(tape, yw)?;
        Ok(tape.add(self.x_part, spread)?)
    }
}

/// Computes the `y`-independent parts once per forward.
pub(crate) fn hoist<T: Real>(
    tape: &mut Tape<T>,
    idx: &ParamIndex,
    p: &Bound,
    x: Var,
) -> Result<Hoisted, LayerError> {
    let (cin, cout) = (idx.in_channels, idx.out_channels);
    let (w0, b0) = idx.first_linear();
    let first = input_linear(tape, x, p.var(w0), p.var(b0), cin, cout)?;
    let mut res = Vec::with_capacity(idx.hidden.len() + 1);
    for j in 0..=idx.hidden.len() {
        let (w, b) = idx.res_trans(j);
        res.push(input_linear(tape, x, p.var(w), p.var(b), cin, cout)?);
    }
    let reg_weight = tape.softplus(p.var(idx.lamb()))?;
    Ok(Hoisted {
        first,
        res,
        reg_weight,
    })
}

/// `E(y) = Σ_sets mean_{i ∈ set} F(x_i, y_set) + softplus(lamb)·mean_sets ‖y_set‖²`.
pub(crate) fn energy<T: Real>(
    tape: &mut Tape<T>,
    idx: &ParamIndex,
    p: &Bound,
    h: &Hoisted,
    y: Var,
    layout: &Layout,
) -> Result<Var, LayerError> {
    let f = potential(tape, idx, p, h, y, layout)?;
    let per_set = layout.mean(tape, f)?;
    let potential = tape.sum(per_set)?;
    if layout.dim_size() == 0 {
        // No set, no regulariser: its mean over zero sets would be 0/0, a NaN energy
        // whose recorded gradient turns the gradients of `lamb` into NaN (0·∞).
        return Ok(potential);
    }

    let y2 = tape.square(y)?;
    let norms = tape.sum_rows(y2)?;
    let mean_norm = tape.mean(norms)?;
    let reg = tape.mul(mean_norm, h.reg_weight)?;
    Ok(tape.add(potential, reg)?)
}

/// `F(x_i, y_{set(i)})` for every element: `[N, 1]`.
pub(crate) fn potential<T: Real>(
    tape: &mut Tape<T>,
    idx: &ParamIndex,
    p: &Bound,
    h: &Hoisted,
    y: Var,
    layout: &Layout,
) -> Result<Var, LayerError> {
    let eps = T::from_f64(LAYER_NORM_EPS);
    let mut z = h.first.apply(tape, y, layout)?;
    for i in 0..idx.hidden.len() {
        if i > 0 {
            let (w, b) = idx.block_linear(i);
            let zw = tape.matmul_with(z, p.var(w), false, true)?;
            z = tape.add(zw, p.var(b))?;
        }
        let (lw, lb) = idx.block_norm(i);
        z = tape.layer_norm(z, Some((p.var(lw), p.var(lb))), eps)?;
        z = tape.tanh(z)?;
        let skip = h.res[i].apply(tape, y, layout)?;
        z = tape.add(skip, z)?;
    }
    if !idx.hidden.is_empty() {
        let (w, b) = idx.last_linear();
        let zw = tape.matmul_with(z, p.var(w), false, true)?;
        z = tape.add(zw, p.var(b))?;
    }
    let skip = h.res[idx.hidden.len()].apply(tape, y, layout)?;
    Ok(tape.add(skip, z)?)
}

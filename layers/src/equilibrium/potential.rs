//! PyG's `ResNetPotential.forward` on a tape, with the `x` part of every linear map of
//! `inp = [x, y[index]]` hoisted out of the inner loop.
//!
//! PyG:
//!
//! ```text
//! inp = cat([x, y[index]], dim=1)
//! h = inp
//! for layer, res in zip(self.layers, self.res_trans):
//!     h = layer(h)                 # Sequential(Linear, LayerNorm, Tanh), the last a Linear
//!     h = res(inp) + h
//! ```
//!
//! Every linear map that reads `inp` (the first layer's and every `res_trans`) splits
//! its weight by columns, `W = [W_x | W_y]`, so
//! `inp·Wᵀ + b = (x·W_xᵀ + b) + (y·W_yᵀ)[index]`. The first term does not change during
//! the inner optimisation and is computed once per forward ([`ResNetPotential::hoist`]);
//! the second runs on `dim_size` rows, not `N`. Everything else is PyG's order of ops.

use alloc::vec::Vec;

use readout_core::{Real, Tape, Var};

use super::params::{Block, ResNetPotential};
use crate::error::LayerError;
use crate::module::Linear;
use crate::segments::Layout;

/// One linear map of `inp = [x, y[index]]`, split for hoisting.
struct InputLinear {
    /// `x·W_xᵀ + b`, `[N, out]`, computed once.
    x_part: Var,
    /// `W_y`, `[out, out_channels]`.
    w_y: Var,
}

impl InputLinear {
    /// Splits `linear` (which reads `[x, y]`, `x` of width `cin`) and computes its `x`
    /// part.
    fn hoist<T: Real>(
        tape: &mut Tape<T>,
        linear: &Linear<Var>,
        x: Var,
        cin: usize,
    ) -> Result<Self, LayerError> {
        let inp = tape.value(linear.weight)?.shape()[1];
        let w_x = tape.slice_cols(linear.weight, 0, cin)?;
        let w_y = tape.slice_cols(linear.weight, cin, inp - cin)?;
        let x_part = Linear {
            weight: w_x,
            bias: linear.bias,
        }
        .forward(tape, x)?;
        Ok(InputLinear { x_part, w_y })
    }

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

/// The `x` parts of the maps that read `inp`, computed once per forward.
pub(crate) struct HoistedInput {
    /// The first layer's linear (the final one when there is no hidden layer).
    first: InputLinear,
    /// One per `res_trans` linear.
    res: Vec<InputLinear>,
}

impl Block<Var> {
    /// `Sequential(Linear, LayerNorm, Tanh)` after the linear: `tanh(LayerNorm(z))`.
    fn norm_tanh<T: Real>(&self, tape: &mut Tape<T>, z: Var) -> Result<Var, LayerError> {
        let z = self.norm.forward(tape, z)?;
        Ok(tape.tanh(z)?)
    }
}

impl ResNetPotential<Var> {
    /// Computes the `y`-independent parts once per forward (`x [N, cin]`).
    pub(crate) fn hoist<T: Real>(
        &self,
        tape: &mut Tape<T>,
        x: Var,
        cin: usize,
    ) -> Result<HoistedInput, LayerError> {
        let first = InputLinear::hoist(tape, self.input_linear(), x, cin)?;
        let res = self
            .res_trans
            .iter()
            .map(|r| InputLinear::hoist(tape, r, x, cin))
            .collect::<Result<_, _>>()?;
        Ok(HoistedInput { first, res })
    }

    /// `h` after the last layer: `F(x_i, y_{set(i)})` for every element, `[N, 1]`.
    pub(crate) fn forward<T: Real>(
        &self,
        tape: &mut Tape<T>,
        inp: &HoistedInput,
        y: Var,
        layout: &Layout,
    ) -> Result<Var, LayerError> {
        // h = inp: the first layer's linear reads it through its hoisted split.
        let mut h: Option<Var> = None;
        let layers = self.blocks.len() + 1;
        for (i, res) in inp.res.iter().enumerate().take(layers) {
            // h = layer(h)
            let z = match h {
                None => inp.first.apply(tape, y, layout)?,
                Some(h) if i < self.blocks.len() => self.blocks[i].linear.forward(tape, h)?,
                Some(h) => self.out.forward(tape, h)?,
            };
            let z = match self.blocks.get(i) {
                Some(block) => block.norm_tanh(tape, z)?,
                None => z,
            };
            // h = res(inp) + h
            let skip = res.apply(tape, y, layout)?;
            h = Some(tape.add(skip, z)?);
        }
        h.ok_or_else(|| LayerError::invalid_argument("potential", "no layer", "has none"))
    }
}

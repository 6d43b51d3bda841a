//! PyG's `EquilibriumAggregation`: a set's output is the point an unrolled inner
//! optimisation reaches on a learned energy.
//!
//! For sets `s` of elements `x_i`, with a learned potential `F` and `y₀ = 0`:
//!
//! ```text
//! E(y) = Σ_s mean_{i ∈ s} F(x_i, y_s) + softplus(λ) · mean_s ‖y_s‖²
//! g_t  = ∂E/∂y (y_t)                                    (create_graph = true)
//! m_t  = sigmoid(μ) · m_{t−1} − softplus(η) · g_t,   m_0 = 0
//! y_{t+1} = y_t + m_t                                   t = 0 .. grad_iter − 1
//! ```
//!
//! `F` is PyG's `ResNetPotential` on `inp = [x_i, y_s]`: blocks
//! `h ← tanh(LayerNorm(Linear(h))) + Linear_res(inp)` for each hidden size, then
//! `F = Linear(h → 1) + Linear_res(inp → 1)`. The regulariser's mean runs over all
//! `dim_size` sets, empty ones included; empty sets output zero rows.
//!
//! Parameters (PyG `state_dict` keys, for hidden sizes `h_1 .. h_L`, `c = in + out`):
//! `lamb [1]`; `potential.layers.{i}.0.weight [h_{i+1}, h_i or c]`, `.0.bias`,
//! `potential.layers.{i}.1.weight [h_{i+1}]` (LayerNorm), `.1.bias`;
//! `potential.layers.{L}.weight [1, h_L or c]`, `.bias [1]`;
//! `potential.res_trans.{j}.weight [h_{j+1} or 1, c]`, `.bias`;
//! `optimizer._lr [1]` (η, used as `softplus(η)`), `optimizer._mom [1]` (μ, used as
//! `sigmoid(μ)`).
//!
//! # Three ways to run the inner loop ([`InnerGrad`])
//!
//! | mode | what it is for | memory | outer gradient |
//! | --- | --- | --- | --- |
//! | `Eager` ([`EquilibriumAggregation::forward`]) | inference | one block of elements | none |
//! | `Adjoint` | training | the trajectory and one group of element blocks | PyG's, first order |
//! | `Record` | the reference; higher-order derivatives | grows with `grad_iter × N` | PyG's, any order |
//!
//! All three hoist the `x` part of every linear map of `[x, y[index]]` out of the loop
//! and run the `y` part on `dim_size` rows. `Record` builds exactly PyG's graph on the
//! tape. The tests check that the three agree, and that `Record` and `Adjoint` match
//! PyG's reference cases.

mod adjoint;
mod fused;
mod params;
mod potential;
mod reference;
mod validate;
mod workspace;

use alloc::vec::Vec;

use rand::Rng;
use rand::SeedableRng;
use readout_core::{Real, Shape, Tape, Tensor, Var};

use crate::error::LayerError;
use crate::param::{Bound, Parameters};
use crate::segments::Segments;
use crate::weights::PygWeights;
use params::Sizes;
pub use params::{Block, EquilibriumParams, MomentumOptimizer, ResNetPotential};

/// How the inner gradients `∂E/∂y` are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerGrad {
    /// Recorded (`create_graph = true`), as PyG always does: the output can be
    /// differentiated with respect to every parameter and `x`, through the inner steps.
    Record,
    /// Computed eagerly and the energy's graph freed after each step: the same output,
    /// far less memory and time, but nothing to differentiate afterwards. It computes
    /// with the layer's own parameters, so the bound values must be those (as
    /// [`Parameters::bind`] places them).
    Eager,
    /// Computed eagerly in the forward pass; the output's backward rule reverses the
    /// inner steps with Hessian-vector products from a fused, tape-free engine. Gives
    /// the same gradients as [`InnerGrad::Record`] (first order in the outer loss) with
    /// memory bounded by the trajectory and one group of element blocks; the gradient
    /// cannot itself be differentiated.
    Adjoint,
}

/// PyG's `EquilibriumAggregation(in_channels, out_channels, num_layers, grad_iter, lamb)`.
///
/// ```
/// use readout_layers::{EquilibriumAggregation, Segments};
/// use readout_core::Tensor;
///
/// # fn main() -> Result<(), readout_layers::LayerError> {
/// let layer = EquilibriumAggregation::new(3, 2, &[8, 8], 5, 0.1)?;
/// let x = Tensor::from_vec(&[4, 3], (0..12).map(|v| v as f32 / 10.0).collect())?;
/// // Elements 0 and 2 form set 0, elements 1 and 3 set 1.
/// let y = layer.forward(&x, Segments::Index(&[0, 1, 0, 1]), None)?;
/// assert_eq!(y.shape(), &[2, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EquilibriumAggregation {
    sizes: Sizes,
    grad_iter: usize,
    initial_lamb: f32,
    params: Parameters,
    /// Buffers the fused engines (inference, and the adjoint mode's both passes)
    /// reuse across calls.
    cache: workspace::Cache,
}

impl EquilibriumAggregation {
    /// A layer with PyG's constructor arguments (PyG's defaults: `grad_iter = 5`,
    /// `lamb = 0.1`), initialised as PyG initialises it from a fixed seed; call
    /// [`EquilibriumAggregation::reset_parameters`] for a draw from your own generator.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for `in_channels` or `out_channels` of 0, a
    /// hidden size of 0, a non-finite `lamb`, or a `grad_iter` above
    /// [`crate::limits::MAX_GRAD_ITER`]; [`LayerError::TooLarge`] when a parameter would hold
    /// more than [`crate::limits::MAX_ELEMENTS`] values or all of them more than
    /// [`crate::limits::MAX_PARAMETERS`].
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        num_layers: &[usize],
        grad_iter: usize,
        lamb: f32,
    ) -> Result<Self, LayerError> {
        let sizes = validate::new_args(in_channels, out_channels, num_layers, grad_iter, lamb)?;
        let mut layer = EquilibriumAggregation {
            sizes,
            grad_iter,
            initial_lamb: lamb,
            params: Parameters::default(),
            cache: workspace::Cache::default(),
        };
        layer.reset_parameters(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(0));
        Ok(layer)
    }

    /// Re-draws every parameter as PyG's `reset_parameters` does: linears
    /// `U(−1/√fan_in, 1/√fan_in)`, LayerNorm weight 1 and bias 0, `lamb` back to its
    /// initial value, `optimizer._lr = 0.1`, `optimizer._mom = 0.9`.
    pub fn reset_parameters<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let modules = EquilibriumParams::new(&self.sizes, self.initial_lamb, rng);
        self.params = Parameters::new(modules.into_list());
    }

    /// Size of each input element.
    pub fn in_channels(&self) -> usize {
        self.sizes.cin
    }

    /// Size of each output row.
    pub fn out_channels(&self) -> usize {
        self.sizes.cout
    }

    /// Hidden sizes of the potential.
    pub fn num_layers(&self) -> &[usize] {
        &self.sizes.hidden
    }

    /// Inner optimisation steps.
    pub fn grad_iter(&self) -> usize {
        self.grad_iter
    }

    /// The inference path: the output `[dim_size, out_channels]` for `x [N, in_channels]`,
    /// with eager inner gradients (see [`InnerGrad::Eager`]).
    ///
    /// # Errors
    /// See [`EquilibriumAggregation::forward_on`].
    pub fn forward(
        &self,
        x: &Tensor<f32>,
        segments: Segments<'_>,
        dim_size: Option<usize>,
    ) -> Result<Tensor<f32>, LayerError> {
        // The fused engine straight on the parameters' values: no tape, no copies.
        let layout = validate::input(&self.sizes, x.shape(), segments, dim_size)?;
        let sets = layout.dim_size();
        let y = if sets == 0 {
            Vec::new()
        } else {
            let values = self.values()?;
            let (sizes, iters) = (&self.sizes, self.grad_iter);
            self.cache
                .with(|ws| fused::forward::solve(sizes, &values, iters, x.data(), &layout, ws))
        };
        Ok(Tensor::from_shape(Shape::d2(sets, self.sizes.cout), y)?)
    }

    /// Bytes of the buffers the fused engines keep between calls
    /// ([`EquilibriumAggregation::forward`], and [`InnerGrad::Adjoint`] and
    /// [`InnerGrad::Eager`] on a tape): they reuse them instead of allocating; they are
    /// sized by the largest input seen, and dropped with the layer.
    pub fn workspace_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// The parameters' values in their modules, for the fused engine.
    fn values(&self) -> Result<EquilibriumParams<&[f32]>, LayerError> {
        EquilibriumParams::from_list(&self.sizes, self.params.iter().map(|p| p.value().data()))
    }

    /// The forward pass on a tape, for training or for gradients of `x`: bind the
    /// parameters with [`Parameters::bind`], put `x` on the tape, and differentiate the
    /// returned `[dim_size, out_channels]` output with [`Tape::backward`] (then
    /// [`Parameters::accumulate`]) or [`Tape::grad`].
    ///
    /// With [`InnerGrad::Record`] every inner step is recorded, so the tape grows by
    /// about `grad_iter × (forward + backward of the potential)` nodes.
    ///
    /// # Errors
    /// [`LayerError::WrongShape`] if `x` is not `[N, in_channels]`;
    /// [`LayerError::LengthMismatch`] if `index` does not have `N` entries;
    /// [`LayerError::InvalidArgument`] for a negative `index` or `ptr` entry, a `ptr`
    /// whose last entry is not `N`, or a `dim_size` smaller than `max(index) + 1` or
    /// than the sets `ptr` describes (or 0 for one set holding elements);
    /// [`LayerError::Core`] with [`readout_core::CoreError::BadPtr`] for a `ptr` that
    /// is empty, does not start at 0, or decreases;
    /// [`LayerError::LengthMismatch`] (named `params`) when `params` was bound from
    /// another configuration's parameters;
    /// [`LayerError::TooLarge`] when `N` or the number of sets (`dim_size`,
    /// `max(index) + 1`) times the potential's row width (about
    /// `in + out + 2·h_1 + Σ h_i`) exceeds [`crate::limits::MAX_ELEMENTS`], before anything is
    /// allocated.
    pub fn forward_on<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &Bound,
        x: Var,
        segments: Segments<'_>,
        dim_size: Option<usize>,
        mode: InnerGrad,
    ) -> Result<Var, LayerError> {
        let xs = tape.value(x)?.shape().to_vec();
        let layout = validate::input(&self.sizes, &xs, segments, dim_size)?;
        self.params.check_bound(tape, params)?;
        let sets = layout.dim_size();
        if sets == 0 {
            // No set, nothing to optimise: an empty output that depends on nothing.
            // (Running the loop would take the regulariser's mean over 0 rows, 0/0,
            // and give NaN gradients for an output with no values.)
            let empty = Tensor::filled(Shape::d2(0, self.sizes.cout), T::ZERO);
            return Ok(tape.constant(empty));
        }
        let modules = EquilibriumParams::from_list(&self.sizes, params.vars().iter().copied())?;
        match mode {
            InnerGrad::Record => modules.record(tape, &self.sizes, self.grad_iter, x, &layout),
            InnerGrad::Adjoint => {
                let cache = &self.cache;
                adjoint::forward(
                    tape,
                    &self.sizes,
                    self.grad_iter,
                    &modules,
                    x,
                    &layout,
                    cache,
                )
            }
            InnerGrad::Eager => {
                let xv: Vec<T> = tape.value(x)?.data().to_vec();
                let values = fused::forward::bound_values(tape, &self.sizes, params)?;
                let (sizes, iters) = (&self.sizes, self.grad_iter);
                let y = self
                    .cache
                    .with(|ws| fused::forward::solve(sizes, &values, iters, &xv, &layout, ws));
                Ok(tape.constant(Tensor::from_shape(Shape::d2(sets, self.sizes.cout), y)?))
            }
        }
    }
}

/// PyG weights in and out, through [`PygWeights`].
///
/// In PyG, save with `safetensors.torch.save_file(model.state_dict(), "w.safetensors")`
/// and load ours with `model.load_state_dict(safetensors.torch.load_file("w.safetensors"))`.
///
/// ```
/// use readout_layers::{EquilibriumAggregation, PygWeights, StateDict};
///
/// # fn main() -> Result<(), readout_layers::LayerError> {
/// let trained = EquilibriumAggregation::new(3, 2, &[8], 5, 0.1)?;
/// let bytes = trained.state_dict_bytes()?;
/// let loaded = EquilibriumAggregation::new(3, 2, &[8], 5, 0.1)?
///     .with_state_dict(StateDict::from_bytes(&bytes)?)?;
/// assert_eq!(loaded.parameters(), trained.parameters());
/// # Ok(())
/// # }
/// ```
impl PygWeights for EquilibriumAggregation {
    fn parameters(&self) -> &Parameters {
        &self.params
    }

    fn parameters_mut(&mut self) -> &mut Parameters {
        &mut self.params
    }
}

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
mod eager;
mod fused;
mod potential;
mod workspace;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rand::Rng;
use rand::SeedableRng;
use readout_core::{Real, Shape, Tape, Tensor, Var};

use crate::error::LayerError;
use crate::init;
use crate::limits;
use crate::param::{Bound, Parameter, Parameters};
use crate::segments::{Layout, Segments};
use crate::state_dict::StateDict;
#[cfg(feature = "std")]
use alloc::string::ToString;
#[cfg(feature = "std")]
use std::path::Path;

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

/// Where each parameter sits in the `state_dict` order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParamIndex {
    in_channels: usize,
    out_channels: usize,
    hidden: Vec<usize>,
}

impl ParamIndex {
    fn lamb(&self) -> usize {
        0
    }
    /// Weight and bias of block `i`'s linear (`i ≥ 1`; block 0 is `first_linear`).
    fn block_linear(&self, i: usize) -> (usize, usize) {
        (1 + 4 * i, 2 + 4 * i)
    }
    /// Weight and bias of block `i`'s LayerNorm.
    fn block_norm(&self, i: usize) -> (usize, usize) {
        (3 + 4 * i, 4 + 4 * i)
    }
    /// The linear that reads the raw input first.
    fn first_linear(&self) -> (usize, usize) {
        (1, 2)
    }
    /// The final `Linear(→ 1)`.
    fn last_linear(&self) -> (usize, usize) {
        let l = self.hidden.len();
        (1 + 4 * l, 2 + 4 * l)
    }
    fn res_trans(&self, j: usize) -> (usize, usize) {
        let base = 3 + 4 * self.hidden.len();
        (base + 2 * j, base + 2 * j + 1)
    }
    fn lr(&self) -> usize {
        3 + 4 * self.hidden.len() + 2 * (self.hidden.len() + 1)
    }
    fn mom(&self) -> usize {
        self.lr() + 1
    }

    /// An upper bound on the widest row a forward allocates per element or per set:
    /// the inputs `[x, y]`, the maps that read them (the first block and every
    /// `res_trans`, whose widths add up in the eager engine) and the hidden layers.
    fn row_width(&self) -> usize {
        let first = self.hidden.first().copied().unwrap_or(1);
        let hidden: usize = self.hidden.iter().fold(0usize, |a, &h| a.saturating_add(h));
        (self.in_channels.saturating_add(self.out_channels))
            .saturating_add(first)
            .saturating_add(hidden)
            .saturating_add(1)
    }

    /// Keys and shapes of every parameter, in PyG's `state_dict` order.
    fn layout(&self) -> Vec<(String, Shape)> {
        let c = self.in_channels + self.out_channels;
        let mut v = Vec::new();
        v.push((String::from("lamb"), Shape::d1(1)));
        let mut prev = c;
        for (i, &h) in self.hidden.iter().enumerate() {
            v.push((format!("potential.layers.{i}.0.weight"), Shape::d2(h, prev)));
            v.push((format!("potential.layers.{i}.0.bias"), Shape::d1(h)));
            v.push((format!("potential.layers.{i}.1.weight"), Shape::d1(h)));
            v.push((format!("potential.layers.{i}.1.bias"), Shape::d1(h)));
            prev = h;
        }
        let l = self.hidden.len();
        v.push((format!("potential.layers.{l}.weight"), Shape::d2(1, prev)));
        v.push((format!("potential.layers.{l}.bias"), Shape::d1(1)));
        for (j, &h) in self.hidden.iter().chain(core::iter::once(&1)).enumerate() {
            v.push((format!("potential.res_trans.{j}.weight"), Shape::d2(h, c)));
            v.push((format!("potential.res_trans.{j}.bias"), Shape::d1(h)));
        }
        v.push((String::from("optimizer._lr"), Shape::d1(1)));
        v.push((String::from("optimizer._mom"), Shape::d1(1)));
        v
    }
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
    idx: ParamIndex,
    grad_iter: usize,
    initial_lamb: f32,
    params: Parameters,
    /// Buffers [`EquilibriumAggregation::forward`] reuses across calls.
    cache: workspace::Cache,
}

/// PyG's `MomentumOptimizer` defaults.
const INITIAL_LR: f32 = 0.1;
const INITIAL_MOM: f32 = 0.9;

impl EquilibriumAggregation {
    /// A layer with PyG's constructor arguments (PyG's defaults: `grad_iter = 5`,
    /// `lamb = 0.1`), initialised as PyG initialises it from a fixed seed; call
    /// [`EquilibriumAggregation::reset_parameters`] for a draw from your own generator.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for `in_channels` or `out_channels` of 0, a
    /// hidden size of 0, a non-finite `lamb`, or a `grad_iter` above
    /// [`limits::MAX_GRAD_ITER`]; [`LayerError::TooLarge`] when a parameter would hold
    /// more than [`limits::MAX_ELEMENTS`] values or all of them more than
    /// [`limits::MAX_PARAMETERS`].
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        num_layers: &[usize],
        grad_iter: usize,
        lamb: f32,
    ) -> Result<Self, LayerError> {
        if in_channels == 0 {
            return Err(LayerError::invalid_argument(
                "in_channels",
                0,
                "must be ≥ 1",
            ));
        }
        if out_channels == 0 {
            return Err(LayerError::invalid_argument(
                "out_channels",
                0,
                "must be ≥ 1",
            ));
        }
        if let Some(i) = num_layers.iter().position(|&h| h == 0) {
            return Err(LayerError::invalid_argument(
                "num_layers",
                format!("{num_layers:?}"),
                format!("hidden size {i} is 0"),
            ));
        }
        if !lamb.is_finite() {
            return Err(LayerError::invalid_argument("lamb", lamb, "must be finite"));
        }
        if grad_iter > limits::MAX_GRAD_ITER {
            return Err(LayerError::invalid_argument(
                "grad_iter",
                grad_iter,
                format!(
                    "must be ≤ {} (limits::MAX_GRAD_ITER)",
                    limits::MAX_GRAD_ITER
                ),
            ));
        }
        // Every size is checked before the parameters are allocated.
        limits::elements(
            "in_channels + out_channels",
            &[in_channels.saturating_add(out_channels)],
        )?;
        let idx = ParamIndex {
            in_channels,
            out_channels,
            hidden: num_layers.to_vec(),
        };
        let mut total = 0usize;
        for (name, shape) in idx.layout() {
            total = total.saturating_add(limits::elements(&name, shape.dims())?);
        }
        limits::check("parameters", &[total], limits::MAX_PARAMETERS)?;
        let params = Parameters::new(
            idx.layout()
                .into_iter()
                .map(|(n, s)| Parameter::new(n, Tensor::filled(s, 0.0)))
                .collect(),
        );
        let mut layer = EquilibriumAggregation {
            idx,
            grad_iter,
            initial_lamb: lamb,
            params,
            cache: workspace::Cache::default(),
        };
        layer.reset_parameters(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(0));
        Ok(layer)
    }

    /// Re-draws every parameter as PyG's `reset_parameters` does: linears
    /// `U(−1/√fan_in, 1/√fan_in)`, LayerNorm weight 1 and bias 0, `lamb` back to its
    /// initial value, `optimizer._lr = 0.1`, `optimizer._mom = 0.9`.
    pub fn reset_parameters<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let layout = self.idx.layout();
        for (i, (name, shape)) in layout.into_iter().enumerate() {
            let value = if name == "lamb" {
                Tensor::filled(shape, self.initial_lamb)
            } else if name == "optimizer._lr" {
                Tensor::filled(shape, INITIAL_LR)
            } else if name == "optimizer._mom" {
                Tensor::filled(shape, INITIAL_MOM)
            } else if name.ends_with(".1.weight") {
                Tensor::filled(shape, 1.0)
            } else if name.ends_with(".1.bias") {
                Tensor::filled(shape, 0.0)
            } else if name.ends_with(".weight") {
                let d = shape.dims();
                init::uniform(rng, shape, 1.0 / libm::sqrtf(d[1] as f32))
            } else {
                // A linear's bias: its bound comes from the weight just before it.
                let fan_in = self.params.at(i - 1).value().shape()[1];
                init::uniform(rng, shape, 1.0 / libm::sqrtf(fan_in as f32))
            };
            *self.params.at_mut(i) = Parameter::new(name, value);
        }
    }

    /// Size of each input element.
    pub fn in_channels(&self) -> usize {
        self.idx.in_channels
    }

    /// Size of each output row.
    pub fn out_channels(&self) -> usize {
        self.idx.out_channels
    }

    /// Hidden sizes of the potential.
    pub fn num_layers(&self) -> &[usize] {
        &self.idx.hidden
    }

    /// Inner optimisation steps.
    pub fn grad_iter(&self) -> usize {
        self.grad_iter
    }

    /// The parameters, in PyG's `state_dict` order.
    pub fn parameters(&self) -> &Parameters {
        &self.params
    }

    /// The parameters, mutable (for optimisers and loading weights).
    pub fn parameters_mut(&mut self) -> &mut Parameters {
        &mut self.params
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
        // The eager engine straight on the parameters' values: no tape, no copies.
        let layout = self.layout_of(x.shape(), segments, dim_size)?;
        let sets = layout.dim_size();
        let y = if sets == 0 {
            Vec::new()
        } else {
            let values: Vec<&[f32]> = self.params.iter().map(|p| p.value().data()).collect();
            let (idx, iters) = (&self.idx, self.grad_iter);
            self.cache
                .with(|ws| eager::solve(idx, &values, iters, x.data(), &layout, ws))
        };
        Ok(Tensor::from_shape(
            Shape::d2(sets, self.idx.out_channels),
            y,
        )?)
    }

    /// Bytes of the buffers [`EquilibriumAggregation::forward`] keeps between calls
    /// (it reuses them instead of allocating; they are sized by the largest input
    /// seen, and dropped with the layer).
    pub fn workspace_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Checks `x`'s shape `xs` and the segments, and returns the layout of the sets.
    fn layout_of(
        &self,
        xs: &[usize],
        segments: Segments<'_>,
        dim_size: Option<usize>,
    ) -> Result<Layout, LayerError> {
        if xs.len() != 2 || xs[1] != self.idx.in_channels {
            return Err(LayerError::WrongShape {
                name: "x".into(),
                expected: alloc::vec![xs.first().copied().unwrap_or(0), self.idx.in_channels],
                got: xs.to_vec(),
            });
        }
        let width = self.idx.row_width();
        limits::elements("x rows × row width", &[xs[0], width])?;
        Layout::new(segments, xs[0], dim_size, width)
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
    /// `in + out + 2·h_1 + Σ h_i`) exceeds [`limits::MAX_ELEMENTS`], before anything is
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
        let layout = self.layout_of(&xs, segments, dim_size)?;
        if params.vars().len() != self.params.len() {
            return Err(LayerError::LengthMismatch {
                name: "params".into(),
                expected: self.params.len(),
                got: params.vars().len(),
            });
        }
        let sets = layout.dim_size();
        if sets == 0 {
            // No set, nothing to optimise: an empty output that depends on nothing.
            // (Running the loop would take the regulariser's mean over 0 rows, 0/0,
            // and give NaN gradients for an output with no values.)
            let empty = Tensor::filled(Shape::d2(0, self.idx.out_channels), T::ZERO);
            return Ok(tape.constant(empty));
        }
        if mode == InnerGrad::Adjoint {
            return adjoint::forward(tape, &self.idx, self.grad_iter, params, x, &layout);
        }
        if mode == InnerGrad::Eager {
            let xv: Vec<T> = tape.value(x)?.data().to_vec();
            let values = eager::bound_values(tape, params)?;
            let mut ws = workspace::Workspace::new();
            let y = eager::solve(&self.idx, &values, self.grad_iter, &xv, &layout, &mut ws);
            return Ok(tape.constant(Tensor::from_shape(
                Shape::d2(sets, self.idx.out_channels),
                y,
            )?));
        }
        let hoisted = potential::hoist(tape, &self.idx, params, x)?;
        let lr = tape.softplus(params.var(self.idx.lr()))?;
        let mom = tape.sigmoid(params.var(self.idx.mom()))?;
        let zeros = Tensor::filled(Shape::d2(sets, self.idx.out_channels), T::ZERO);
        let mut y = tape.variable(zeros);
        let mut momentum: Option<Var> = None;
        for _ in 0..self.grad_iter {
            let e = potential::energy(tape, &self.idx, params, &hoisted, y, &layout)?;
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

/// PyG weights in and out (files need the `std` feature; bytes do not).
///
/// In PyG, save with `safetensors.torch.save_file(model.state_dict(), "w.safetensors")`
/// and load ours with `model.load_state_dict(safetensors.torch.load_file("w.safetensors"))`.
///
/// ```
/// use readout_layers::{EquilibriumAggregation, StateDict};
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
impl EquilibriumAggregation {
    /// Replaces every parameter by the tensor of the same PyG `state_dict` key, as
    /// PyG's `load_state_dict` (strict) does. The layer's configuration (channels,
    /// hidden sizes, `grad_iter`) is not in a `state_dict`: build the layer with the
    /// same constructor arguments as the PyG model first.
    ///
    /// All or nothing: every tensor is checked before any parameter changes.
    ///
    /// # Errors
    /// [`LayerError::MissingTensor`], [`LayerError::WrongShape`] or
    /// [`LayerError::UnexpectedTensors`] naming the tensor(s) at fault (a file saved
    /// from a model with other hidden sizes gives one of these). Wrong element types
    /// and non-finite values are refused when the [`StateDict`] is read.
    pub fn load_state_dict(&mut self, state_dict: StateDict) -> Result<(), LayerError> {
        self.params.load(state_dict)
    }

    /// [`load_state_dict`](Self::load_state_dict) in builder form.
    ///
    /// # Errors
    /// As [`load_state_dict`](Self::load_state_dict).
    pub fn with_state_dict(mut self, state_dict: StateDict) -> Result<Self, LayerError> {
        self.load_state_dict(state_dict)?;
        Ok(self)
    }

    /// The parameters as a safetensors buffer in PyG's `state_dict` form (keys, shapes,
    /// `F32`), loadable by `model.load_state_dict(safetensors.torch.load(bytes))`.
    ///
    /// # Errors
    /// [`LayerError::NonFinite`] naming a parameter that holds a NaN or an infinity.
    pub fn state_dict_bytes(&self) -> Result<Vec<u8>, LayerError> {
        self.params.to_bytes()
    }
}

/// PyG weights from and to files (`std` feature).
#[cfg(feature = "std")]
impl EquilibriumAggregation {
    /// Loads a safetensors file saved by PyG's
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    ///
    /// # Errors
    /// [`LayerError::Io`] or [`LayerError::Parse`] for an unreadable file,
    /// [`LayerError::WrongDtype`] for a tensor that is neither `F32` nor `F64`,
    /// [`LayerError::NonFinite`] for a NaN or an infinity, then as
    /// [`load_state_dict`](Self::load_state_dict). Each names the tensor at fault.
    pub fn load_state_dict_file(&mut self, path: impl AsRef<Path>) -> Result<(), LayerError> {
        self.load_state_dict(StateDict::from_file(path)?)
    }

    /// Writes [`state_dict_bytes`](Self::state_dict_bytes) to a file, loadable by
    /// `model.load_state_dict(safetensors.torch.load_file(path))`.
    ///
    /// # Errors
    /// As [`state_dict_bytes`](Self::state_dict_bytes); [`LayerError::Io`] when the
    /// file cannot be written.
    pub fn save_state_dict(&self, path: impl AsRef<Path>) -> Result<(), LayerError> {
        let path = path.as_ref();
        std::fs::write(path, self.state_dict_bytes()?).map_err(|e| LayerError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

//! PyG's `MemPooling` (memory-based pooling, Khasahmadi et al., "Memory-Based Graph
//! Networks", ICLR 2020): soft cluster assignments of a graph's nodes to `K` learned
//! keys, and the pooled `K` rows.
//!
//! For node features `x_i ∈ ℝ^F` of one graph, keys `k_j^(h)` (head `h = 1..H`,
//! cluster `j = 1..K`) and temperature `τ`:
//!
//! ```text
//! S_ij^(h) = (1 + ‖x_i − k_j^(h)‖² / τ)^(−(1+τ)/2)  /  Σ_k (1 + ‖x_i − k_k^(h)‖² / τ)^(−(1+τ)/2)
//! S        = softmax_j( Σ_h w_h · S^(h) )             (a 1×1 Conv2d over the heads, no bias)
//! S        = S · mask                                  (padded / masked rows are 0)
//! X'       = (Sᵀ · X) · Wᵀ   ∈ ℝ^{K × F'}              (a Linear without bias)
//! ```
//!
//! computed per graph of a batch: `out [B, K, F']` and `S [B, N_max, K]`, exactly as
//! PyG's `MemPooling.forward` computes them (squared distances in cdist's matrix form
//! `‖x‖² + ‖k‖² − 2·x·kᵀ` clamped at 0, normalisation over the clusters of each head,
//! the head mix, softmax over clusters, *then* the mask, then `Sᵀ·X`, then `lin`).
//!
//! Parameters (PyG `state_dict` keys, in PyG's order):
//! - `k` `[H, K, F]`, initialised `U(−1, 1)`;
//! - `conv.weight`: the head weights `w`, PyG shape `[1, H, 1, 1]` (held here as `[H]`,
//!   same values; [`MemPooling::pyg_shape`] gives the shape to save under), initialised
//!   as `Conv2d`'s default `U(−1/√H, 1/√H)`;
//! - `lin.weight` `[F', F]`, initialised as `Linear`'s default `U(−1/√F, 1/√F)`.
//!
//! `τ` is a constructor argument, not a parameter (PyG's default 1).
//!
//! # Ragged and dense paths
//!
//! PyG pads every graph to `N_max` nodes (`to_dense_batch`) and computes on all
//! `B × N_max` rows. Here that is [`PoolPath::Dense`]. The default, [`PoolPath::Ragged`],
//! computes the per-node part (distances, kernel, normalisation, head mix, softmax) on
//! the real rows only and `Sᵀ·X` as a segmented product over the graphs
//! ([`readout_core::Tape::segment_matmul_tn`]); only the returned `S` is scattered into
//! PyG's padded `[B, N_max, K]` shape, and [`Pooled::s_nodes`] gives it without padding.
//! Both paths give the same numbers (up to rounding) and the same gradients.
//!
//! For training, the ragged path records two fused nodes (the soft assignment `S`, and
//! `out` from it), whose backward passes recompute per block of rows what they need
//! instead of keeping a dozen `[N, H·K]` tensors on the tape; the derivation is in
//! the `fused::backward` module. Their gradients are first-order only:
//! [`PoolPath::RaggedTape`] records the same computation op by op, for second-order
//! derivatives and as the reference the fused nodes are tested against.
//!
//! # Differences from PyG 2.8.1
//! - [`MemPooling::kl_loss`]: PyG returns NaN for a batch holding a graph with no valid
//!   node (an all-false mask row, or trailing empty graphs from `batch_size`): it divides
//!   that graph's `S²` by its column sums, which are 0. Here such column sums are
//!   replaced by 1, the limit in which the empty graph contributes 0 to the loss. Every
//!   other batch gets PyG's value.
//! - Bad input is an error, where PyG silently ignores it or fails deep inside torch: a
//!   `mask` with `[N, F]` input (PyG ignores it), `batch` / `max_num_nodes` /
//!   `batch_size` with dense `[B, N, F]` input (PyG ignores them), an unsorted `batch`
//!   (PyG gives garbage), negative entries, wrong lengths and shapes.
//! - With `batch = None`, `batch_size` is honoured (one graph of every node, then empty
//!   graphs); PyG's `to_dense_batch` ignores `batch_size` when both `batch` and
//!   `max_num_nodes` are `None`.

mod fused;
mod kl;
mod plan;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use rand::{Rng, SeedableRng};
use readout_core::{Real, Shape, Tape, Tensor, Var};

use crate::error::LayerError;
use crate::init;
use crate::limits;
use crate::param::{Bound, Parameter, Parameters};
#[cfg(feature = "std")]
use crate::state_dict::StateDict;
#[cfg(feature = "std")]
use alloc::string::{String, ToString};
use plan::{Plan, Widths};
#[cfg(feature = "std")]
use std::path::Path;

/// Clamp of `kl_loss` (PyG's `EPS`).
pub const KL_EPS: f64 = 1e-15;

/// Positions of the parameters in the `state_dict` order.
const K: usize = 0;
const CONV: usize = 1;
const LIN: usize = 2;

/// Which computation [`MemPooling`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolPath {
    /// On the real rows only, with `Sᵀ·X` per graph over CSR segments: the cost follows
    /// the number of real nodes, not `B × N_max`. The default. On a recording tape,
    /// `S` and `out` are two fused nodes whose backward passes recompute per block
    /// what they need, so no `[N, H·K]` tensor is kept; their gradients cannot be
    /// differentiated again (see [`PoolPath::RaggedTape`]).
    #[default]
    Ragged,
    /// PyG's computation: pad to `[B, N_max, F]` (`to_dense_batch`), compute on every
    /// padded row, mask, and a batched `Sᵀ·X`.
    Dense,
    /// [`PoolPath::Ragged`]'s computation recorded op by op on the tape: the reference
    /// the fused training node is tested against, and the ragged path for
    /// second-order derivatives (`create_graph = true`), which the fused node refuses.
    /// It keeps about a dozen `[N, H·K]` tensors on the tape until the backward pass.
    RaggedTape,
}

/// A dense-input mask `[B, N]`: `true` for valid nodes (PyG's `mask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mask<'a> {
    dims: [usize; 2],
    data: &'a [bool],
}

impl<'a> Mask<'a> {
    /// A mask of shape `dims = [B, N]` with its values in row-major order.
    ///
    /// # Errors
    /// [`LayerError::LengthMismatch`] if `data` does not hold `B·N` values.
    pub fn new(dims: [usize; 2], data: &'a [bool]) -> Result<Self, LayerError> {
        let n = dims[0].saturating_mul(dims[1]);
        if data.len() != n {
            return Err(LayerError::LengthMismatch {
                name: "mask".into(),
                expected: n,
                got: data.len(),
            });
        }
        Ok(Mask { dims, data })
    }

    /// `[B, N]`.
    pub fn dims(&self) -> [usize; 2] {
        self.dims
    }

    /// The values, row-major.
    pub fn data(&self) -> &'a [bool] {
        self.data
    }
}

/// The forward call's arguments besides `x` (PyG's `batch`, `mask`, `max_num_nodes`,
/// `batch_size`), and the path to compute it with.
///
/// ```
/// use readout_layers::mem_pool::{PoolArgs, PoolPath};
/// let batch = [0, 0, 1, 1, 1];
/// let args = PoolArgs::new().batch(&batch).batch_size(3).path(PoolPath::Dense);
/// assert_eq!(args.batch_size, Some(3));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolArgs<'a> {
    /// For `[N, F]` input: the graph of each node, sorted (PyG's `batch`); `None` is one
    /// graph.
    pub batch: Option<&'a [i64]>,
    /// For `[B, N, F]` input: the valid nodes; `None` is all valid.
    pub mask: Option<Mask<'a>>,
    /// For `[N, F]` input: the padded node axis `N_max` (default: the largest graph);
    /// nodes beyond it are dropped, as `to_dense_batch` drops them.
    pub max_num_nodes: Option<usize>,
    /// For `[N, F]` input: the number of graphs `B` (default `max(batch) + 1`); more
    /// adds empty graphs at the end.
    pub batch_size: Option<usize>,
    /// The computation (default [`PoolPath::Ragged`]).
    pub path: PoolPath,
}

impl<'a> PoolArgs<'a> {
    /// No batch, no mask, PyG's defaults, the ragged path.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `batch`.
    pub fn batch(mut self, batch: &'a [i64]) -> Self {
        self.batch = Some(batch);
        self
    }

    /// Sets `mask`.
    pub fn mask(mut self, mask: Mask<'a>) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Sets `max_num_nodes`.
    pub fn max_num_nodes(mut self, n: usize) -> Self {
        self.max_num_nodes = Some(n);
        self
    }

    /// Sets `batch_size`.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.batch_size = Some(b);
        self
    }

    /// Sets the path.
    pub fn path(mut self, path: PoolPath) -> Self {
        self.path = path;
        self
    }
}

/// The result of [`MemPooling::forward_on`]: handles on the tape and the batch layout.
#[derive(Clone, Debug)]
pub struct Pooled {
    out: Var,
    /// Padded `S [B, N_max, K]`, once built.
    s: Option<Var>,
    /// `S` on the kept rows `[N_kept, K]` (ragged path).
    s_rows: Option<Var>,
    plan: Plan,
    num_clusters: usize,
    /// Whether `kl_loss` is the fused node ([`PoolPath::Ragged`]) or recorded op by op.
    fused: bool,
}

impl Pooled {
    /// `out [B, K, F']`.
    pub fn out(&self) -> Var {
        self.out
    }

    /// `S [B, N_max, K]`, PyG's padded assignment matrix (zero rows for padding and
    /// masked nodes). On the ragged path the first call scatters the real rows into
    /// place (a recorded op, so `S` stays differentiable); later calls return the
    /// same handle.
    ///
    /// # Errors
    /// [`LayerError::Core`] if the tape no longer holds this result's nodes.
    pub fn s<T: Real>(&mut self, tape: &mut Tape<T>) -> Result<Var, LayerError> {
        if let Some(s) = self.s {
            return Ok(s);
        }
        let rows = self.s_rows.ok_or_else(|| {
            LayerError::invalid_argument("Pooled", "no S", "holds neither S form")
        })?;
        let p = &self.plan;
        let flat = tape.scatter_add(rows, &p.positions, p.padded_rows())?;
        let s = tape.reshape(flat, &[p.batch_size, p.max_nodes, self.num_clusters])?;
        self.s = Some(s);
        Ok(s)
    }

    /// `S` without padding: for `[N, F]` input one row per input node, `[N, K]` (zero
    /// rows for nodes `max_num_nodes` dropped); for dense `[B, N, F]` input one row per
    /// valid node, in row-major order of the mask.
    ///
    /// # Errors
    /// [`LayerError::Core`] if the tape no longer holds this result's nodes.
    pub fn s_nodes<T: Real>(&mut self, tape: &mut Tape<T>) -> Result<Var, LayerError> {
        let rows = match self.s_rows {
            Some(r) => r,
            None => {
                let s = self.s(tape)?;
                let flat = tape.reshape(s, &[self.plan.padded_rows(), self.num_clusters])?;
                tape.gather_rows(flat, &self.plan.positions)?
            }
        };
        match (&self.plan.kept, self.plan.dense_input) {
            (Some(kept), false) => Ok(tape.scatter_add(rows, kept, self.plan.rows)?),
            _ => Ok(rows),
        }
    }

    /// `MemPooling.kl_loss(S)` of this batch (see [`MemPooling::kl_loss_on`]); on the
    /// ragged paths it is computed on the real rows only (padded rows contribute exactly
    /// 0 to PyG's sum, so this is the same value), as one fused node on
    /// [`PoolPath::Ragged`] (first-order gradients only) and op by op on
    /// [`PoolPath::RaggedTape`].
    ///
    /// # Errors
    /// [`LayerError::Core`] if the tape no longer holds this result's nodes.
    pub fn kl_loss<T: Real>(&mut self, tape: &mut Tape<T>) -> Result<Var, LayerError> {
        match self.s_rows {
            Some(rows) if self.fused => Ok(fused::kl::record(tape, rows, &self.plan.ptr)?),
            Some(rows) => kl::ragged(tape, rows, &self.plan.ptr),
            None => {
                let s = self.s(tape)?;
                kl::dense(tape, s)
            }
        }
    }

    /// `B`, the number of graphs.
    pub fn batch_size(&self) -> usize {
        self.plan.batch_size
    }

    /// `N_max`, the padded node axis of `S`.
    pub fn max_num_nodes(&self) -> usize {
        self.plan.max_nodes
    }

    /// CSR boundaries of the real (kept, valid) nodes per graph, `B + 1` entries.
    pub fn ptr(&self) -> &[usize] {
        &self.plan.ptr
    }
}

/// PyG's `MemPooling(in_channels, out_channels, heads, num_clusters, tau)`.
///
/// ```
/// use readout_layers::MemPooling;
/// use readout_layers::mem_pool::PoolArgs;
/// use readout_core::Tensor;
///
/// # fn main() -> Result<(), readout_layers::LayerError> {
/// let pool = MemPooling::new(3, 5, 2, 4, 1.0)?;
/// let x = Tensor::from_vec(&[6, 3], (0..18).map(|v| v as f32 / 10.0).collect())?;
/// // Nodes 0..2 form graph 0, nodes 2..6 graph 1.
/// let batch = [0, 0, 1, 1, 1, 1];
/// let (out, s) = pool.forward(&x, PoolArgs::new().batch(&batch))?;
/// assert_eq!(out.shape(), &[2, 4, 5]);
/// assert_eq!(s.shape(), &[2, 4, 4]);
/// let kl = MemPooling::kl_loss(&s)?;
/// assert!(kl > 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MemPooling {
    in_channels: usize,
    out_channels: usize,
    heads: usize,
    num_clusters: usize,
    tau: f64,
    params: Parameters,
}

impl MemPooling {
    /// A layer with PyG's constructor arguments (PyG's default `tau = 1.0`), initialised
    /// as PyG initialises it, from a fixed seed; call [`MemPooling::reset_parameters`]
    /// for a draw from your own generator.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for `in_channels`, `out_channels`, `heads` or
    /// `num_clusters` of 0, or a `tau` that is not finite and positive;
    /// [`LayerError::TooLarge`] when `k` (`H·K·F`) or `lin.weight` (`F'·F`) would hold
    /// more than [`limits::MAX_ELEMENTS`] values, or `H·K` does.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        heads: usize,
        num_clusters: usize,
        tau: f64,
    ) -> Result<Self, LayerError> {
        for (name, v) in [
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("heads", heads),
            ("num_clusters", num_clusters),
        ] {
            if v == 0 {
                return Err(LayerError::invalid_argument(name, 0, "must be ≥ 1"));
            }
        }
        if !(tau.is_finite() && tau > 0.0) {
            return Err(LayerError::invalid_argument(
                "tau",
                tau,
                "must be finite and > 0",
            ));
        }
        // Every size is checked before the parameters are allocated.
        let keys = limits::elements("k", &[heads, num_clusters, in_channels])?;
        let lin = limits::elements("lin.weight", &[out_channels, in_channels])?;
        limits::elements("heads × num_clusters", &[heads, num_clusters])?;
        limits::check(
            "parameters",
            &[keys.saturating_add(lin).saturating_add(heads)],
            limits::MAX_PARAMETERS,
        )?;
        let shapes = [
            ("k", Shape::d3(heads, num_clusters, in_channels)),
            ("conv.weight", Shape::d1(heads)),
            ("lin.weight", Shape::d2(out_channels, in_channels)),
        ];
        let params = Parameters::new(
            shapes
                .into_iter()
                .map(|(n, s)| Parameter::new(n, Tensor::filled(s, 0.0)))
                .collect(),
        );
        let mut layer = MemPooling {
            in_channels,
            out_channels,
            heads,
            num_clusters,
            tau,
            params,
        };
        layer.reset_parameters(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(0));
        Ok(layer)
    }

    /// Re-draws every parameter as PyG's `reset_parameters` does, in its order:
    /// `k ~ U(−1, 1)`, `conv.weight ~ U(−1/√H, 1/√H)` (`Conv2d`'s kaiming-uniform with
    /// `a = √5`, fan-in `H·1·1`), `lin.weight ~ U(−1/√F, 1/√F)`.
    pub fn reset_parameters<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let (h, k, f, o) = (
            self.heads,
            self.num_clusters,
            self.in_channels,
            self.out_channels,
        );
        let keys = init::uniform(rng, Shape::d3(h, k, f), 1.0);
        let conv = init::uniform(rng, Shape::d1(h), 1.0 / libm::sqrtf(h as f32));
        let lin = init::uniform(rng, Shape::d2(o, f), 1.0 / libm::sqrtf(f as f32));
        *self.params.at_mut(K) = Parameter::new("k", keys);
        *self.params.at_mut(CONV) = Parameter::new("conv.weight", conv);
        *self.params.at_mut(LIN) = Parameter::new("lin.weight", lin);
    }

    /// `F`, the size of each input node.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// `F'`, the size of each pooled row.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// `H`, the number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// `K`, the number of clusters.
    pub fn num_clusters(&self) -> usize {
        self.num_clusters
    }

    /// `τ`, the Student-t kernel's temperature.
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// The parameters in PyG's `state_dict` order: `k`, `conv.weight`, `lin.weight`.
    pub fn parameters(&self) -> &Parameters {
        &self.params
    }

    /// The parameters, mutable (for optimisers and loading weights).
    pub fn parameters_mut(&mut self) -> &mut Parameters {
        &mut self.params
    }

    /// The shape PyG gives parameter `key` in its `state_dict` (`conv.weight` is
    /// `[1, H, 1, 1]` there and `[H]` here); `None` for a key the layer does not have.
    pub fn pyg_shape(&self, key: &str) -> Option<Vec<usize>> {
        match key {
            "k" => Some(vec![self.heads, self.num_clusters, self.in_channels]),
            "conv.weight" => Some(vec![1, self.heads, 1, 1]),
            "lin.weight" => Some(vec![self.out_channels, self.in_channels]),
            _ => None,
        }
    }

    /// The inference path: `(out [B, K, F'], S [B, N_max, K])` for node features
    /// `x [N, F]` (with `args.batch`, `max_num_nodes`, `batch_size`) or dense
    /// `x [B, N, F]` (with `args.mask`), as PyG's `forward` returns them.
    ///
    /// On [`PoolPath::Ragged`] (the default) this runs a fused engine with no tape;
    /// [`PoolPath::Dense`] runs PyG's padded computation on a tape.
    ///
    /// # Errors
    /// See [`MemPooling::forward_on`].
    pub fn forward(
        &self,
        x: &Tensor<f32>,
        args: PoolArgs<'_>,
    ) -> Result<(Tensor<f32>, Tensor<f32>), LayerError> {
        if args.path != PoolPath::Ragged {
            let (mut tape, mut pooled) = self.infer_on_tape(x, args)?;
            let s = pooled.s(&mut tape)?;
            return Ok((tape.value(pooled.out())?.clone(), tape.value(s)?.clone()));
        }
        let (plan, fused) = self.infer(x, self.weights(), args)?;
        let k = self.num_clusters;
        // The real rows scattered straight into PyG's padded S.
        let mut s = vec![0.0f32; plan.padded_rows() * k];
        for (row, &at) in fused.s_rows.chunks_exact(k).zip(&plan.positions) {
            s[at * k..(at + 1) * k].copy_from_slice(row);
        }
        Ok((
            self.out_tensor(&plan, fused.out)?,
            Tensor::from_vec(&[plan.batch_size, plan.max_nodes, k], s)?,
        ))
    }

    /// The inference path without padding: `(out [B, K, F'], S)` with `S` as
    /// [`Pooled::s_nodes`] gives it (`[N, K]` for `[N, F]` input).
    ///
    /// # Errors
    /// See [`MemPooling::forward_on`].
    pub fn forward_ragged(
        &self,
        x: &Tensor<f32>,
        args: PoolArgs<'_>,
    ) -> Result<(Tensor<f32>, Tensor<f32>), LayerError> {
        if args.path != PoolPath::Ragged {
            let (mut tape, mut pooled) = self.infer_on_tape(x, args)?;
            let s = pooled.s_nodes(&mut tape)?;
            return Ok((tape.value(pooled.out())?.clone(), tape.value(s)?.clone()));
        }
        let (plan, fused) = self.infer(x, self.weights(), args)?;
        let s = self.s_nodes_tensor(&plan, fused.s_rows)?;
        Ok((self.out_tensor(&plan, fused.out)?, s))
    }

    /// The layer's own weights, for the fused engine.
    fn weights(&self) -> [&[f32]; 3] {
        [K, CONV, LIN].map(|i| self.params.at(i).value().data())
    }

    /// The fused ragged forward of `x` with weights `w` (`k`, `conv.weight`,
    /// `lin.weight`, flattened): the layout and the engine's result. Generic so that
    /// the tests can compare it with the tape in `f64`.
    fn infer<T: Real>(
        &self,
        x: &Tensor<T>,
        w: [&[T]; 3],
        args: PoolArgs<'_>,
    ) -> Result<(Plan, fused::Fused<T>), LayerError> {
        let plan = self.plan(x.shape(), args)?;
        let weights = fused::Weights {
            f: self.in_channels,
            o: self.out_channels,
            h: self.heads,
            k: self.num_clusters,
            tau: T::from_f64(self.tau),
            keys: w[0],
            conv: w[1],
            lin: w[2],
        };
        let out = fused::forward(&weights, x.data(), &plan);
        Ok((plan, out))
    }

    /// `out [B, K, F']` from the engine's rows.
    fn out_tensor<T: Real>(&self, plan: &Plan, out: Vec<T>) -> Result<Tensor<T>, LayerError> {
        let dims = [plan.batch_size, self.num_clusters, self.out_channels];
        Ok(Tensor::from_vec(&dims, out)?)
    }

    /// [`Pooled::s_nodes`] from the engine's kept rows: one row per input node for
    /// `[N, F]` input (zero rows for dropped nodes), the kept rows for dense input.
    fn s_nodes_tensor<T: Real>(
        &self,
        plan: &Plan,
        s_rows: Vec<T>,
    ) -> Result<Tensor<T>, LayerError> {
        let k = self.num_clusters;
        let data = match (&plan.kept, plan.dense_input) {
            (Some(kept), false) => {
                let mut all = vec![T::ZERO; plan.rows * k];
                for (row, &at) in s_rows.chunks_exact(k).zip(kept) {
                    all[at * k..(at + 1) * k].copy_from_slice(row);
                }
                all
            }
            _ => s_rows,
        };
        let n = data.len() / k;
        Ok(Tensor::from_vec(&[n, k], data)?)
    }

    /// The forward pass on a non-recording tape with the layer's own parameters (the
    /// inference entry points on [`PoolPath::Dense`]).
    fn infer_on_tape(
        &self,
        x: &Tensor<f32>,
        args: PoolArgs<'_>,
    ) -> Result<(Tape<f32>, Pooled), LayerError> {
        let mut tape = Tape::new();
        tape.set_recording(false);
        let p = self.params.bind(&mut tape, false);
        let xv = tape.constant(x.clone());
        let pooled = self.forward_on(&mut tape, &p, xv, args)?;
        Ok((tape, pooled))
    }

    /// The forward pass on a tape, for training or for gradients of `x`: bind the
    /// parameters with [`Parameters::bind`], put `x` on the tape, then read
    /// [`Pooled::out`], [`Pooled::s`] (PyG's padded `S`), [`Pooled::s_nodes`] and
    /// [`Pooled::kl_loss`], and differentiate any function of them with
    /// [`Tape::backward`] (then [`Parameters::accumulate`]) or [`Tape::grad`].
    ///
    /// # Errors
    /// - [`LayerError::InvalidArgument`] for `x` of rank other than 2 or 3, a `mask`
    ///   with `[N, F]` input, `batch` / `max_num_nodes` / `batch_size` with `[B, N, F]`
    ///   input, a negative or unsorted `batch`, a `batch_size` smaller than
    ///   `max(batch) + 1` or 0, an empty `batch` without `batch_size`, dense input with
    ///   `B = 0`;
    /// - [`LayerError::TooLarge`], before anything is allocated, when `B·K·max(F, F')`
    ///   (the pooled rows), `B·N_max·max(F, H·K)` (the padded rows and `S`) or
    ///   `N·max(F, H·K)` exceeds [`limits::MAX_ELEMENTS`] — e.g. an absurd
    ///   `batch_size`, `max_num_nodes` or `batch` entry;
    /// - [`LayerError::WrongShape`] for `x` whose last dimension is not `in_channels`, a
    ///   mask whose shape is not `[B, N]`, bound parameters of the wrong shape;
    /// - [`LayerError::LengthMismatch`] for a `batch` without one entry per node, or
    ///   `params` that are not this layer's three.
    pub fn forward_on<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &Bound,
        x: Var,
        args: PoolArgs<'_>,
    ) -> Result<Pooled, LayerError> {
        self.check_bound(tape, params)?;
        let xs = tape.value(x)?.shape().to_vec();
        let plan = self.plan(&xs, args)?;
        // The row view: [N, F] or [B·N, F].
        let x_rows = tape.reshape(x, &[plan.rows, self.in_channels])?;
        match args.path {
            PoolPath::Ragged | PoolPath::RaggedTape => {
                self.ragged(tape, params, x_rows, plan, args.path)
            }
            PoolPath::Dense => self.dense(tape, params, x_rows, plan),
        }
    }

    /// The validated layout of `x` (of shape `xs`) and `args`, shared by every path.
    fn plan(&self, xs: &[usize], args: PoolArgs<'_>) -> Result<Plan, LayerError> {
        let f = self.in_channels;
        let plan = match *xs {
            [n, w] => {
                if w != f {
                    return Err(LayerError::WrongShape {
                        name: "x".into(),
                        expected: vec![n, f],
                        got: xs.to_vec(),
                    });
                }
                if let Some(m) = args.mask {
                    return Err(LayerError::invalid_argument(
                        "mask",
                        format!("of shape {:?}", m.dims),
                        "applies to dense [B, N, F] input only; for [N, F] input the valid nodes come from batch",
                    ));
                }
                Plan::nodes(
                    n,
                    args.batch,
                    args.max_num_nodes,
                    args.batch_size,
                    self.widths(),
                )?
            }
            [b, n, w] => {
                if w != f {
                    return Err(LayerError::WrongShape {
                        name: "x".into(),
                        expected: vec![b, n, f],
                        got: xs.to_vec(),
                    });
                }
                for (name, given) in [
                    ("batch", args.batch.is_some()),
                    ("max_num_nodes", args.max_num_nodes.is_some()),
                    ("batch_size", args.batch_size.is_some()),
                ] {
                    if given {
                        return Err(LayerError::invalid_argument(
                            name,
                            "Some(..)",
                            "applies to [N, F] node input only; dense [B, N, F] input is already batched",
                        ));
                    }
                }
                let mask = match args.mask {
                    Some(m) if m.dims != [b, n] => {
                        return Err(LayerError::WrongShape {
                            name: "mask".into(),
                            expected: vec![b, n],
                            got: m.dims.to_vec(),
                        });
                    }
                    Some(m) => Some(m.data),
                    None => None,
                };
                Plan::dense(b, n, mask, self.widths())?
            }
            _ => {
                return Err(LayerError::invalid_argument(
                    "x",
                    format!("shape {xs:?}"),
                    format!("must be [N, {f}] node features or dense [B, N, {f}]"),
                ));
            }
        };
        Ok(plan)
    }

    /// The widest buffers per row and per graph, for the size caps.
    fn widths(&self) -> Widths {
        // Saturating: a product beyond `usize` is refused by the caps all the same.
        Widths {
            row: self
                .in_channels
                .max(self.heads.saturating_mul(self.num_clusters)),
            graph: self
                .num_clusters
                .saturating_mul(self.in_channels.max(self.out_channels)),
        }
    }

    fn check_bound<T: Real>(&self, tape: &Tape<T>, params: &Bound) -> Result<(), LayerError> {
        if params.vars().len() != self.params.len() {
            return Err(LayerError::LengthMismatch {
                name: "params".into(),
                expected: self.params.len(),
                got: params.vars().len(),
            });
        }
        for (p, &v) in self.params.iter().zip(params.vars()) {
            let got = tape.value(v)?.shape();
            if got != p.value().shape() {
                return Err(LayerError::WrongShape {
                    name: p.name().into(),
                    expected: p.value().shape().to_vec(),
                    got: got.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// The soft assignment `softmax(conv(normalised Student-t kernel))` of every row of
    /// `rows [M, F]`: `[M, K]`. Row-wise, so it runs on whichever rows it is given.
    ///
    /// Every op on an `[M, H·K]` tensor costs an allocation and a pass forward and
    /// backward (a reshape too: it copies), so the small `[H·K, ·]` operands take the
    /// rearrangements instead: the `−2` goes on the keys, and the head mix is one
    /// product with `w ⊗ I_K` rather than a transpose of the kernel.
    fn assign<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &Bound,
        rows: Var,
    ) -> Result<Var, LayerError> {
        let (h, k, f) = (self.heads, self.num_clusters, self.in_channels);
        let m = tape.value(rows)?.shape()[0];
        let keys = tape.reshape(params.var(K), &[h * k, f])?;
        // ‖x‖² + ‖k‖² − 2·x·kᵀ, clamped at 0: torch.cdist's matrix form, squared.
        // x·(−2k)ᵀ is exactly −2·(x·kᵀ): scaling by a power of two commutes with rounding.
        let neg2k = tape.scale(keys, T::from_f64(-2.0))?;
        let cross = tape.matmul_with(rows, neg2k, false, true)?;
        let x2 = tape.square(rows)?;
        let x2 = tape.sum_rows(x2)?;
        let x2 = tape.reshape(x2, &[m, 1])?;
        let k2 = tape.square(keys)?;
        let k2 = tape.sum_rows(k2)?;
        let d = tape.add(cross, x2)?;
        let d = tape.add(d, k2)?;
        let d = tape.clamp_min(d, T::ZERO)?;
        // Student-t kernel, normalised over the clusters of each head.
        let q = tape.student_t(d, T::from_f64(self.tau))?;
        let q = tape.reshape(q, &[m * h, k])?;
        let qsum = tape.sum_rows(q)?;
        let qsum = tape.reshape(qsum, &[m * h, 1])?;
        let qn = tape.div(q, qsum)?;
        // 1×1 conv over heads: z[m, j] = Σ_h w_h · qn[m, h, j] = (qn [M, H·K]) · (w ⊗ I_K).
        let qn = tape.reshape(qn, &[m, h * k])?;
        let mix = self.head_mix_matrix(tape, params)?;
        let z = tape.matmul(qn, mix)?;
        Ok(tape.softmax(z)?)
    }

    /// `w ⊗ I_K`, `[H·K, K]`: row `h·K + j` is `w_h` at column `j`. Built on the tape
    /// as `w [H, 1] · vec(I_K) [1, K²]` so that gradients reach `w`.
    fn head_mix_matrix<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &Bound,
    ) -> Result<Var, LayerError> {
        let (h, k) = (self.heads, self.num_clusters);
        let w = tape.reshape(params.var(CONV), &[h, 1])?;
        let mut eye = vec![T::ZERO; k * k];
        for j in 0..k {
            eye[j * k + j] = T::ONE;
        }
        let eye = tape.constant(Tensor::from_vec(&[1, k * k], eye)?);
        let mix = tape.matmul(w, eye)?;
        Ok(tape.reshape(mix, &[h * k, k])?)
    }

    /// `lin(SX)` for `SX [B, K, F]`: `[B, K, F']`.
    fn lin<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &Bound,
        sx: Var,
        b: usize,
    ) -> Result<Var, LayerError> {
        let (k, f, o) = (self.num_clusters, self.in_channels, self.out_channels);
        let flat = tape.reshape(sx, &[b * k, f])?;
        let y = tape.matmul_with(flat, params.var(LIN), false, true)?;
        Ok(tape.reshape(y, &[b, k, o])?)
    }

    /// PyG's computation on the padded `[B·N_max, F]` rows.
    fn dense<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &Bound,
        x_rows: Var,
        plan: Plan,
    ) -> Result<Pooled, LayerError> {
        let (b, n, k, f) = (
            plan.batch_size,
            plan.max_nodes,
            self.num_clusters,
            self.in_channels,
        );
        let padded = if plan.dense_input {
            x_rows
        } else {
            // to_dense_batch: real rows into place, zero rows elsewhere.
            let kept = match &plan.kept {
                Some(kept) => tape.gather_rows(x_rows, kept)?,
                None => x_rows,
            };
            tape.scatter_add(kept, &plan.positions, plan.padded_rows())?
        };
        let s_all = self.assign(tape, params, padded)?;
        let mask: Vec<T> = plan
            .mask_values()
            .into_iter()
            .map(|v| if v { T::ONE } else { T::ZERO })
            .collect();
        let mask = Tensor::from_vec(&[plan.padded_rows(), 1], mask)?;
        let s_flat = tape.mask_mul(s_all, mask)?;
        let s = tape.reshape(s_flat, &[b, n, k])?;
        let x3 = tape.reshape(padded, &[b, n, f])?;
        let sx = tape.matmul_with(s, x3, true, false)?;
        let out = self.lin(tape, params, sx, b)?;
        Ok(Pooled {
            out,
            s: Some(s),
            s_rows: None,
            plan,
            num_clusters: k,
            fused: false,
        })
    }

    /// The same result on the real rows only: `S` from the fused node
    /// ([`PoolPath::Ragged`]) or op by op ([`PoolPath::RaggedTape`]), then `Sᵀ·X` per
    /// graph and `lin` on the tape (why there: `fused::backward`'s module doc).
    fn ragged<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &Bound,
        x_rows: Var,
        plan: Plan,
        path: PoolPath,
    ) -> Result<Pooled, LayerError> {
        let rows = match &plan.kept {
            Some(kept) => tape.gather_rows(x_rows, kept)?,
            None => x_rows,
        };
        let (out, s_rows) = if path == PoolPath::RaggedTape {
            let s_rows = self.assign(tape, params, rows)?;
            let sx = tape.segment_matmul_tn(s_rows, rows, &plan.ptr)?;
            (self.lin(tape, params, sx, plan.batch_size)?, s_rows)
        } else {
            let sizes = fused::backward::Sizes {
                f: self.in_channels,
                o: self.out_channels,
                h: self.heads,
                k: self.num_clusters,
                tau: T::from_f64(self.tau),
            };
            let vars = fused::backward::ParamVars {
                keys: params.var(K),
                conv: params.var(CONV),
                lin: params.var(LIN),
            };
            fused::backward::record(tape, sizes, vars, rows, &plan)?
        };
        Ok(Pooled {
            out,
            s: None,
            s_rows: Some(s_rows),
            plan,
            num_clusters: self.num_clusters,
            fused: path == PoolPath::Ragged,
        })
    }

    /// PyG's `MemPooling.kl_loss(S)` for `S [B, N, K]`, on the inference path.
    ///
    /// # Errors
    /// See [`MemPooling::kl_loss_on`].
    pub fn kl_loss(s: &Tensor<f32>) -> Result<f32, LayerError> {
        let mut tape = Tape::<f32>::new();
        tape.set_recording(false);
        let sv = tape.constant(s.clone());
        let l = Self::kl_loss_on(&mut tape, sv)?;
        Ok(tape.value(l)?.item())
    }

    /// PyG's `MemPooling.kl_loss(S)` for `S [B, N, K]` on a tape, differentiable through
    /// both `S` and the target `P` (PyG does not detach `P`):
    ///
    /// ```text
    /// P_bnk = (S_bnk² / Σ_n S_bnk) / Σ_k (S_bnk² / Σ_n S_bnk)      (denominator 1 where Σ_k S_bnk = 0)
    /// loss  = (1/B) Σ_bnk P̃ (ln P̃ − ln S̃),   P̃ = max(P, 1e-15), S̃ = max(S, 1e-15)
    /// ```
    ///
    /// (`KLDivLoss(reduction='batchmean')` of `ln S̃` against `P̃`). Column sums
    /// `Σ_n S_bnk = 0` (a graph with no valid node) are replaced by 1, so that graph
    /// contributes 0; PyG 2.8.1 returns NaN there.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] unless `S` has rank 3 with `B ≥ 1`.
    pub fn kl_loss_on<T: Real>(tape: &mut Tape<T>, s: Var) -> Result<Var, LayerError> {
        kl::dense(tape, s)
    }
}

/// PyG weights in and out (`std` feature).
///
/// In PyG, save with `safetensors.torch.save_file(model.state_dict(), "mp.safetensors")`
/// and load ours with `model.load_state_dict(safetensors.torch.load_file("mp.safetensors"))`.
/// `conv.weight` is `[H]` here and `[1, H, 1, 1]` in the file, as in PyG.
///
/// ```
/// use readout_layers::{MemPooling, StateDict};
///
/// # fn main() -> Result<(), readout_layers::LayerError> {
/// let trained = MemPooling::new(4, 8, 3, 2, 1.0)?;
/// let bytes = trained.state_dict_bytes()?;
/// let sd = StateDict::from_bytes(&bytes)?;
/// assert_eq!(sd.get("conv.weight").unwrap().shape(), &[1, 3, 1, 1]);
/// let loaded = MemPooling::new(4, 8, 3, 2, 1.0)?.with_state_dict(sd)?;
/// assert_eq!(loaded.parameters(), trained.parameters());
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "std")]
impl MemPooling {
    /// Each parameter's shape in PyG's `state_dict`.
    fn pyg_shape_of(&self, p: &Parameter) -> Vec<usize> {
        self.pyg_shape(p.name())
            .unwrap_or_else(|| p.value().shape().to_vec())
    }

    /// Replaces every parameter by the tensor of the same PyG `state_dict` key (`k`,
    /// `conv.weight` with PyG's shape `[1, H, 1, 1]`, `lin.weight`), as PyG's
    /// `load_state_dict` (strict) does. Build the layer with the PyG model's constructor
    /// arguments first. All or nothing: on error no parameter changes.
    ///
    /// # Errors
    /// [`LayerError::MissingTensor`], [`LayerError::WrongShape`] or
    /// [`LayerError::UnexpectedTensors`] naming the tensor(s) at fault. Wrong element
    /// types and non-finite values are refused when the [`StateDict`] is read.
    pub fn load_state_dict(&mut self, state_dict: StateDict) -> Result<(), LayerError> {
        let shapes: Vec<(String, Vec<usize>)> = self
            .params
            .iter()
            .map(|p| (p.name().to_string(), self.pyg_shape_of(p)))
            .collect();
        self.params.load_shaped(state_dict, |p| {
            shapes
                .iter()
                .find(|(n, _)| n == p.name())
                .map_or_else(|| p.value().shape().to_vec(), |(_, s)| s.clone())
        })
    }

    /// [`load_state_dict`](Self::load_state_dict) in builder form.
    ///
    /// # Errors
    /// As [`load_state_dict`](Self::load_state_dict).
    pub fn with_state_dict(mut self, state_dict: StateDict) -> Result<Self, LayerError> {
        self.load_state_dict(state_dict)?;
        Ok(self)
    }

    /// Loads a safetensors file saved by PyG's
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    ///
    /// # Errors
    /// [`LayerError::Io`] or [`LayerError::Parse`] for an unreadable file,
    /// [`LayerError::WrongDtype`] or [`LayerError::NonFinite`] naming the tensor, then
    /// as [`load_state_dict`](Self::load_state_dict).
    pub fn load_state_dict_file(&mut self, path: impl AsRef<Path>) -> Result<(), LayerError> {
        self.load_state_dict(StateDict::from_file(path)?)
    }

    /// The parameters as a safetensors buffer in PyG's `state_dict` form (keys, PyG's
    /// shapes, `F32`).
    ///
    /// # Errors
    /// [`LayerError::NonFinite`] naming a parameter that holds a NaN or an infinity.
    pub fn state_dict_bytes(&self) -> Result<Vec<u8>, LayerError> {
        self.params.to_bytes_shaped(|p| self.pyg_shape_of(p))
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

#[cfg(test)]
mod tests;

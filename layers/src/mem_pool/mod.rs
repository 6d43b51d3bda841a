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
//!   same values; [`Parameter::pyg_shape`](crate::Parameter::pyg_shape) gives the shape
//!   to save under), initialised
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

mod args;
mod fused;
mod kl;
mod params;
mod reference;
mod validate;

use alloc::vec;
use alloc::vec::Vec;

use rand::{Rng, SeedableRng};
use readout_core::{Real, Tape, Tensor, Var};

use crate::error::LayerError;
use crate::param::{Bound, Parameters};
use crate::weights::PygWeights;
pub use args::{Mask, PoolArgs, PoolPath, Pooled};
pub use params::MemPoolParams;
use validate::Plan;

/// Clamp of `kl_loss` (PyG's `EPS`).
pub const KL_EPS: f64 = 1e-15;

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
    /// more than [`crate::limits::MAX_ELEMENTS`] values, or `H·K` does.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        heads: usize,
        num_clusters: usize,
        tau: f64,
    ) -> Result<Self, LayerError> {
        validate::new_args(in_channels, out_channels, heads, num_clusters, tau)?;
        let mut layer = MemPooling {
            in_channels,
            out_channels,
            heads,
            num_clusters,
            tau,
            params: Parameters::default(),
        };
        layer.reset_parameters(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(0));
        Ok(layer)
    }

    /// Re-draws every parameter as PyG's `reset_parameters` does, in its order:
    /// `k ~ U(−1, 1)`, `conv.weight ~ U(−1/√H, 1/√H)` (`Conv2d`'s kaiming-uniform with
    /// `a = √5`, fan-in `H·1·1`), `lin.weight ~ U(−1/√F, 1/√F)`.
    pub fn reset_parameters<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let (f, o, h, k) = (
            self.in_channels,
            self.out_channels,
            self.heads,
            self.num_clusters,
        );
        self.params = Parameters::new(MemPoolParams::new(f, o, h, k, rng).into_list());
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
        let (plan, fused) = self.infer(x, &self.weights()?, args)?;
        let k = self.num_clusters;
        // The real rows added into PyG's padded S (fresh zeroed memory: pages the
        // kernel hands over already cleared).
        let mut s = vec![0.0; plan.padded_rows() * k];
        fused::pad::pad_rows(&fused.s_rows, k, &plan.positions, &mut s);
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
        let (plan, fused) = self.infer(x, &self.weights()?, args)?;
        let s = self.s_nodes_tensor(&plan, fused.s_rows)?;
        Ok((self.out_tensor(&plan, fused.out)?, s))
    }

    /// The layer's own weights in their modules, for the fused engine.
    fn weights(&self) -> Result<MemPoolParams<&[f32]>, LayerError> {
        MemPoolParams::from_list(self.params.iter().map(|p| p.value().data()))
    }

    /// The fused ragged forward of `x` with weights `w`: the layout and the engine's
    /// result. Generic so that the tests can compare it with the tape in `f64`.
    fn infer<T: Real, V: AsRef<[T]>>(
        &self,
        x: &Tensor<T>,
        w: &MemPoolParams<V>,
        args: PoolArgs<'_>,
    ) -> Result<(Plan, fused::forward::Fused<T>), LayerError> {
        let plan = self.plan(x.shape(), args)?;
        let weights = fused::forward::Weights {
            f: self.in_channels,
            o: self.out_channels,
            h: self.heads,
            k: self.num_clusters,
            tau: T::from_f64(self.tau),
            keys: w.k.as_ref(),
            conv: w.conv.weight.as_ref(),
            lin: w.lin.weight.as_ref(),
        };
        let out = fused::forward::forward(&weights, x.data(), &plan);
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
    ///   `N·max(F, H·K)` exceeds [`crate::limits::MAX_ELEMENTS`] — e.g. an absurd
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
        self.params.check_bound(tape, params)?;
        let modules = MemPoolParams::from_list(params.vars().iter().copied())?;
        let xs = tape.value(x)?.shape().to_vec();
        let plan = self.plan(&xs, args)?;
        // The row view: [N, F] or [B·N, F].
        let x_rows = tape.reshape(x, &[plan.rows, self.in_channels])?;
        match args.path {
            PoolPath::Ragged => self.ragged_fused(tape, &modules, x_rows, plan),
            PoolPath::RaggedTape => self.ragged(tape, &modules, x_rows, plan),
            PoolPath::Dense => self.dense(tape, &modules, x_rows, plan),
        }
    }

    /// [`PoolPath::Ragged`] on a tape: `S` and `out` as the two fused custom-backward
    /// nodes of `fused::backward` (the same numbers as [`Self::ragged`]'s ops).
    fn ragged_fused<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &MemPoolParams<Var>,
        x_rows: Var,
        plan: validate::Plan,
    ) -> Result<Pooled, LayerError> {
        let rows = plan.kept_rows(tape, x_rows)?;
        let sizes = fused::backward::Sizes {
            f: self.in_channels,
            o: self.out_channels,
            h: self.heads,
            k: self.num_clusters,
            tau: T::from_f64(self.tau),
        };
        let vars = fused::backward::ParamVars {
            keys: params.k,
            conv: params.conv.weight,
            lin: params.lin.weight,
        };
        let (out, s_rows) = fused::backward::record(tape, sizes, vars, rows, &plan)?;
        Ok(Pooled::ragged(out, s_rows, plan, self.num_clusters, true))
    }
}

/// PyG weights in and out, through [`PygWeights`]. `conv.weight` is `[H]` here and
/// `[1, H, 1, 1]` in the file, as in PyG.
///
/// In PyG, save with `safetensors.torch.save_file(model.state_dict(), "mp.safetensors")`
/// and load ours with `model.load_state_dict(safetensors.torch.load_file("mp.safetensors"))`.
///
/// ```
/// use readout_layers::{MemPooling, PygWeights, StateDict};
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
impl PygWeights for MemPooling {
    fn parameters(&self) -> &Parameters {
        &self.params
    }

    fn parameters_mut(&mut self) -> &mut Parameters {
        &mut self.params
    }
}

// The fused engine against the tape (it reads private engine results; `std` for the
// shared error measure).
#[cfg(all(test, feature = "std"))]
mod tests;

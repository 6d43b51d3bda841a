//! `MemPooling`'s argument and result types: the forward's optional arguments
//! ([`PoolArgs`], [`Mask`]), the computation to run ([`PoolPath`]) and the tape handles
//! it returns ([`Pooled`]).

use readout_core::{Real, Tape, Var};

use super::kl;
use super::validate::Plan;
use crate::error::LayerError;

/// Which computation [`super::MemPooling`] runs.
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

/// The result of [`super::MemPooling::forward_on`]: handles on the tape and the batch layout.
#[derive(Clone, Debug)]
pub struct Pooled {
    pub(crate) out: Var,
    /// Padded `S [B, N_max, K]`, once built.
    pub(crate) s: Option<Var>,
    /// `S` on the kept rows `[N_kept, K]` (ragged path).
    pub(crate) s_rows: Option<Var>,
    pub(crate) plan: Plan,
    pub(crate) num_clusters: usize,
    /// Whether `kl_loss` is the fused node ([`PoolPath::Ragged`]) or recorded op by op.
    pub(crate) fused: bool,
}

impl Pooled {
    /// A ragged path's result: `S` on the kept rows only (`fused`: whether it and
    /// `kl_loss` are the fused nodes of [`PoolPath::Ragged`]).
    pub(crate) fn ragged(
        out: Var,
        s_rows: Var,
        plan: Plan,
        num_clusters: usize,
        fused: bool,
    ) -> Self {
        Pooled {
            out,
            s: None,
            s_rows: Some(s_rows),
            plan,
            num_clusters,
            fused,
        }
    }

    /// `out [B, K, F']`.
    pub fn out(&self) -> Var {
        self.out
    }

    /// `S [B, N_max, K]`, PyG's padded assignment matrix (zero rows for padding and
    /// masked nodes). On the ragged paths the first call places the real rows (on
    /// [`PoolPath::Ragged`] as one fused node written in one pass, first-order
    /// gradients only; on [`PoolPath::RaggedTape`] as recorded `scatter_add` and
    /// `reshape`); later calls return the same handle.
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
        let s = if self.fused {
            super::fused::pad::record(tape, rows, p, self.num_clusters)?
        } else {
            let flat = tape.scatter_add(rows, &p.positions, p.padded_rows())?;
            tape.reshape(flat, &[p.batch_size, p.max_nodes, self.num_clusters])?
        };
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

    /// `MemPooling.kl_loss(S)` of this batch (see [`super::MemPooling::kl_loss_on`]); on the
    /// ragged paths it is computed on the real rows only (padded rows contribute exactly
    /// 0 to PyG's sum, so this is the same value), as one fused node on
    /// [`PoolPath::Ragged`] (first-order gradients only) and op by op on
    /// [`PoolPath::RaggedTape`].
    ///
    /// # Errors
    /// [`LayerError::Core`] if the tape no longer holds this result's nodes.
    pub fn kl_loss<T: Real>(&mut self, tape: &mut Tape<T>) -> Result<Var, LayerError> {
        match self.s_rows {
            Some(rows) if self.fused => Ok(super::fused::kl::record(tape, rows, &self.plan.ptr)?),
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

//! Every input check of `MemPooling`, in one place: the constructor's arguments, the
//! forward's `x` and [`PoolArgs`], and where each node goes — `to_dense_batch`'s
//! layout ([`Plan`]), computed once from `batch` / `mask` and shared by the dense and
//! the ragged paths. Sizes are checked against [`limits`] before anything is
//! allocated.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::MemPooling;
use super::args::PoolArgs;
use crate::error::LayerError;
use crate::limits;

/// Checks the constructor's arguments (see [`MemPooling::new`]).
pub(crate) fn new_args(
    in_channels: usize,
    out_channels: usize,
    heads: usize,
    num_clusters: usize,
    tau: f64,
) -> Result<(), LayerError> {
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
    Ok(())
}

/// The widest buffers a forward allocates, per row and per graph, for the size caps
/// ([`crate::limits::MAX_ELEMENTS`]) checked before anything is allocated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Widths {
    /// Values per (real or padded) node row: `max(F, H·K)`.
    pub(crate) row: usize,
    /// Values per graph: `K · max(F, F')`.
    pub(crate) graph: usize,
}

impl Widths {
    /// Refuses `b` graphs of `n_max` padded rows, or `rows` real rows, that would need
    /// a buffer above the cap.
    fn check(self, b: usize, n_max: usize, rows: usize) -> Result<(), LayerError> {
        limits::elements("batch_size × num_clusters × channels", &[b, self.graph])?;
        limits::elements(
            "batch_size × max_num_nodes × max(channels, heads × num_clusters)",
            &[b, n_max, self.row],
        )?;
        limits::elements(
            "nodes × max(channels, heads × num_clusters)",
            &[rows, self.row],
        )?;
        Ok(())
    }
}

/// A validated `[B, N_max]` layout of the real (kept, valid) rows of `x`.
///
/// The *row view* of `x` is `[N, F]` for node input and `[B·N, F]` for dense input.
/// Kept rows, in row-view order, are grouped by graph in CSR form (`ptr`), and
/// `positions[j]` is where kept row `j` sits in the flattened `[B·N_max]` padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `B`, graphs (empty ones included).
    pub(crate) batch_size: usize,
    /// `N_max`, the padded node axis.
    pub(crate) max_nodes: usize,
    /// Rows of `x`'s row view.
    pub(crate) rows: usize,
    /// Row-view indices of the kept rows, when some rows are not kept (nodes dropped by
    /// `max_num_nodes`, masked-out dense rows); `None` when every row is kept.
    pub(crate) kept: Option<Vec<usize>>,
    /// CSR boundaries of the kept rows per graph, `B + 1` entries.
    pub(crate) ptr: Vec<usize>,
    /// Flat `b·N_max + p` position of each kept row in the padded layout.
    pub(crate) positions: Vec<usize>,
    /// Whether `x` came as dense `[B, N, F]`.
    pub(crate) dense_input: bool,
}

impl Plan {
    /// The rows the ragged paths compute on: `x_rows` without the nodes that
    /// `max_num_nodes` drops (a gather only when some are dropped).
    pub(crate) fn kept_rows<T: readout_core::Real>(
        &self,
        tape: &mut readout_core::Tape<T>,
        x_rows: readout_core::Var,
    ) -> Result<readout_core::Var, readout_core::CoreError> {
        match &self.kept {
            Some(kept) => tape.gather_rows(x_rows, kept),
            None => Ok(x_rows),
        }
    }

    /// `B·N_max`, the padded row count.
    pub(crate) fn padded_rows(&self) -> usize {
        self.batch_size * self.max_nodes
    }

    /// `1` at kept positions and `0` elsewhere, over the `B·N_max` padded rows.
    pub(crate) fn mask_values(&self) -> Vec<bool> {
        let mut m = vec![false; self.padded_rows()];
        for &p in &self.positions {
            m[p] = true;
        }
        m
    }

    /// The layout of node input `[N, F]` with an optional sorted `batch`, exactly as
    /// PyG's `to_dense_batch(x, batch, max_num_nodes=…, batch_size=…)` builds it.
    ///
    /// `cols` is the widest per-row size of the tensors the layer builds on this layout
    /// (see [`check_size`]).
    pub(crate) fn nodes(
        n: usize,
        batch: Option<&[i64]>,
        max_num_nodes: Option<usize>,
        batch_size: Option<usize>,
        widths: Widths,
    ) -> Result<Plan, LayerError> {
        // Graph of each node, validated: non-negative and sorted.
        let mut counts: Vec<usize>;
        match batch {
            None => {
                // One graph holding every node (PyG: `batch = zeros(N)`).
                let b = batch_size.unwrap_or(1);
                if b == 0 {
                    return Err(LayerError::invalid_argument(
                        "batch_size",
                        0,
                        "must be ≥ 1: there is one graph when batch is None",
                    ));
                }
                widths.check(b, 0, n)?;
                counts = vec![0; b];
                counts[0] = n;
            }
            Some(batch) => {
                if batch.len() != n {
                    return Err(LayerError::LengthMismatch {
                        name: "batch".into(),
                        expected: n,
                        got: batch.len(),
                    });
                }
                let mut prev = 0usize;
                for (i, &e) in batch.iter().enumerate() {
                    let g = usize::try_from(e).map_err(|_| {
                        LayerError::invalid_argument(
                            "batch",
                            format!("{e} at position {i}"),
                            "entries must be ≥ 0",
                        )
                    })?;
                    if g < prev {
                        return Err(LayerError::invalid_argument(
                            "batch",
                            format!("{e} at position {i} after {prev}"),
                            "must be sorted (non-decreasing), as PyG's to_dense_batch requires",
                        ));
                    }
                    prev = g;
                }
                // Every entry is ≥ 0 here, so the last one converts.
                let needed = match batch.last() {
                    Some(&m) => usize::try_from(m).map_or(usize::MAX, |m| m.saturating_add(1)),
                    None => 0,
                };
                let b = batch_size.unwrap_or(needed);
                if b < needed {
                    return Err(LayerError::invalid_argument(
                        "batch_size",
                        b,
                        format!("is smaller than max(batch) + 1 = {needed}"),
                    ));
                }
                if b == 0 {
                    return Err(LayerError::invalid_argument(
                        "batch",
                        "[] (empty)",
                        "an empty batch has no graph; pass batch_size ≥ 1",
                    ));
                }
                widths.check(b, 0, n)?;
                counts = vec![0; b];
                for &e in batch {
                    // In range: 0 ≤ e < needed ≤ b, and counts has b entries.
                    counts[e as usize] += 1;
                }
            }
        }
        let b = counts.len();
        let largest = counts.iter().copied().max().unwrap_or(0);
        let max_nodes = max_num_nodes.unwrap_or(largest);
        widths.check(b, max_nodes, n)?;
        let mut ptr = Vec::with_capacity(b + 1);
        ptr.push(0);
        let mut positions = Vec::with_capacity(n.min(b.saturating_mul(max_nodes)));
        let dropping = largest > max_nodes;
        let mut kept = Vec::new();
        let mut node = 0;
        for (g, &c) in counts.iter().enumerate() {
            // Nodes at position ≥ max_num_nodes in their graph are dropped, as PyG does.
            for p in 0..c {
                if p < max_nodes {
                    positions.push(g * max_nodes + p);
                    if dropping {
                        kept.push(node);
                    }
                }
                node += 1;
            }
            ptr.push(positions.len());
        }
        Ok(Plan {
            batch_size: b,
            max_nodes,
            rows: n,
            kept: dropping.then_some(kept),
            ptr,
            positions,
            dense_input: false,
        })
    }

    /// The layout of dense input `[B, N, F]` with an optional mask `[B, N]` (row-major).
    pub(crate) fn dense(
        b: usize,
        n: usize,
        mask: Option<&[bool]>,
        widths: Widths,
    ) -> Result<Plan, LayerError> {
        if b == 0 {
            return Err(LayerError::invalid_argument(
                "x",
                format!("shape [0, {n}, F]"),
                "a dense batch needs at least one graph",
            ));
        }
        widths.check(b, n, 0)?;
        let all = mask.is_none_or(|m| m.iter().all(|&v| v));
        let mut ptr = Vec::with_capacity(b + 1);
        ptr.push(0);
        let positions: Vec<usize> = match mask {
            Some(m) if !all => {
                let mut pos = Vec::new();
                for g in 0..b {
                    for (j, &valid) in m[g * n..(g + 1) * n].iter().enumerate() {
                        if valid {
                            pos.push(g * n + j);
                        }
                    }
                    ptr.push(pos.len());
                }
                pos
            }
            _ => {
                ptr.extend((1..=b).map(|g| g * n));
                (0..b * n).collect()
            }
        };
        Ok(Plan {
            batch_size: b,
            max_nodes: n,
            rows: b * n,
            kept: (!all).then(|| positions.clone()),
            ptr,
            positions,
            dense_input: true,
        })
    }
}

impl MemPooling {
    /// The validated layout of `x` (of shape `xs`) and `args`, shared by every path.
    pub(crate) fn plan(&self, xs: &[usize], args: PoolArgs<'_>) -> Result<Plan, LayerError> {
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
                        format!("of shape {:?}", m.dims()),
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
                    Some(m) if m.dims() != [b, n] => {
                        return Err(LayerError::WrongShape {
                            name: "mask".into(),
                            expected: vec![b, n],
                            got: m.dims().to_vec(),
                        });
                    }
                    Some(m) => Some(m.data()),
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
}

//! A workload made ready to time: the layer (PyG's default initialisation from the
//! layer's fixed seed), its inputs and the loss weights, and one call per mode.
//!
//! Inputs are drawn once, outside the timed call: node / element features standard
//! normal from seed [`X_SEED`], the loss weights `R` (and `R₂` for MemPooling's `S`)
//! standard normal from seed [`R_SEED`]. A call is what PyG's script times:
//!
//! - `infer`: the forward pass on the inference path (`EquilibriumAggregation::forward`
//!   with eager inner gradients; `MemPooling::forward`, which returns `out` and PyG's
//!   padded `S`);
//! - `train`: zero the gradients, forward on a recording tape
//!   (`InnerGrad::Adjoint` for EquilibriumAggregation), `loss = Σ out·R`
//!   (+ `Σ S·R₂ + kl_loss(S)` for MemPooling), backward, and accumulate into every
//!   parameter's gradient.

use readout_core::{Tape, Tensor, Var};
use readout_layers::PygWeights;
use readout_layers::{
    Bound, EquilibriumAggregation, InnerGrad, LayerError, MemPooling, Parameters, PoolArgs,
    Segments,
};

use crate::flops::{self, Flops};
use crate::inputs::Normal;
use crate::workload::{EqSpec, Mode, MpSpec, Workloads};

/// Seed of the input features.
pub const X_SEED: u64 = 0x5EED_0001;
/// Seed of the loss weights.
pub const R_SEED: u64 = 0x5EED_0002;

/// PyG's defaults for the constructor arguments the workloads leave out.
const LAMB: f32 = 0.1;
const TAU: f64 = 1.0;

/// The workload's description, layer-specific.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// An `EquilibriumAggregation` workload.
    Eq(EqSpec),
    /// A `MemPooling` workload.
    Mp(MpSpec),
}

impl Spec {
    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            Spec::Eq(w) => &w.name,
            Spec::Mp(w) => &w.name,
        }
    }

    /// FLOPs of one call (see [`crate::flops`]).
    pub fn flops(&self, mode: Mode) -> Flops {
        match self {
            Spec::Eq(w) => flops::equilibrium(w, mode),
            Spec::Mp(w) => flops::mempool(w, mode),
        }
    }

    /// Rows the layer works on (`N` elements or nodes), the size the probe scales.
    pub fn rows(&self) -> usize {
        match self {
            Spec::Eq(w) => w.num_elements,
            Spec::Mp(w) => w.num_nodes(),
        }
    }

    /// The same workload on about `fraction` of its rows (see [`EqSpec::scaled`],
    /// [`MpSpec::scaled`]), and the fraction actually kept.
    pub fn scaled(&self, fraction: f64) -> (Spec, f64) {
        let s = match self {
            Spec::Eq(w) => Spec::Eq(w.scaled(fraction)),
            Spec::Mp(w) => Spec::Mp(w.scaled(fraction)),
        };
        let kept = s.rows() as f64 / self.rows().max(1) as f64;
        (s, kept)
    }

    /// A short description of the sizes, for the report.
    pub fn describe(&self) -> String {
        match self {
            Spec::Eq(w) => format!(
                "N={} S={} {}→{} hidden {:?} T={}",
                w.num_elements,
                w.num_sets,
                w.in_channels,
                w.out_channels,
                w.num_layers,
                w.grad_iter
            ),
            Spec::Mp(w) => format!(
                "N={} B={} N_max={} F={}→{} H={} K={}",
                w.num_nodes(),
                w.graph_sizes.len(),
                w.max_nodes(),
                w.in_channels,
                w.out_channels,
                w.heads,
                w.num_clusters
            ),
        }
    }
}

/// Every workload of a file, equilibrium first, in file order.
pub fn all_specs(w: &Workloads) -> Vec<Spec> {
    w.equilibrium
        .iter()
        .cloned()
        .map(Spec::Eq)
        .chain(w.mempool.iter().cloned().map(Spec::Mp))
        .collect()
}

/// MemPooling shapes away from the reference workloads, for the criterion benches only
/// (the report and `workloads.json` keep their four): channel counts that are not
/// multiples of 8, one head, eight heads with one cluster, one-node graphs, a graph of
/// thousands of nodes among small ones, and empty graphs inside the batch and at its
/// end (`batch_size` larger than the graphs present).
/// `(name, in_channels, out_channels, heads, num_clusters, graph_sizes rule)`.
pub const EXTRA_MP: [(&str, usize, usize, usize, usize, &str); 4] = [
    ("mp_odd_channels", 13, 7, 3, 5, "range:300:1..60"),
    ("mp_one_head", 33, 17, 1, 32, "range:64:100..400"),
    ("mp_one_cluster", 9, 9, 8, 1, "range:200:1..30"),
    (
        "mp_empty_graphs",
        24,
        20,
        2,
        7,
        "cycle:[0,5,1,0,3000,7,0,0]",
    ),
];

/// [`EXTRA_MP`] as specs.
pub fn extra_mp_specs() -> Vec<Spec> {
    EXTRA_MP
        .iter()
        .map(|&(name, f, o, h, k, rule)| {
            Spec::Mp(MpSpec {
                name: name.to_owned(),
                in_channels: f,
                out_channels: o,
                heads: h,
                num_clusters: k,
                rule: rule.to_owned(),
                // The rules above are valid (the benches' tests run every shape).
                graph_sizes: crate::workload::graph_sizes(rule).unwrap_or_default(),
            })
        })
        .collect()
}

/// A workload with its layer and inputs, ready to run.
pub enum Prepared {
    /// `EquilibriumAggregation`.
    Eq {
        /// The layer.
        layer: EquilibriumAggregation,
        /// `x [N, in_channels]`.
        x: Tensor<f32>,
        /// The set of each element.
        index: Vec<i64>,
        /// `dim_size`.
        sets: usize,
        /// Loss weights `[S, out_channels]`.
        r: Tensor<f32>,
        /// The tape of `train` calls, cleared and reused from one call to the next as
        /// a training loop would: it recycles the previous call's buffers.
        tape: Tape<f32>,
    },
    /// `MemPooling`.
    Mp {
        /// The layer.
        layer: MemPooling,
        /// `x [N, in_channels]`.
        x: Tensor<f32>,
        /// The graph of each node.
        batch: Vec<i64>,
        /// Loss weights of `out`, `[B, K, out_channels]`.
        r_out: Tensor<f32>,
        /// Loss weights of PyG's padded `S`, `[B, N_max, K]`.
        r_s: Tensor<f32>,
        /// The tape of `train` calls, reused like the one of [`Prepared::Eq`].
        tape: Tape<f32>,
    },
}

impl Prepared {
    /// Builds the layer and draws the inputs.
    ///
    /// # Errors
    /// [`LayerError`] if the layer refuses the workload's sizes.
    pub fn new(spec: &Spec) -> Result<Prepared, LayerError> {
        let mut xs = Normal::new(X_SEED);
        let mut rs = Normal::new(R_SEED);
        Ok(match spec {
            Spec::Eq(w) => Prepared::Eq {
                layer: EquilibriumAggregation::new(
                    w.in_channels,
                    w.out_channels,
                    &w.num_layers,
                    w.grad_iter,
                    LAMB,
                )?,
                x: xs.tensor(&[w.num_elements, w.in_channels]),
                index: w.index(),
                sets: w.num_sets,
                r: rs.tensor(&[w.num_sets, w.out_channels]),
                tape: Tape::new(),
            },
            Spec::Mp(w) => Prepared::Mp {
                layer: MemPooling::new(
                    w.in_channels,
                    w.out_channels,
                    w.heads,
                    w.num_clusters,
                    TAU,
                )?,
                x: xs.tensor(&[w.num_nodes(), w.in_channels]),
                batch: w.batch(),
                r_out: rs.tensor(&[w.graph_sizes.len(), w.num_clusters, w.out_channels]),
                r_s: rs.tensor(&[w.graph_sizes.len(), w.max_nodes(), w.num_clusters]),
                tape: Tape::new(),
            },
        })
    }

    /// One call of `mode`; returns a value of the result (the sum of the output for
    /// `infer`, the loss for `train`) so that nothing can be optimised away.
    ///
    /// # Errors
    /// [`LayerError`] from the layer (none for the shipped workloads).
    pub fn run(&mut self, mode: Mode) -> Result<f64, LayerError> {
        match (self, mode) {
            (
                Prepared::Eq {
                    layer,
                    x,
                    index,
                    sets,
                    ..
                },
                Mode::Infer,
            ) => {
                crate::alloc::count_reused(layer.workspace_bytes());
                let y = layer.forward(x, Segments::Index(index), Some(*sets))?;
                Ok(checksum(y.data()))
            }
            (
                Prepared::Eq {
                    layer,
                    x,
                    index,
                    sets,
                    r,
                    tape,
                },
                Mode::Train,
            ) => {
                crate::alloc::count_reused(layer.workspace_bytes());
                let (bound, xv) = start_step(layer.parameters_mut(), tape, x);
                let y = layer.forward_on(
                    tape,
                    &bound,
                    xv,
                    Segments::Index(index),
                    Some(*sets),
                    InnerGrad::Adjoint,
                )?;
                let r = tape.constant_copied(r);
                let weighted = tape.mul(y, r)?;
                let loss = tape.sum(weighted)?;
                let value = f64::from(tape.value(loss)?.item());
                let grads = tape.backward(loss)?;
                layer.parameters_mut().accumulate(&bound, &grads);
                Ok(value)
            }
            (
                Prepared::Mp {
                    layer,
                    x,
                    batch,
                    r_out,
                    ..
                },
                Mode::Infer,
            ) => {
                let (out, s) = layer.forward(x, mp_args(batch, r_out))?;
                Ok(checksum(out.data()) + checksum(s.data()))
            }
            (
                Prepared::Mp {
                    layer,
                    x,
                    batch,
                    r_out,
                    r_s,
                    tape,
                },
                Mode::Train,
            ) => {
                let (bound, xv) = start_step(layer.parameters_mut(), tape, x);
                let mut pooled = layer.forward_on(tape, &bound, xv, mp_args(batch, r_out))?;
                let out = pooled.out();
                let s = pooled.s(tape)?;
                let kl = pooled.kl_loss(tape)?;
                let r_out = tape.constant_copied(r_out);
                let wo = tape.mul(out, r_out)?;
                let lo = tape.sum(wo)?;
                // Copies on the tape in recycled buffers (`r_s` is 32 MB on mp_skewed):
                // a clone would be allocated afresh on every call.
                let r_s = tape.constant_copied(r_s);
                let ws = tape.mul(s, r_s)?;
                let ls = tape.sum(ws)?;
                let loss = tape.add(lo, ls)?;
                let loss = tape.add(loss, kl)?;
                let value = f64::from(tape.value(loss)?.item());
                let grads = tape.backward(loss)?;
                layer.parameters_mut().accumulate(&bound, &grads);
                Ok(value)
            }
        }
    }

    /// The sum of every parameter's accumulated gradient magnitude (for tests: the
    /// last `train` call reached every parameter).
    pub fn grad_norms(&self) -> Vec<(String, f64)> {
        let params = match self {
            Prepared::Eq { layer, .. } => layer.parameters(),
            Prepared::Mp { layer, .. } => layer.parameters(),
        };
        params
            .iter()
            .map(|p| {
                let s = p.grad().data().iter().map(|&g| f64::from(g.abs())).sum();
                (p.name().to_owned(), s)
            })
            .collect()
    }
}

/// The sum of `v`, as the value an `infer` call returns so that its result is read
/// and cannot be optimised away. Summed in eight independent lanes: a single running
/// `f64` sum is one dependent add per value (four cycles each), which on
/// `mp_skewed`'s padded `S` (8.2 M values) took longer than the layer's own call; the
/// lanes let the compiler vectorise it, so the read costs about what streaming the
/// values costs. (PyG's script does not read its outputs at all.)
fn checksum(v: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f64::from(x);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    lanes.iter().sum::<f64>() + tail
}

/// `batch`, and `batch_size` = the workload's graph count (the rows of the loss
/// weights `r_out`), so that trailing empty graphs (size 0 at the end of the rule)
/// are graphs of the batch, as PyG's `batch_size` makes them.
fn mp_args<'a>(batch: &'a [i64], r_out: &Tensor<f32>) -> PoolArgs<'a> {
    PoolArgs::new().batch(batch).batch_size(r_out.shape()[0])
}

/// The start of a `train` call: zeroes the gradients, clears the reused tape
/// (counting the buffers it keeps as this call's memory), binds the parameters and
/// puts `x` on the tape.
fn start_step(params: &mut Parameters, tape: &mut Tape<f32>, x: &Tensor<f32>) -> (Bound, Var) {
    params.zero_grad();
    tape.clear();
    crate::alloc::count_reused(tape.stats().bytes());
    let bound = params.bind(tape, true);
    (bound, tape.constant_copied(x))
}

//! Learning the median of a set: the median experiment of the Equilibrium Aggregation
//! paper (Bartunov, Fuchs and Lillicrap, UAI 2022, arXiv 2202.12795), which PyG ships
//! as `examples/equilibrium_median.py`, against pooling baselines of the same size.
//!
//! Data, as in PyG's script: every set is drawn from Normal(0.5, 0.4),
//! Gamma(concentration 0.2, rate 0.5) or Uniform(0, 1), each with probability 1/3,
//! and the target is its median (`torch.median`'s: the lower middle value for an even
//! count). PyG's script uses sets of exactly 100 numbers; the sizes the paper trains
//! on are not stated in the sources this example was written from, so the default
//! here is a choice: sizes uniform in 10 ..= 190 (mean 100, as PyG's), which also asks
//! every method to work across cardinalities. `--sizes 100` is PyG's fixed setting.
//!
//! Training: every step takes a mini-batch of `--batch` sets, all in one forward call
//! (CSR `ptr` segments), and one Adam step on PyG's loss averaged over the batch,
//! `mean_s ‖y_s − median_s‖₂ / 100`, where `y_s` is the model's 10 outputs for set `s`
//! and the median is broadcast to all 10 (so every output is trained to be the
//! median; the prediction scored is their mean). PyG's script takes 10⁷ steps of one
//! set; the default here is 1500 steps of 16 sets (24 000 sets), what fits in five
//! minutes on two cores. The trained models are also scored on held-out sets of
//! exactly 100 numbers (a second table).
//!
//! Methods, trained on the same stream of sets (same sets, same order, per seed)
//! for the same number of steps, each with Adam at the learning rate it did best
//! with in trials (`Method::default_lr`; `--lr` sets one for all); `W` is `--width`
//! (default 64, see below):
//! - `equilibrium`: PyG's `EquilibriumAggregation(1, 10, [W, W], grad_iter)`,
//!   trained through the inner optimisation with `InnerGrad::Adjoint`. PyG's script
//!   uses `grad_iter = 1`; from `y = 0` one inner step makes the output a linear map
//!   of `mean_i ∂F(x_i, y)/∂y at y = 0`, which is mean pooling of learned features, so
//!   it cannot do better than DeepSets-mean. The default here is PyG's layer default,
//!   `grad_iter = 5`, which lets the layer minimise its energy (10 gave the same error
//!   in a shorter trial, at twice the cost).
//! - `deepsets-sum`, `deepsets-mean`, `deepsets-max`: `ρ(pool_i φ(x_i))` with
//!   `φ: 1 → w → w` (tanh after each layer) and `ρ: w → w → 10` (tanh between),
//!   `w = ⌈3W/4⌉`; the sum is divided by 100, the mean set size, so ρ's inputs start
//!   in the range the mean gives (it still grows with the set size, which sum pooling
//!   is about). Max pooling is the core's `segment_max`.
//! - `attention`: one learned query attending over the set (the Set Transformer's
//!   pooling by multihead attention with one head and one seed vector): keys and
//!   values are linear maps of `φ(x_i)` (`φ: 1 → d → d`, `d = ⌈W/2⌉`), the weights a
//!   softmax of `⟨k_i, q⟩/√d` within each set (the core's `segment_softmax`), then
//!   `ρ: d → d → 10` on the weighted sum of the values.
//! - `sample mean`: the untrained set mean (the answer mean pooling gives for free).
//!
//! The widths give every trained method about the same number of parameters (4 600
//! to 6 800 at `W = 64`; 68 000 to 77 000 at PyG's `W = 256`). The default width is
//! 64, not PyG's 256: a training step of the equilibrium model at 256 costs about
//! four times as much, and the default run must finish in five minutes on two cores
//! (`--width 256` trains PyG's sizes). Each method runs for
//! `--seeds` seeds (initialisation and data stream); the table gives the mean ±
//! standard deviation over seeds of the mean `|prediction − median|` on held-out sets
//! (the same sets for every seed), with the largest standard error of one such
//! held-out mean in its last column, so it can be compared with the gaps.
//!
//! Every method is evaluated with an exponential moving average of its weights
//! (decay 0.99, `common/train.rs`'s `Average`): without it, one of four seeds of the
//! equilibrium model ended 36 % above the four seeds' mean, from the noise of the last
//! steps.
//!
//! The equilibrium model is evaluated on as many sets per call as it was trained on
//! (see [`EVAL_CHUNK`]): in PyG's energy the regulariser's pull on each set's output
//! is divided by the number of sets in the call.
//!
//! Run `cargo run --release -p readout-layers --example median -- --help` for flags.

// `LayerError` is the library's error type, returned as is (as the library does).
#![allow(clippy::result_large_err)]

#[path = "common/args.rs"]
mod args;
#[path = "common/nn.rs"]
mod nn;
#[path = "common/plot.rs"]
mod plot;
#[path = "common/train.rs"]
mod train;

use readout_layers::PygWeights;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Normal};
use readout_core::{Tape, Tensor, Var};
use readout_layers::{
    Adam, Bound, EquilibriumAggregation, InnerGrad, LayerError, Parameter, Parameters, Segments,
    init, save_state_dict_to_file,
};

use args::Args;
use nn::{Act, Mlp, linear};
use train::{Average, Group, mean_std, optimiser_step, standard_error, thread_cpu_seconds};

/// Outputs of every model (PyG's `embedding_size`).
const OUT: usize = 10;
/// Sets per inference call of the baselines (their outputs do not depend on it; it
/// bounds memory). The equilibrium model is evaluated with as many sets per call as it
/// was trained with: PyG's energy adds `softplus(lamb)·mean_sets ‖y_s‖²` to the *sum*
/// over sets of the potentials, so the regulariser's pull on one set's `y` is divided
/// by the number of sets in the call, and a model trained on batches of 16 sets gives
/// other outputs when called on 250.
const EVAL_CHUNK: usize = 250;
/// The decay of the parameter average every method is evaluated with (a time
/// constant of 100 steps; see `Average`).
const AVERAGE_DECAY: f32 = 0.99;
/// PyG's loss divides by its set size, 100; kept for every set size.
const LOSS_SCALE: f32 = 100.0;
/// The widths of every model from `--width W`: the potential's hidden sizes
/// `[W, W]` (PyG's script: 256), and the baselines' widths chosen for about the same
/// number of parameters (DeepSets has two square layers, attention four).
#[derive(Clone, Copy, Debug)]
struct Widths {
    potential: usize,
    deepsets: usize,
    attention: usize,
}

impl Widths {
    fn new(w: usize) -> Self {
        Widths {
            potential: w,
            deepsets: (w * 3).div_ceil(4),
            attention: w.div_ceil(2),
        }
    }
}

const HELP: &str = "\
Learn the median of a set with EquilibriumAggregation, against DeepSets (sum, mean,
max pooling), attention pooling and the sample mean, over several seeds.

usage: cargo run --release -p readout-layers --example median -- [options]

options:
  --steps N        optimiser steps per method and seed          [default 1500]
  --batch B        sets per step                                [default 16]
  --lr R           Adam's learning rate for every method [default: per method,
                   the best of 0.001, 0.003 and 0.01 in trials]
  --grad-iter K    inner steps of EquilibriumAggregation        [default 5]
  --width W        potential hidden sizes [W, W] (PyG: 256); baselines sized
                   to about as many parameters             [default 64]
  --sizes A..B     set sizes, uniform in A..=B, or one size N   [default 10..190]
  --seeds S        seeds (initialisation and data stream)       [default 4]
  --seed S0        first seed; held-out sets come from it       [default 0]
  --eval-sets M    held-out sets per distribution               [default 1000]
  --curve-points P held-out evaluations along training          [default 12]
  --threads T      worker threads (jobs are method × seed)      [default 2]
  --quick          a sub-minute smoke run: 100 steps, 2 seeds, 100 held-out sets
                   per distribution, 3 curve points (explicit flags still win)
  --json FILE      write the final table as JSON
  --plot FILE.svg  draw learning curves and final errors
  --save DIR       write the first seed's equilibrium model as a PyG state_dict
                   (DIR/equilibrium.safetensors), reload it and check its held-out
                   predictions are identical
  --help           this text

Results do not depend on --threads: every job has its own generators.";

/// The three distributions of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dist {
    Normal,
    Gamma,
    Uniform,
}

const DISTS: [Dist; 3] = [Dist::Normal, Dist::Gamma, Dist::Uniform];
/// Column names of the table: the three distributions, then all sets.
const COLUMNS: [&str; 4] = ["normal", "gamma", "uniform", "all"];

impl Dist {
    fn index(self) -> usize {
        match self {
            Dist::Normal => 0,
            Dist::Gamma => 1,
            Dist::Uniform => 2,
        }
    }
}

/// The samplers, built once (PyTorch's parameterisations).
struct Samplers {
    normal: Normal<f64>,
    gamma: Gamma<f64>,
}

impl Samplers {
    fn new() -> Self {
        Samplers {
            // Normal(mean 0.5, standard deviation 0.4).
            normal: Normal::new(0.5, 0.4).expect("valid normal"),
            // torch's Gamma(concentration 0.2, rate 0.5): shape 0.2, scale 2.
            gamma: Gamma::new(0.2, 2.0).expect("valid gamma"),
        }
    }

    fn draw<R: Rng + ?Sized>(&self, d: Dist, rng: &mut R) -> f32 {
        (match d {
            Dist::Normal => self.normal.sample(rng),
            Dist::Gamma => self.gamma.sample(rng),
            Dist::Uniform => rng.random::<f64>(),
        }) as f32
    }
}

/// `torch.median`: the lower middle value.
fn median(x: &[f32]) -> f32 {
    let mut s = x.to_vec();
    s.sort_by(f32::total_cmp);
    s[(s.len() - 1) / 2]
}

/// Sets stored batched: values concatenated, CSR boundaries, medians, distributions.
#[derive(Clone, Default)]
struct Sets {
    x: Vec<f32>,
    ptr: Vec<usize>,
    median: Vec<f32>,
    dist: Vec<Dist>,
}

impl Sets {
    fn new() -> Self {
        Sets {
            ptr: vec![0],
            ..Sets::default()
        }
    }

    fn len(&self) -> usize {
        self.median.len()
    }

    fn push(&mut self, dist: Dist, x: &[f32]) {
        self.x.extend_from_slice(x);
        self.ptr.push(self.x.len());
        self.median.push(median(x));
        self.dist.push(dist);
    }

    /// Draws one set of a size in `sizes` from `dist`.
    fn draw<R: Rng + ?Sized>(
        &mut self,
        s: &Samplers,
        dist: Dist,
        sizes: (usize, usize),
        rng: &mut R,
    ) {
        let n = rng.random_range(sizes.0..=sizes.1);
        let x: Vec<f32> = (0..n).map(|_| s.draw(dist, rng)).collect();
        self.push(dist, &x);
    }

    /// Sets `range` as a batch of their own.
    fn slice(&self, range: std::ops::Range<usize>) -> Sets {
        let mut out = Sets::new();
        for i in range {
            out.push(self.dist[i], &self.x[self.ptr[i]..self.ptr[i + 1]]);
        }
        out
    }

    /// Every `step`-th set (a smaller held-out set for the learning curves).
    fn every(&self, step: usize) -> Sets {
        let mut out = Sets::new();
        for i in (0..self.len()).step_by(step.max(1)) {
            out.push(self.dist[i], &self.x[self.ptr[i]..self.ptr[i + 1]]);
        }
        out
    }

    fn ptr_i64(&self) -> Vec<i64> {
        self.ptr.iter().map(|&p| p as i64).collect()
    }

    fn x_tensor(&self) -> Result<Tensor<f32>, LayerError> {
        Ok(Tensor::from_vec(&[self.x.len(), 1], self.x.clone())?)
    }

    /// `|pred − median|` per set.
    fn abs_errors(&self, pred: &[f32]) -> Vec<f64> {
        pred.iter()
            .zip(&self.median)
            .map(|(&p, &m)| f64::from((p - m).abs()))
            .collect()
    }

    /// The absolute errors split by column: normal, gamma, uniform, all.
    fn by_column(&self, abs: &[f64]) -> [Vec<f64>; 4] {
        let mut out: [Vec<f64>; 4] = Default::default();
        for (&d, &e) in self.dist.iter().zip(abs) {
            out[d.index()].push(e);
            out[3].push(e);
        }
        out
    }
}

/// The training stream of one seed: a distribution chosen uniformly per set, then a
/// set from it. Every method of a seed reads the same stream.
struct Stream {
    rng: ChaCha8Rng,
    samplers: Samplers,
    sizes: (usize, usize),
}

impl Stream {
    fn new(seed: u64, sizes: (usize, usize)) -> Self {
        Stream {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5354_5245_414d),
            samplers: Samplers::new(),
            sizes,
        }
    }

    fn batch(&mut self, sets: usize) -> Sets {
        let mut b = Sets::new();
        for _ in 0..sets {
            let d = DISTS[self.rng.random_range(0..DISTS.len())];
            b.draw(&self.samplers, d, self.sizes, &mut self.rng);
        }
        b
    }
}

/// Held-out sets: `per_dist` of each distribution.
fn held_out(seed: u64, per_dist: usize, sizes: (usize, usize)) -> Sets {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4845_4c44_4f55_5421);
    let s = Samplers::new();
    let mut h = Sets::new();
    for d in DISTS {
        for _ in 0..per_dist {
            h.draw(&s, d, sizes, &mut rng);
        }
    }
    h
}

/// How a DeepSets model pools `φ(x_i)` over a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Sum,
    Mean,
    Max,
}

/// The methods that are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Equilibrium,
    DeepSets(Pool),
    Attention,
}

const METHODS: [Method; 5] = [
    Method::Equilibrium,
    Method::DeepSets(Pool::Sum),
    Method::DeepSets(Pool::Mean),
    Method::DeepSets(Pool::Max),
    Method::Attention,
];

impl Method {
    /// Adam's learning rate: the best of 1e-3 (PyG's script), 3e-3 and 1e-2 for the
    /// method in one-seed trials of 2000 steps (`examples/README.md` lists them).
    fn default_lr(self) -> f32 {
        match self {
            Method::Equilibrium | Method::DeepSets(Pool::Max) => 3e-3,
            Method::DeepSets(Pool::Sum | Pool::Mean) => 1e-2,
            Method::Attention => 1e-3,
        }
    }

    fn name(self, grad_iter: usize) -> String {
        match self {
            Method::Equilibrium => format!("equilibrium (grad_iter {grad_iter})"),
            Method::DeepSets(Pool::Sum) => "deepsets-sum".into(),
            Method::DeepSets(Pool::Mean) => "deepsets-mean".into(),
            Method::DeepSets(Pool::Max) => "deepsets-max".into(),
            Method::Attention => "attention (PMA, 1 query)".into(),
        }
    }
}

/// A trained model of the comparison: its parameter groups and how they are used.
#[derive(Clone)]
enum Model {
    Equilibrium(EquilibriumAggregation),
    DeepSets {
        pool: Pool,
        phi: Mlp,
        rho: Mlp,
    },
    /// `attend` holds `query [1, d]`, `key.weight [d, d]`, `value.weight [d, d]` and
    /// `value.bias [d]`.
    Attention {
        width: usize,
        phi: Mlp,
        attend: Parameters,
        rho: Mlp,
    },
}

impl Model {
    fn new(
        m: Method,
        grad_iter: usize,
        widths: Widths,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self, LayerError> {
        Ok(match m {
            Method::Equilibrium => {
                let h = widths.potential;
                let mut l = EquilibriumAggregation::new(1, OUT, &[h, h], grad_iter, 0.1)?;
                l.reset_parameters(rng);
                Model::Equilibrium(l)
            }
            Method::DeepSets(pool) => {
                let w = widths.deepsets;
                Model::DeepSets {
                    pool,
                    phi: Mlp::new("phi", &[1, w, w], Act::Tanh, rng),
                    rho: Mlp::new("rho", &[w, w, OUT], Act::Tanh, rng),
                }
            }
            Method::Attention => {
                let d = widths.attention;
                let (query, _) = init::linear(rng, d, 1);
                let (key, _) = init::linear(rng, d, d);
                let (value, value_bias) = init::linear(rng, d, d);
                Model::Attention {
                    width: d,
                    phi: Mlp::new("phi", &[1, d, d], Act::Tanh, rng),
                    attend: Parameters::new(vec![
                        Parameter::new("query", query),
                        Parameter::new("key.weight", key),
                        Parameter::new("value.weight", value),
                        Parameter::new("value.bias", value_bias),
                    ]),
                    rho: Mlp::new("rho", &[d, d, OUT], Act::Tanh, rng),
                }
            }
        })
    }

    /// The parameter groups, in a fixed order.
    fn groups(&self) -> Vec<&Parameters> {
        match self {
            Model::Equilibrium(l) => vec![l.parameters()],
            Model::DeepSets { phi, rho, .. } => vec![phi.parameters(), rho.parameters()],
            Model::Attention {
                phi, attend, rho, ..
            } => {
                vec![phi.parameters(), attend, rho.parameters()]
            }
        }
    }

    fn groups_mut(&mut self) -> Vec<&mut Parameters> {
        match self {
            Model::Equilibrium(l) => vec![l.parameters_mut()],
            Model::DeepSets { phi, rho, .. } => {
                vec![phi.parameters_mut(), rho.parameters_mut()]
            }
            Model::Attention {
                phi, attend, rho, ..
            } => {
                vec![phi.parameters_mut(), attend, rho.parameters_mut()]
            }
        }
    }

    fn numel(&self) -> usize {
        self.groups().iter().map(|p| p.numel()).sum()
    }

    fn bind(&self, tape: &mut Tape<f32>, trainable: bool) -> Vec<Bound> {
        self.groups()
            .into_iter()
            .map(|p| p.bind(tape, trainable))
            .collect()
    }

    /// The `[sets, 10]` output for the sets `b`, their values already on the tape as
    /// `x [N, 1]`, with the parameters bound at `bound`.
    fn forward_on(
        &self,
        tape: &mut Tape<f32>,
        bound: &[Bound],
        x: Var,
        b: &Sets,
        mode: InnerGrad,
    ) -> Result<Var, LayerError> {
        let ptr = &b.ptr;
        match self {
            Model::Equilibrium(l) => {
                let p = b.ptr_i64();
                l.forward_on(tape, &bound[0], x, Segments::Ptr(&p), None, mode)
            }
            Model::DeepSets { pool, phi, rho } => {
                let h = phi.forward(tape, &bound[0], x)?;
                let h = tape.tanh(h)?;
                let pooled = match pool {
                    Pool::Sum => {
                        let s = tape.segment_sum(h, ptr)?;
                        tape.scale(s, 1.0 / LOSS_SCALE)?
                    }
                    Pool::Mean => tape.segment_mean(h, ptr)?,
                    Pool::Max => tape.segment_max(h, ptr)?,
                };
                rho.forward(tape, &bound[1], pooled)
            }
            Model::Attention {
                width, phi, rho, ..
            } => {
                let a = &bound[1];
                let h = phi.forward(tape, &bound[0], x)?;
                let h = tape.tanh(h)?;
                let keys = linear(tape, h, a.var(1), None)?;
                let score = tape.matmul_with(keys, a.var(0), false, true)?;
                let score = tape.scale(score, 1.0 / (*width as f32).sqrt())?;
                let weight = tape.segment_softmax(score, ptr)?;
                let values = linear(tape, h, a.var(2), Some(a.var(3)))?;
                let weighted = tape.mul(values, weight)?;
                let pooled = tape.segment_sum(weighted, ptr)?;
                rho.forward(tape, &bound[2], pooled)
            }
        }
    }

    /// One Adam step on the batch's loss; returns the loss.
    fn train_step(&mut self, adams: &mut [Adam], b: &Sets) -> Result<f32, LayerError> {
        let mut tape = Tape::<f32>::new();
        let bound = self.bind(&mut tape, true);
        let x = tape.constant(b.x_tensor()?);
        let y = self.forward_on(&mut tape, &bound, x, b, InnerGrad::Adjoint)?;
        // mean_s ‖y_s − median_s‖₂ / 100, the median broadcast over the 10 outputs.
        let m = tape.constant(Tensor::from_vec(&[b.len(), 1], b.median.clone())?);
        let d = tape.sub(y, m)?;
        let d2 = tape.square(d)?;
        let per_set = tape.sum_rows(d2)?;
        let norm = tape.sqrt(per_set)?;
        let mean = tape.mean(norm)?;
        let loss = tape.scale(mean, 1.0 / LOSS_SCALE)?;
        let value = tape.value(loss)?.item();
        let grads = tape.backward(loss)?;
        let groups = self
            .groups_mut()
            .into_iter()
            .zip(&bound)
            .zip(adams.iter_mut())
            .map(|((params, bound), adam)| Group {
                params,
                bound,
                adam,
            })
            .collect();
        optimiser_step(groups, &grads);
        Ok(value)
    }

    /// Predictions (the mean of the 10 outputs) for every set of `h`, `batch` sets per
    /// call for the equilibrium model (see [`EVAL_CHUNK`]), [`EVAL_CHUNK`] for the
    /// others.
    fn predict(&self, h: &Sets, batch: usize) -> Result<Vec<f32>, LayerError> {
        let chunk = match self {
            Model::Equilibrium(_) => batch,
            _ => EVAL_CHUNK,
        };
        let mut out = Vec::with_capacity(h.len());
        for start in (0..h.len()).step_by(chunk) {
            let end = (start + chunk).min(h.len());
            let mut b = h.slice(start..end);
            // A short last chunk is filled up with the first sets (their outputs are
            // dropped), so every call has `chunk` sets.
            for i in 0..(start + chunk - end).min(h.len()) {
                b.push(h.dist[i], &h.x[h.ptr[i]..h.ptr[i + 1]]);
            }
            let y = match self {
                // The inference path: inner gradients computed eagerly, nothing recorded.
                Model::Equilibrium(l) => {
                    l.forward(&b.x_tensor()?, Segments::Ptr(&b.ptr_i64()), None)?
                }
                _ => {
                    let mut tape = Tape::<f32>::new();
                    tape.set_recording(false);
                    let bound = self.bind(&mut tape, false);
                    let x = tape.constant(b.x_tensor()?);
                    let y = self.forward_on(&mut tape, &bound, x, &b, InnerGrad::Eager)?;
                    tape.value(y)?.clone()
                }
            };
            out.extend(
                y.data()
                    .chunks(OUT)
                    .take(end - start)
                    .map(|r| r.iter().sum::<f32>() / OUT as f32),
            );
        }
        Ok(out)
    }
}

/// The sample mean of every set (the untrained reference).
fn sample_means(h: &Sets) -> Vec<f32> {
    h.ptr
        .windows(2)
        .map(|w| {
            let s = &h.x[w[0]..w[1]];
            s.iter().sum::<f32>() / s.len() as f32
        })
        .collect()
}

/// The result of one (method, seed) job.
struct Trained {
    method: Method,
    seed_index: usize,
    /// `(step, held-out error on the curve sets)`.
    curve: Vec<(usize, f64)>,
    /// Absolute errors by column on each held-out collection (see [`Eval`]).
    errors: Vec<[Vec<f64>; 4]>,
    cpu_seconds: f64,
    /// The trained equilibrium model of the first seed, for `--save`.
    model: Option<Model>,
}

struct Config {
    steps: usize,
    batch: usize,
    /// `--lr`: one learning rate for every method, instead of [`Method::default_lr`].
    lr: Option<f32>,
    grad_iter: usize,
    widths: Widths,
    sizes: (usize, usize),
    seeds: usize,
    seed: u64,
    eval_sets: usize,
    curve_points: usize,
    threads: usize,
    json: Option<PathBuf>,
    plot: Option<PathBuf>,
    save: Option<PathBuf>,
}

/// `A..B` or `N`.
fn parse_sizes(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--sizes {s:?}: expected N or A..B with 1 ≤ A ≤ B");
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (
            a.parse().map_err(|_| bad())?,
            b.trim_start_matches('=').parse().map_err(|_| bad())?,
        ),
        None => {
            let n = s.parse().map_err(|_| bad())?;
            (n, n)
        }
    };
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn parse() -> Result<Option<Config>, String> {
    let mut a = Args::from_env();
    if a.flag("--help") || a.flag("-h") {
        return Ok(None);
    }
    let quick = a.flag("--quick");
    let sizes = match a.value::<String>("--sizes")? {
        Some(s) => parse_sizes(&s)?,
        None => (10, 190),
    };
    let c = Config {
        steps: a
            .value("--steps")?
            .unwrap_or(if quick { 100 } else { 1500 }),
        batch: a.value("--batch")?.unwrap_or(16),
        lr: a.value("--lr")?,
        grad_iter: a.value("--grad-iter")?.unwrap_or(5),
        widths: Widths::new(a.value("--width")?.unwrap_or(64)),
        sizes,
        seeds: a.value("--seeds")?.unwrap_or(if quick { 2 } else { 4 }),
        seed: a.value("--seed")?.unwrap_or(0),
        eval_sets: a
            .value("--eval-sets")?
            .unwrap_or(if quick { 100 } else { 1000 }),
        curve_points: a
            .value("--curve-points")?
            .unwrap_or(if quick { 3 } else { 12 }),
        threads: a.value("--threads")?.unwrap_or(2),
        json: a.value::<String>("--json")?.map(PathBuf::from),
        plot: a.value::<String>("--plot")?.map(PathBuf::from),
        save: a.value::<String>("--save")?.map(PathBuf::from),
    };
    a.finish()?;
    for (name, v) in [
        ("--steps", c.steps),
        ("--batch", c.batch),
        ("--seeds", c.seeds),
        ("--eval-sets", c.eval_sets),
        ("--threads", c.threads),
        ("--width", c.widths.potential),
        ("--curve-points", c.curve_points),
    ] {
        if v == 0 {
            return Err(format!("{name} must be ≥ 1"));
        }
    }
    if let Some(lr) = c.lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
        return Err(format!("--lr {lr}: must be finite and > 0"));
    }
    Ok(Some(c))
}

fn main() {
    let cfg = match parse() {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = real_main(&cfg) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Trains one method on one seed's stream, with held-out evaluations along the way.
fn run_job(
    cfg: &Config,
    method: Method,
    seed_index: usize,
    evals: &[Eval],
    curve_sets: &Sets,
) -> Result<Trained, LayerError> {
    let seed = cfg.seed + seed_index as u64;
    let cpu_start = thread_cpu_seconds();
    // Initialisation depends on the seed and the method; the data only on the seed.
    let mut init_rng =
        ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9) ^ method_tag(method));
    let mut model = Model::new(method, cfg.grad_iter, cfg.widths, &mut init_rng)?;
    let mut adams = model
        .groups()
        .iter()
        .map(|_| Adam::new(f64::from(cfg.lr.unwrap_or(method.default_lr()))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut stream = Stream::new(seed, cfg.sizes);
    let every = cfg.steps.div_ceil(cfg.curve_points).max(1);
    // Every method is evaluated with averaged weights (see `Average`).
    let mut average = Average::new(&model.groups(), AVERAGE_DECAY);
    let averaged = |model: &Model, average: &Average| {
        let mut m = model.clone();
        average.write_into(m.groups_mut());
        m
    };
    let mut curve = vec![(
        0,
        mean_of(&curve_sets.abs_errors(&model.predict(curve_sets, cfg.batch)?)),
    )];
    for step in 1..=cfg.steps {
        let b = stream.batch(cfg.batch);
        model.train_step(&mut adams, &b)?;
        average.update(&model.groups());
        if step % every == 0 || step == cfg.steps {
            let m = averaged(&model, &average);
            let e = mean_of(&curve_sets.abs_errors(&m.predict(curve_sets, cfg.batch)?));
            curve.push((step, e));
        }
    }
    let model = averaged(&model, &average);
    let errors = evals
        .iter()
        .map(|e| {
            Ok(e.sets
                .by_column(&e.sets.abs_errors(&model.predict(&e.sets, cfg.batch)?)))
        })
        .collect::<Result<Vec<_>, LayerError>>()?;
    let cpu_seconds = match (cpu_start, thread_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let keep = method == Method::Equilibrium && seed_index == 0;
    Ok(Trained {
        method,
        seed_index,
        curve,
        errors,
        cpu_seconds,
        model: keep.then_some(model),
    })
}

fn method_tag(m: Method) -> u64 {
    METHODS.iter().position(|&x| x == m).unwrap_or(0) as u64 + 1
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A held-out collection of sets and the caption of its table.
struct Eval {
    caption: String,
    sets: Sets,
}

/// One method's numbers in one table.
struct Table {
    /// Per column: the held-out mean of every seed.
    per_seed: [Vec<f64>; 4],
    /// The largest standard error of one seed's held-out mean, over seeds and columns.
    max_se: f64,
}

impl Table {
    /// From the absolute errors by column of every seed.
    fn new<'a>(seeds: impl Iterator<Item = &'a [Vec<f64>; 4]>) -> Self {
        let mut per_seed: [Vec<f64>; 4] = Default::default();
        let mut max_se = 0.0f64;
        for errors in seeds {
            for (column, e) in per_seed.iter_mut().zip(errors) {
                column.push(mean_of(e));
                max_se = max_se.max(standard_error(e));
            }
        }
        Table { per_seed, max_se }
    }
}

/// One row of the final tables.
struct Row {
    name: String,
    is_equilibrium: bool,
    /// One per held-out collection (see [`Eval`]).
    tables: Vec<Table>,
    /// `(step, mean, min, max)` over seeds of the curve.
    curve: Vec<(f64, f64, f64, f64)>,
    cpu_seconds: f64,
    params: usize,
}

fn real_main(cfg: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let sizes = if cfg.sizes.0 == cfg.sizes.1 {
        format!("{}", cfg.sizes.0)
    } else {
        format!("{} to {}", cfg.sizes.0, cfg.sizes.1)
    };
    let heldout = held_out(cfg.seed, cfg.eval_sets, cfg.sizes);
    let curve_sets = heldout.every(10);
    let caption = |n: usize, what: &str| {
        format!(
            "held-out mean |prediction − median| over {n} sets per distribution{what}: \
             mean ± std over {} seed(s) (lower is better)",
            cfg.seeds
        )
    };
    let mut evals = vec![Eval {
        caption: caption(cfg.eval_sets, &format!(" of {sizes} numbers")),
        sets: heldout,
    }];
    if cfg.sizes != (100, 100) {
        // The same models on PyG's fixed size (other sets, half as many).
        let per_dist = cfg.eval_sets.div_ceil(2);
        evals.push(Eval {
            caption: caption(per_dist, " of exactly 100 numbers (PyG's size)"),
            sets: held_out(cfg.seed ^ 100, per_dist, (100, 100)),
        });
    }
    println!(
        "median of sets of {sizes} numbers from Normal(0.5, 0.4) / Gamma(0.2, rate 0.5) / Uniform(0, 1); \
         {} steps of {} sets, Adam lr {}, grad_iter {}, {} seed(s) from {}, {} thread(s); \
         held-out: {} sets per distribution",
        cfg.steps,
        cfg.batch,
        cfg.lr
            .map_or("per method (below)".to_string(), |lr| lr.to_string()),
        cfg.grad_iter,
        cfg.seeds,
        cfg.seed,
        cfg.threads,
        cfg.eval_sets
    );
    let mut init = ChaCha8Rng::seed_from_u64(0);
    let mut params = Vec::new();
    for m in METHODS {
        let n = Model::new(m, cfg.grad_iter, cfg.widths, &mut init)?.numel();
        let lr = cfg.lr.unwrap_or(m.default_lr());
        println!("  {:<28} {n:>7} parameters, lr {lr}", m.name(cfg.grad_iter));
        params.push(n);
    }

    // Jobs: every method on every seed, the slowest (equilibrium) first.
    let jobs: Vec<(Method, usize)> = METHODS
        .iter()
        .flat_map(|&m| (0..cfg.seeds).map(move |s| (m, s)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Trained>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..cfg.threads.min(jobs.len()) {
            scope.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(m, s)) = jobs.get(j) else { break };
                    if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        break;
                    }
                    match run_job(cfg, m, s, &evals, &curve_sets) {
                        Ok(t) => {
                            eprintln!(
                                "[{:>5.0} s] {} seed {}: held-out error {:.5} ({:.0} s of CPU)",
                                start.elapsed().as_secs_f64(),
                                m.name(cfg.grad_iter),
                                cfg.seed + s as u64,
                                mean_of(&t.errors[0][3]),
                                t.cpu_seconds
                            );
                            results.lock().unwrap_or_else(|e| e.into_inner()).push(t);
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(format!("{} seed {s}: {e}", m.name(cfg.grad_iter)));
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.into());
    }
    let wall = start.elapsed().as_secs_f64();
    let mut trained = results.into_inner().unwrap_or_else(|e| e.into_inner());
    trained.sort_by_key(|t| (method_tag(t.method), t.seed_index));

    // Rows of the table: the trained methods, then the sample mean.
    let mut rows = Vec::new();
    for (mi, &m) in METHODS.iter().enumerate() {
        let runs: Vec<&Trained> = trained.iter().filter(|t| t.method == m).collect();
        let tables = (0..evals.len())
            .map(|k| Table::new(runs.iter().map(|t| &t.errors[k])))
            .collect();
        let points = runs.first().map_or(0, |t| t.curve.len());
        let curve = (0..points)
            .map(|i| {
                let v: Vec<f64> = runs.iter().map(|t| t.curve[i].1).collect();
                let (mean, _) = mean_std(&v);
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                (runs[0].curve[i].0 as f64, mean, lo, hi)
            })
            .collect();
        rows.push(Row {
            name: m.name(cfg.grad_iter),
            is_equilibrium: m == Method::Equilibrium,
            tables,
            curve,
            cpu_seconds: runs.iter().map(|t| t.cpu_seconds).sum(),
            params: params[mi],
        });
    }
    let mean_curve = mean_of(&curve_sets.abs_errors(&sample_means(&curve_sets)));
    rows.push(Row {
        name: "sample mean (untrained)".into(),
        is_equilibrium: false,
        tables: evals
            .iter()
            .map(|e| {
                let errors = e.sets.by_column(&e.sets.abs_errors(&sample_means(&e.sets)));
                Table::new(std::iter::once(&errors))
            })
            .collect(),
        curve: [0.0, cfg.steps as f64]
            .iter()
            .map(|&s| (s, mean_curve, mean_curve, mean_curve))
            .collect(),
        cpu_seconds: 0.0,
        params: 0,
    });

    for (k, e) in evals.iter().enumerate() {
        print_table(&e.caption, &rows, k);
    }
    println!("wall time {wall:.1} s");
    if let Some(path) = &cfg.json {
        std::fs::write(path, json(&rows))?;
        println!("table written to {}", path.display());
    }
    if let Some(path) = &cfg.plot {
        std::fs::write(path, figure(cfg, &rows).svg())?;
        println!("plot written to {}", path.display());
    }
    if let Some(dir) = &cfg.save {
        let model = trained.iter_mut().find_map(|t| t.model.take());
        let Some(Model::Equilibrium(layer)) = model else {
            return Err("no trained equilibrium model to save".into());
        };
        save_and_check(cfg, &layer, dir, &evals[0].sets)?;
    }
    Ok(())
}

/// Table `k` of every row, then which method is lowest in each column.
fn print_table(caption: &str, rows: &[Row], k: usize) {
    println!();
    println!("{caption}");
    println!(
        "{:<28} {:>17} {:>17} {:>17} {:>17} {:>8} {:>7}",
        "method", COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], "max s.e.", "cpu s"
    );
    for r in rows {
        let t = &r.tables[k];
        let mut line = format!("{:<28}", r.name);
        for column in &t.per_seed {
            let (m, s) = mean_std(column);
            line.push_str(&format!(" {:>8.5} ± {:<6.4}", m, s));
        }
        line.push_str(&format!(" {:>8.5} {:>7.0}", t.max_se, r.cpu_seconds));
        println!("{line}");
    }
    println!(
        "(max s.e.: the largest standard error of one seed's held-out mean in the row; cpu s: \
         CPU seconds of the row's training jobs, all seeds, held-out evaluations included)"
    );
    println!();
    for (c, column) in COLUMNS.iter().enumerate() {
        let mut order: Vec<(f64, &str, bool)> = rows
            .iter()
            .map(|r| {
                (
                    mean_std(&r.tables[k].per_seed[c]).0,
                    r.name.as_str(),
                    r.is_equilibrium,
                )
            })
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        let eq = order.iter().position(|o| o.2).unwrap_or(0);
        let verdict = if eq == 0 {
            format!(
                "equilibrium lowest, {:.2}× below the next ({})",
                order[1].0 / order[0].0,
                order[1].1
            )
        } else {
            format!(
                "equilibrium ranks {} of {}; lowest: {} ({:.5} vs {:.5})",
                eq + 1,
                order.len(),
                order[0].1,
                order[0].0,
                order[eq].0
            )
        };
        println!("{column:>8}: {verdict}");
    }
}

/// The final table as `{"results": [{"method", "distribution", "mean", "std",
/// "per_seed"}, …]}`, and the table on sets of 100, when there is one, in the same
/// form under `"results_size_100"`.
fn json(rows: &[Row]) -> String {
    let table = |k: usize| {
        let mut results = Vec::new();
        for r in rows {
            for (c, name) in COLUMNS.iter().enumerate() {
                let per_seed = &r.tables[k].per_seed[c];
                let (mean, std) = mean_std(per_seed);
                results.push(serde_json::json!({
                    "method": r.name,
                    "distribution": name,
                    "mean": mean,
                    "std": std,
                    "per_seed": per_seed,
                }));
            }
        }
        serde_json::Value::Array(results)
    };
    let mut doc = serde_json::json!({ "results": table(0) });
    if rows.first().is_some_and(|r| r.tables.len() > 1) {
        doc["results_size_100"] = table(1);
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// Colours of the rows (the sample mean last).
const COLOURS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f",
];

fn figure(cfg: &Config, rows: &[Row]) -> plot::Figure {
    let curves = rows
        .iter()
        .enumerate()
        .map(|(i, r)| plot::Curve {
            label: format!("{} ({} parameters)", r.name, r.params),
            colour: COLOURS[i % COLOURS.len()],
            points: r.curve.clone(),
            dashed: i + 1 == rows.len(),
        })
        .collect();
    let bars = rows
        .iter()
        .enumerate()
        .map(|(i, r)| plot::BarSeries {
            label: r.name.clone(),
            colour: COLOURS[i % COLOURS.len()],
            values: r.tables[0].per_seed.iter().map(|c| mean_std(c)).collect(),
        })
        .collect();
    plot::Figure {
        title: format!(
            "Learning the median: {} steps of {} sets, grad_iter {}, {} seeds (lines: mean, bands: min to max)",
            cfg.steps, cfg.batch, cfg.grad_iter, cfg.seeds
        ),
        x_label: "training step".into(),
        y_label: format!(
            "held-out mean |prediction − median| ({} sets, log)",
            cfg.eval_sets * 3 / 10
        ),
        curves,
        bars_caption:
            "final held-out error per distribution (log; bars: mean, whiskers: ± std over seeds)"
                .into(),
        groups: COLUMNS.iter().map(|s| s.to_string()).collect(),
        bars,
    }
}

/// Writes the layer as a PyG `state_dict`, reads it back into a fresh layer and checks
/// that the held-out predictions are bit for bit the same.
fn save_and_check(
    cfg: &Config,
    layer: &EquilibriumAggregation,
    dir: &std::path::Path,
    heldout: &Sets,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("equilibrium.safetensors");
    layer.save_state_dict(&path)?;
    let h = cfg.widths.potential;
    let mut loaded = EquilibriumAggregation::new(1, OUT, &[h, h], cfg.grad_iter, 0.1)?;
    loaded.load_state_dict_file(&path)?;
    let before = Model::Equilibrium(layer.clone()).predict(heldout, cfg.batch)?;
    let after = Model::Equilibrium(loaded).predict(heldout, cfg.batch)?;
    let same = before
        .iter()
        .zip(&after)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    if !same {
        return Err(format!(
            "{}: predictions changed after the round trip",
            path.display()
        )
        .into());
    }
    println!(
        "equilibrium model (seed {}) written to {} and reloaded: its {} held-out predictions are identical",
        cfg.seed,
        path.display(),
        after.len()
    );
    // A batch of held-out sets from every distribution and the layer's outputs for
    // them, for checking the model on the Python side.
    let sample = heldout
        .every(heldout.len() / cfg.batch)
        .slice(0..cfg.batch.min(heldout.len()));
    let y = layer.forward(&sample.x_tensor()?, Segments::Ptr(&sample.ptr_i64()), None)?;
    let ptr: Vec<f32> = sample.ptr.iter().map(|&p| p as f32).collect();
    let ptr = Tensor::from_vec(&[ptr.len()], ptr)?;
    let check = dir.join("check.safetensors");
    save_state_dict_to_file(
        &check,
        &[("x", &sample.x_tensor()?), ("ptr", &ptr), ("y", &y)],
    )?;
    println!(
        "{}: x, ptr (as floats) and these outputs y for {} held-out sets",
        check.display(),
        sample.len()
    );
    println!(
        "load it in PyG (and call it on {} sets at a time, as it was trained: the regulariser's weight per set depends on it):",
        cfg.batch
    );
    println!(
        "  from safetensors.torch import load_file; from torch_geometric.nn.aggr import EquilibriumAggregation"
    );
    println!(
        "  model = EquilibriumAggregation(1, {OUT}, [{h}, {h}], grad_iter={})",
        cfg.grad_iter
    );
    println!(
        "  model.load_state_dict(load_file({:?}))",
        path.display().to_string()
    );
    println!(
        "then `model(x, index, dim_size=sets)` (PyG's layer needs `index`; from `ptr`: \
         `torch.repeat_interleave(torch.arange(sets), ptr.diff())`)"
    );
    Ok(())
}

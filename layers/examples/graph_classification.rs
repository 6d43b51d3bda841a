//! Graph classification with two `MemPooling` layers, in the spirit of PyG's
//! `examples/mem_pool.py` (Khasahmadi et al., "Memory-Based Graph Networks", ICLR 2020).
//!
//! Model (`hidden = 32` as in PyG):
//! 1. a linear input layer `Linear(F, hidden)`;
//! 2. `--layers` residual message-passing blocks built from the core's gather /
//!    scatter ops: `h ← h + LeakyReLU(h·W_selfᵀ + mean_{j → i} h_j·W_nbᵀ + b)`
//!    (PyG's example uses GATConv + BatchNorm blocks; this is the simplest block that
//!    mixes neighbours, written with `gather_rows` and `scatter_add`);
//! 3. `MemPooling(hidden, 80, heads = 5, num_clusters = 10)`, dropout 0.1, LeakyReLU;
//! 4. `MemPooling(80, classes, heads = 5, num_clusters = 1)`, LeakyReLU, log-softmax.
//!
//! Training alternates as PyG's example does, every epoch: first one pass of
//! supervised steps (NLL loss, one Adam step per batch of 20 graphs) with the keys `k`
//! of both pooling layers frozen (`set_requires_grad(false)`, PyG's
//! `k.requires_grad = False`); then one step on the KL loss of both layers, summed
//! over every training batch and divided by the number of training graphs, with every
//! parameter trainable. One Adam over all parameters: lr 2e-3, weight decay 1e-4; as in
//! PyTorch, a frozen parameter gets no gradient and Adam leaves it and its state alone,
//! so the keys move only at the KL steps. The learning rate halves every 500 epochs
//! (`StepLR(500, 0.5)`, PyG's `lr *= 0.5` at `(e + 1) % 500 == 0`). Reported test accuracy is the one at the best
//! validation accuracy so far, as in PyG's example, with early stopping after
//! `--patience` epochs without improvement.
//!
//! Data: by default the synthetic set described in [`synthetic`]; `--tu-dir PATH`
//! reads a TU Dortmund dataset (e.g. `PROTEINS_full`, as PyG's example uses). Splits
//! as in PyG's example: the graphs are shuffled once (seeded), the first 10 % are the
//! test set, the next 10 % the validation set, the rest the training set. Features are
//! standardised with the training graphs' per-column mean and standard deviation.
//!
//! Run `cargo run --release -p readout-layers --example graph_classification -- --help`.

// `LayerError` is the library's error type, returned as is (as the library does).
#![allow(clippy::result_large_err)]

#[path = "common/args.rs"]
mod args;
#[path = "common/nn.rs"]
mod nn;
#[path = "common/tu.rs"]
mod tu;

use readout_layers::PygWeights;
use std::path::PathBuf;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use readout_core::{Tape, Tensor, Var};
use readout_layers::mem_pool::PoolArgs;
use readout_layers::{
    Adam, Bound, LayerError, LrScheduler, MemPooling, Optimizer, Parameter, Parameters, StepLR,
    init,
};

use args::Args;
use nn::{leaky_relu, linear};
use tu::{Dataset, Graph};

const HELP: &str = "\
Graph classification with MemPooling (PyG's examples/mem_pool.py in spirit).

usage: cargo run --release -p readout-layers --example graph_classification -- [options]

options:
  --tu-dir PATH      read a TU Dortmund dataset (NAME_A.txt, NAME_graph_indicator.txt,
                     NAME_graph_labels.txt, NAME_node_attributes.txt) from PATH or PATH/raw
                     instead of generating the synthetic set
  --graphs N         synthetic graphs to generate                        [default 1000]
  --noise S          synthetic node-feature noise (standard deviation)   [default 1.0]
  --epochs E         training epochs                                     [default 60]
  --patience P       stop after P epochs without a better validation accuracy [default 200]
  --seed S           seed of the data, the split, the initialisation and dropout [default 0]
  --hidden H         hidden channels                                     [default 32]
  --layers L         message-passing blocks                              [default 3]
  --batch-size B     graphs per batch                                    [default 20]
  --help             this text";

/// The synthetic graph-classification set.
///
/// Every graph is made of three *communities* of 4 to 10 nodes each. A community has a
/// *type* out of four; each type has a fixed prototype feature vector in ℝ⁸ (drawn
/// once from N(0, 1) and scaled to norm 2), and a node's features are its community's
/// prototype plus N(0, noise²) noise per coordinate — with the default noise a single
/// node's type is ambiguous. Inside a community, a ring keeps the nodes connected and
/// every other pair is linked with probability 0.3; consecutive communities are joined
/// by one or two random bridge edges. Edges are undirected (both directions stored).
///
/// The label is the number of *distinct* community types in the graph minus one
/// (0, 1 or 2), drawn uniformly first, so the classes are balanced; the types are then
/// chosen to have exactly that many distinct values.
///
/// Why pooling matters: the label is a property of the graph's clusters, not of any
/// node — no node, nor its neighbourhood, knows how many kinds of community the graph
/// holds. A readout has to group the nodes into clusters (message passing denoises the
/// features within a community) and count the kinds that are occupied. A plain mean of
/// node features mixes the prototypes in proportion to community sizes, which vary, so
/// the count is not a simple function of it; `MemPooling`'s soft assignment of nodes to
/// learned keys is exactly a clustering, and its second layer reads the cluster
/// occupancy. (That is the design argument; this example does not train a
/// mean-readout baseline to measure it.)
fn synthetic(seed: u64, graphs: usize, noise: f64) -> Dataset {
    const F: usize = 8;
    const TYPES: usize = 4;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5359_4e54_4845_5449);
    let protos: Vec<Vec<f64>> = (0..TYPES)
        .map(|_| {
            let v: Vec<f64> = (0..F).map(|_| gauss(&mut rng)).collect();
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-9);
            v.into_iter().map(|a| 2.0 * a / norm).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(graphs);
    for _ in 0..graphs {
        let label = rng.random_range(0..3usize);
        let distinct = label + 1;
        let mut kinds: Vec<usize> = (0..TYPES).collect();
        kinds.shuffle(&mut rng);
        let mut types: Vec<usize> = match distinct {
            1 => vec![kinds[0]; 3],
            2 => vec![kinds[0], kinds[0], kinds[1]],
            _ => vec![kinds[0], kinds[1], kinds[2]],
        };
        types.shuffle(&mut rng);
        let mut x = Vec::new();
        let mut edges = Vec::new();
        let mut starts = Vec::new();
        let mut n = 0usize;
        for &t in &types {
            let size = rng.random_range(4..=10usize);
            starts.push((n, size));
            for _ in 0..size {
                for &p in &protos[t] {
                    x.push((p + noise * gauss(&mut rng)) as f32);
                }
            }
            for a in 0..size {
                for b in a + 1..size {
                    if b == a + 1 || (a == 0 && b == size - 1) || rng.random_bool(0.3) {
                        edges.push((n + a, n + b));
                        edges.push((n + b, n + a));
                    }
                }
            }
            n += size;
        }
        for w in starts.windows(2) {
            let ((s0, n0), (s1, n1)) = (w[0], w[1]);
            for _ in 0..rng.random_range(1..=2usize) {
                let a = s0 + rng.random_range(0..n0);
                let b = s1 + rng.random_range(0..n1);
                edges.push((a, b));
                edges.push((b, a));
            }
        }
        out.push(Graph {
            x,
            nodes: n,
            edges,
            label,
        });
    }
    Dataset {
        name: format!("synthetic ({graphs} graphs, noise {noise})"),
        graphs: out,
        num_features: F,
        num_classes: 3,
    }
}

/// A standard normal draw.
fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Graphs concatenated into one disjoint graph, PyG's `Batch`.
struct Batch {
    /// `[N, F]`.
    x: Tensor<f32>,
    /// Edge sources and targets, global node ids.
    src: Vec<usize>,
    dst: Vec<usize>,
    /// `1 / in-degree` per node (0 for isolated nodes), `[N, 1]`.
    inv_deg: Tensor<f32>,
    /// The graph of each node (PyG's `batch`).
    batch: Vec<i64>,
    labels: Vec<usize>,
}

impl Batch {
    fn new(graphs: &[&Graph], f: usize) -> Result<Self, LayerError> {
        let mut x = Vec::new();
        let (mut src, mut dst, mut batch, mut labels) = (vec![], vec![], vec![], vec![]);
        let mut offset = 0;
        for (g, graph) in graphs.iter().enumerate() {
            x.extend_from_slice(&graph.x);
            for &(s, t) in &graph.edges {
                src.push(offset + s);
                dst.push(offset + t);
            }
            batch.extend(std::iter::repeat_n(g as i64, graph.nodes));
            labels.push(graph.label);
            offset += graph.nodes;
        }
        let mut deg = vec![0.0f32; offset];
        for &t in &dst {
            deg[t] += 1.0;
        }
        let inv: Vec<f32> = deg
            .iter()
            .map(|&d| if d > 0.0 { 1.0 / d } else { 0.0 })
            .collect();
        Ok(Batch {
            x: Tensor::from_vec(&[offset, f], x)?,
            src,
            dst,
            inv_deg: Tensor::from_vec(&[offset, 1], inv)?,
            batch,
            labels,
        })
    }

    fn graphs(&self) -> usize {
        self.labels.len()
    }
}

/// The network: every parameter in `params`, the pooling layers' keys last (at
/// `keys[0]` and `keys[1]`).
struct Net {
    params: Parameters,
    keys: [usize; 2],
    mem1: MemPooling,
    mem2: MemPooling,
    layers: usize,
    dropout: f32,
}

/// Positions in `params`.
const EMBED_W: usize = 0;
const EMBED_B: usize = 1;
fn conv(i: usize) -> usize {
    2 + 3 * i
}

impl Net {
    fn new(
        f: usize,
        classes: usize,
        hidden: usize,
        layers: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self, LayerError> {
        let mut list = Vec::new();
        let (w, b) = init::linear(rng, f, hidden);
        list.push(Parameter::new("node_embed.weight", w));
        list.push(Parameter::new("node_embed.bias", b));
        for i in 0..layers {
            let (ws, b) = init::linear(rng, hidden, hidden);
            let (wn, _) = init::linear(rng, hidden, hidden);
            list.push(Parameter::new(format!("conv.{i}.self.weight"), ws));
            list.push(Parameter::new(format!("conv.{i}.neighbour.weight"), wn));
            list.push(Parameter::new(format!("conv.{i}.bias"), b));
        }
        let mut mem1 = MemPooling::new(hidden, 80, 5, 10, 1.0)?;
        let mut mem2 = MemPooling::new(80, classes, 5, 1, 1.0)?;
        mem1.reset_parameters(rng);
        mem2.reset_parameters(rng);
        let mut keys = Vec::new();
        // Each layer's `k`, `conv.weight`, `lin.weight`: the keys go last, so that the
        // other positions do not depend on how many keys there are.
        for (name, m) in [("mem1", &mem1), ("mem2", &mem2)] {
            for p in m.parameters().iter() {
                let full = format!("{name}.{}", p.name());
                if p.name() == "k" {
                    keys.push(Parameter::new(full, p.value().clone()));
                } else {
                    list.push(Parameter::new(full, p.value().clone()));
                }
            }
        }
        let keys_at = [list.len(), list.len() + 1];
        list.extend(keys);
        Ok(Net {
            params: Parameters::new(list),
            keys: keys_at,
            mem1,
            mem2,
            layers,
            dropout: 0.1,
        })
    }

    fn numel(&self) -> usize {
        self.params.numel()
    }

    /// Freezes (or unfreezes) both pooling layers' keys.
    fn set_keys_trainable(&mut self, trainable: bool) {
        for k in self.keys {
            self.params.at_mut(k).set_requires_grad(trainable);
        }
    }

    /// `(log-probabilities [B, C], kl_loss(S1) + kl_loss(S2))`. With `dropout_rng` the
    /// training-mode dropout is applied.
    fn forward(
        &self,
        tape: &mut Tape<f32>,
        vars: &Bound,
        b: &Batch,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Var, Var), LayerError> {
        let n = b.x.shape()[0];
        let x = tape.constant(b.x.clone());
        let mut h = linear(tape, x, vars.var(EMBED_W), Some(vars.var(EMBED_B)))?;
        for i in 0..self.layers {
            let c = conv(i);
            // mean over in-neighbours: gather the sources, scatter-add into the targets.
            let msg = tape.gather_rows(h, &b.src)?;
            let agg = tape.scatter_add(msg, &b.dst, n)?;
            let agg = tape.mask_mul(agg, b.inv_deg.clone())?;
            let own = linear(tape, h, vars.var(c), Some(vars.var(c + 2)))?;
            let nb = linear(tape, agg, vars.var(c + 1), None)?;
            let z = tape.add(own, nb)?;
            let z = leaky_relu(tape, z, 0.01)?;
            h = tape.add(h, z)?;
        }
        let m1 = 2 + 3 * self.layers;
        let [k1, k2] = self.keys;
        let p1 = Bound::from_vars(vec![vars.var(k1), vars.var(m1), vars.var(m1 + 1)]);
        let p2 = Bound::from_vars(vec![vars.var(k2), vars.var(m1 + 2), vars.var(m1 + 3)]);
        let batch_size = b.graphs();
        let mut pooled1 = self.mem1.forward_on(
            tape,
            &p1,
            h,
            PoolArgs::new().batch(&b.batch).batch_size(batch_size),
        )?;
        let mut out1 = pooled1.out();
        if let Some(rng) = dropout_rng {
            let keep = 1.0 - self.dropout;
            let v = tape.value(out1)?;
            let mask: Vec<f32> = (0..v.numel())
                .map(|_| {
                    if rng.random::<f32>() < keep {
                        1.0 / keep
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(v.shape(), mask)?;
            out1 = tape.mask_mul(out1, mask)?;
        }
        let a1 = leaky_relu(tape, out1, 0.01)?;
        let mut pooled2 = self.mem2.forward_on(tape, &p2, a1, PoolArgs::new())?;
        let classes = self.mem2.out_channels();
        let z = leaky_relu(tape, pooled2.out(), 0.01)?;
        let z = tape.reshape(z, &[batch_size, classes])?;
        let logp = log_softmax(tape, z)?;
        let kl1 = pooled1.kl_loss(tape)?;
        let kl2 = pooled2.kl_loss(tape)?;
        let kl = tape.add(kl1, kl2)?;
        Ok((logp, kl))
    }
}

/// Row-wise `log_softmax` of `z [B, C]`: `z − max − ln Σ exp(z − max)`, the max taken
/// as a constant (it cancels in the value and the gradient).
fn log_softmax(tape: &mut Tape<f32>, z: Var) -> Result<Var, LayerError> {
    let v = tape.value(z)?;
    let (rows, cols) = (v.shape()[0], v.shape()[1]);
    let max: Vec<f32> = v
        .data()
        .chunks(cols)
        .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let max = tape.constant(Tensor::from_vec(&[rows, 1], max)?);
    let zs = tape.sub(z, max)?;
    let e = tape.exp(zs)?;
    let s = tape.sum_rows(e)?;
    let s = tape.reshape(s, &[rows, 1])?;
    let lse = tape.ln(s)?;
    Ok(tape.sub(zs, lse)?)
}

/// `mean_b −logp[b, label_b]`.
fn nll(tape: &mut Tape<f32>, logp: Var, labels: &[usize]) -> Result<Var, LayerError> {
    let shape = tape.value(logp)?.shape().to_vec();
    let mut onehot = vec![0.0f32; shape[0] * shape[1]];
    for (b, &l) in labels.iter().enumerate() {
        onehot[b * shape[1] + l] = 1.0;
    }
    let picked = tape.mask_mul(logp, Tensor::from_vec(&shape, onehot)?)?;
    let s = tape.sum(picked)?;
    Ok(tape.scale(s, -1.0 / labels.len() as f32)?)
}

/// Standardises every feature column with the mean and standard deviation over the
/// nodes of `train` (columns with no spread are only centred).
fn standardise(graphs: &mut [Graph], train: &[usize], f: usize) {
    let mut sum = vec![0.0f64; f];
    let mut sq = vec![0.0f64; f];
    let mut count = 0usize;
    for &i in train {
        for row in graphs[i].x.chunks(f) {
            for (c, &v) in row.iter().enumerate() {
                sum[c] += f64::from(v);
                sq[c] += f64::from(v) * f64::from(v);
            }
            count += 1;
        }
    }
    let n = count.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std: Vec<f64> = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| {
            let var = (s / n - m * m).max(0.0);
            if var > 1e-12 { var.sqrt() } else { 1.0 }
        })
        .collect();
    for g in graphs.iter_mut() {
        for row in g.x.chunks_mut(f) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = ((f64::from(*v) - mean[c]) / std[c]) as f32;
            }
        }
    }
}

struct Config {
    tu_dir: Option<PathBuf>,
    graphs: usize,
    noise: f64,
    epochs: usize,
    patience: usize,
    seed: u64,
    hidden: usize,
    layers: usize,
    batch_size: usize,
}

fn parse() -> Result<Option<Config>, String> {
    let mut a = Args::from_env();
    if a.flag("--help") || a.flag("-h") {
        return Ok(None);
    }
    let c = Config {
        tu_dir: a.value::<String>("--tu-dir")?.map(PathBuf::from),
        graphs: a.value("--graphs")?.unwrap_or(1000),
        noise: a.value("--noise")?.unwrap_or(1.0),
        epochs: a.value("--epochs")?.unwrap_or(60),
        patience: a.value("--patience")?.unwrap_or(200),
        seed: a.value("--seed")?.unwrap_or(0),
        hidden: a.value("--hidden")?.unwrap_or(32),
        layers: a.value("--layers")?.unwrap_or(3),
        batch_size: a.value("--batch-size")?.unwrap_or(20),
    };
    a.finish()?;
    if c.batch_size == 0 || c.hidden == 0 {
        return Err("--batch-size and --hidden must be ≥ 1".into());
    }
    if c.tu_dir.is_none() && c.graphs < 10 {
        return Err("--graphs must be ≥ 10 (10 % of them form the test set)".into());
    }
    if !(c.noise.is_finite() && c.noise >= 0.0) {
        return Err("--noise must be finite and ≥ 0".into());
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

/// Accuracy of the model on `batches` (no dropout, nothing recorded).
fn accuracy(net: &Net, batches: &[Batch]) -> Result<f64, LayerError> {
    let (mut right, mut total) = (0usize, 0usize);
    for b in batches {
        let mut tape = Tape::<f32>::new();
        tape.set_recording(false);
        let params = net.params.bind(&mut tape, false);
        let (logp, _) = net.forward(&mut tape, &params, b, None)?;
        let v = tape.value(logp)?;
        let c = v.shape()[1];
        for (row, &l) in v.data().chunks(c).zip(&b.labels) {
            let arg = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (i, &p)| {
                        if p > acc.1 { (i, p) } else { acc }
                    },
                )
                .0;
            right += usize::from(arg == l);
            total += 1;
        }
    }
    Ok(right as f64 / total.max(1) as f64)
}

fn batches_of(ds: &Dataset, idx: &[usize], bs: usize) -> Result<Vec<Batch>, LayerError> {
    idx.chunks(bs)
        .map(|c| {
            let gs: Vec<&Graph> = c.iter().map(|&i| &ds.graphs[i]).collect();
            Batch::new(&gs, ds.num_features)
        })
        .collect()
}

fn real_main(cfg: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let mut ds = match &cfg.tu_dir {
        Some(dir) => tu::read_tu(dir)?,
        None => synthetic(cfg.seed, cfg.graphs, cfg.noise),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..ds.graphs.len()).collect();
    order.shuffle(&mut rng);
    let tenth = ds.graphs.len() / 10;
    if tenth == 0 {
        return Err(format!("{} graphs: too few to split 80/10/10", ds.graphs.len()).into());
    }
    let test_idx = order[..tenth].to_vec();
    let val_idx = order[tenth..2 * tenth].to_vec();
    let mut train_idx = order[2 * tenth..].to_vec();
    standardise(&mut ds.graphs, &train_idx, ds.num_features);

    let nodes: usize = ds.graphs.iter().map(|g| g.nodes).sum();
    let edges: usize = ds.graphs.iter().map(|g| g.edges.len()).sum();
    let mut per_class = vec![0usize; ds.num_classes];
    for g in &ds.graphs {
        per_class[g.label] += 1;
    }
    println!(
        "{}: {} graphs, {:.1} nodes and {:.1} directed edges per graph, {} features, {} classes {:?}",
        ds.name,
        ds.graphs.len(),
        nodes as f64 / ds.graphs.len() as f64,
        edges as f64 / ds.graphs.len() as f64,
        ds.num_features,
        ds.num_classes,
        per_class
    );
    println!(
        "split: {} train / {} validation / {} test; batch size {}",
        train_idx.len(),
        val_idx.len(),
        test_idx.len(),
        cfg.batch_size
    );
    let mut net = Net::new(
        ds.num_features,
        ds.num_classes,
        cfg.hidden,
        cfg.layers,
        &mut rng,
    )?;
    println!(
        "model: Linear({}, {h}) → {} message-passing blocks → MemPooling({h}, 80, 5, 10) → MemPooling(80, {}, 5, 1); {} parameters",
        ds.num_features,
        cfg.layers,
        ds.num_classes,
        net.numel(),
        h = cfg.hidden
    );
    let val = batches_of(&ds, &val_idx, cfg.batch_size)?;
    let test = batches_of(&ds, &test_idx, cfg.batch_size)?;
    let mut adam = Adam::with(2e-3, (0.9, 0.999), 1e-8, 1e-4)?;
    let mut schedule = StepLR::new(&adam, 500, 0.5)?;
    let n_train = train_idx.len() as f32;

    println!(
        "{:>5} {:>10} {:>10} {:>8} {:>8} {:>13} {:>8}",
        "epoch", "train nll", "kl/graph", "val acc", "test acc", "test@best val", "s/epoch"
    );
    let (mut best_val, mut test_at_best, mut best_epoch) = (-1.0f64, 0.0f64, 0usize);
    let mut patience = cfg.patience;
    let start = Instant::now();
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        train_idx.shuffle(&mut rng);
        let train = batches_of(&ds, &train_idx, cfg.batch_size)?;

        // Supervised steps, keys frozen (bound as constants: no gradient, no update).
        net.set_keys_trainable(false);
        let mut nll_sum = 0.0f64;
        for b in &train {
            let mut tape = Tape::<f32>::new();
            let params = net.params.bind(&mut tape, true);
            let (logp, _) = net.forward(&mut tape, &params, b, Some(&mut rng))?;
            let loss = nll(&mut tape, logp, &b.labels)?;
            nll_sum += f64::from(tape.value(loss)?.item());
            let grads = tape.backward(loss)?;
            net.params.accumulate(&params, &grads);
            adam.step(&mut net.params);
            net.params.zero_grad();
        }

        // One KL step: Σ_batches kl / (training graphs), everything trainable.
        net.set_keys_trainable(true);
        let mut kl_sum = 0.0f64;
        for b in &train {
            let mut tape = Tape::<f32>::new();
            let params = net.params.bind(&mut tape, true);
            let (_, kl) = net.forward(&mut tape, &params, b, Some(&mut rng))?;
            let loss = tape.scale(kl, 1.0 / n_train)?;
            kl_sum += f64::from(tape.value(loss)?.item());
            let grads = tape.backward(loss)?;
            net.params.accumulate(&params, &grads);
        }
        adam.step(&mut net.params);
        net.params.zero_grad();
        schedule.step(&mut adam)?;

        let val_acc = accuracy(&net, &val)?;
        let test_acc = accuracy(&net, &test)?;
        if val_acc > best_val {
            best_val = val_acc;
            test_at_best = test_acc;
            best_epoch = epoch;
            patience = cfg.patience;
        } else {
            patience = patience.saturating_sub(1);
        }
        println!(
            "{:>5} {:>10.4} {:>10.3e} {:>8.3} {:>8.3} {:>13.3} {:>8.2}",
            epoch,
            nll_sum / train.len().max(1) as f64,
            kl_sum,
            val_acc,
            test_acc,
            test_at_best,
            t0.elapsed().as_secs_f64()
        );
        if patience == 0 {
            println!(
                "early stopping: no better validation accuracy for {} epochs",
                cfg.patience
            );
            break;
        }
    }
    println!();
    let mut test_classes = vec![0usize; ds.num_classes];
    for &i in &test_idx {
        test_classes[ds.graphs[i].label] += 1;
    }
    let majority = test_classes.iter().copied().max().unwrap_or(0) as f64 / test_idx.len() as f64;
    println!(
        "best validation accuracy {best_val:.3} at epoch {best_epoch}; test accuracy there {test_at_best:.3} \
         (majority class of the test set: {majority:.3}); {:.1} s in all",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

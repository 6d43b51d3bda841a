//! Learning the median of a set: the experiment of the Equilibrium Aggregation paper
//! (Bartunov et al., 2022) that PyG ships as `examples/equilibrium_median.py`.
//!
//! Each training step draws one set of 100 numbers from Normal(0.5, 0.4),
//! Gamma(0.2, rate 0.5) or Uniform(0, 1) (each distribution with probability 1/3),
//! runs the model on it and takes one Adam step (lr 1e-3) on PyG's loss
//! `‖y − median‖₂ / 100`, where `y` is the model's `[1, 10]` output and the median is
//! broadcast to all 10 entries (so every output is trained to be the median; the
//! prediction reported here is their mean). The median is `torch.median`'s: for an
//! even count the lower of the two middle values.
//!
//! Methods, trained on the same stream of sets:
//! - `equilibrium`: PyG's `EquilibriumAggregation(1, 10, [256, 256], grad_iter)`,
//!   trained through the unrolled inner optimisation (`InnerGrad::Record`: with 100 elements
//!   per set, recording is faster than `InnerGrad::Adjoint`, and memory does not matter);
//! - `mean-MLP`: an MLP `1 → 256 → 256 → 10` (tanh) on the set's mean: mean pooling
//!   of the raw values, then a learned map, about the same parameter count;
//! - `DeepSets`: mean pooling of learned features, `ρ(mean_i φ(x_i))` with
//!   `φ: 1 → 256 → 256` and `ρ: 256 → 10` (tanh), again about the same count;
//! - `sample mean`: the untrained set mean, the answer mean pooling gives for free.
//!
//! Run `cargo run --release -p readout-layers --example median -- --help` for flags.

// `LayerError` is the library's error type, returned as is (as the library does).
#![allow(clippy::result_large_err)]

#[path = "common/args.rs"]
mod args;
#[path = "common/nn.rs"]
mod nn;

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use readout_core::{Tape, Tensor, Var};
use readout_layers::{
    Adam, EquilibriumAggregation, InnerGrad, LayerError, Optimizer, Parameters, Segments,
};

use args::Args;
use nn::{Act, Mlp};

/// Elements per set (PyG's `input_size`).
const SET_SIZE: usize = 100;
/// Outputs of every model (PyG's `embedding_size`).
const OUT: usize = 10;

const HELP: &str = "\
Learn the median of a set of 100 numbers with EquilibriumAggregation, against mean pooling.

usage: cargo run --release -p readout-layers --example median -- [options]

options:
  --steps N        training steps (one set each) per method   [default 15000]
  --seed S         seed of the data, the held-out sets and the initialisation [default 0]
  --grad-iter K    inner gradient steps of EquilibriumAggregation [default 1]
  --threads T      worker threads; the methods train concurrently [default 2]
  --eval-sets M    held-out sets per distribution for the final table [default 300]
  --curve-points P held-out evaluations along training for the curves [default 30]
  --plot FILE.svg  also draw the learning curves and the final errors as SVG
  --help           this text

Results do not depend on --threads: each method trains on its own thread with its
own generator, and every method sees the same sets in the same order.";

/// The three distributions of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dist {
    Normal,
    Gamma,
    Uniform,
}

const DISTS: [Dist; 3] = [Dist::Normal, Dist::Gamma, Dist::Uniform];

impl Dist {
    fn name(self) -> &'static str {
        match self {
            Dist::Normal => "normal",
            Dist::Gamma => "gamma",
            Dist::Uniform => "uniform",
        }
    }

    /// One draw, in `f64`.
    fn sample(self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Dist::Normal => 0.5 + 0.4 * std_normal(rng),
            // torch.distributions.Gamma(concentration 0.2, rate 0.5): scale 2.
            Dist::Gamma => 2.0 * std_gamma(rng, 0.2),
            Dist::Uniform => rng.random::<f64>(),
        }
    }
}

/// A standard normal draw (Box–Muller).
fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 − U lies in (0, 1], so its log is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(shape, 1) draw: Marsaglia and Tsang's method for `shape ≥ 1`, and
/// `G(shape) = G(shape + 1) · U^(1/shape)` below 1.
fn std_gamma(rng: &mut ChaCha8Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.random::<f64>();
        return std_gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let z = std_normal(rng);
        let v = 1.0 + c * z;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// One set: its distribution, its values and its median.
struct Set {
    dist: Dist,
    x: Vec<f32>,
    median: f32,
}

/// `torch.median`: the lower middle value.
fn median(x: &[f32]) -> f32 {
    let mut s = x.to_vec();
    s.sort_by(f32::total_cmp);
    s[(s.len() - 1) / 2]
}

fn draw_set(rng: &mut ChaCha8Rng, dist: Dist) -> Set {
    let x: Vec<f32> = (0..SET_SIZE).map(|_| dist.sample(rng) as f32).collect();
    let median = median(&x);
    Set { dist, x, median }
}

/// The training stream: a distribution chosen uniformly, then a set from it.
fn next_training_set(rng: &mut ChaCha8Rng) -> Set {
    let dist = DISTS[rng.random_range(0..DISTS.len())];
    draw_set(rng, dist)
}

/// Held-out sets, stored batched for the models' batched inference paths.
struct HeldOut {
    dist: Vec<Dist>,
    /// Every set's values, concatenated: `[M·100, 1]`.
    x: Vec<f32>,
    median: Vec<f32>,
}

impl HeldOut {
    fn new(seed: u64, per_dist: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x48454c44_4f555421);
        let mut h = HeldOut {
            dist: Vec::new(),
            x: Vec::new(),
            median: Vec::new(),
        };
        for d in DISTS {
            for _ in 0..per_dist {
                let s = draw_set(&mut rng, d);
                h.dist.push(s.dist);
                h.x.extend_from_slice(&s.x);
                h.median.push(s.median);
            }
        }
        h
    }

    fn len(&self) -> usize {
        self.median.len()
    }

    /// CSR boundaries of the sets.
    fn ptr(&self) -> Vec<i64> {
        (0..=self.len()).map(|i| (i * SET_SIZE) as i64).collect()
    }

    /// Every `step`-th set of each distribution (a smaller set for the curves).
    fn subsample(&self, step: usize) -> HeldOut {
        let mut h = HeldOut {
            dist: Vec::new(),
            x: Vec::new(),
            median: Vec::new(),
        };
        for i in (0..self.len()).step_by(step.max(1)) {
            h.dist.push(self.dist[i]);
            h.x.extend_from_slice(&self.x[i * SET_SIZE..(i + 1) * SET_SIZE]);
            h.median.push(self.median[i]);
        }
        h
    }

    /// Mean absolute error of `pred` against the medians: per distribution, then all.
    fn errors(&self, pred: &[f32]) -> [f64; 4] {
        let mut sum = [0.0f64; 4];
        let mut count = [0usize; 4];
        for ((&d, &m), &p) in self.dist.iter().zip(&self.median).zip(pred) {
            let k = DISTS.iter().position(|&e| e == d).unwrap_or(0);
            let e = f64::from((p - m).abs());
            sum[k] += e;
            count[k] += 1;
            sum[3] += e;
            count[3] += 1;
        }
        let mut out = [0.0; 4];
        for k in 0..4 {
            out[k] = if count[k] > 0 {
                sum[k] / count[k] as f64
            } else {
                f64::NAN
            };
        }
        out
    }
}

/// A trainable model of the comparison.
enum Model {
    Equilibrium(EquilibriumAggregation),
    MeanMlp(Mlp),
    DeepSets { phi: Mlp, rho: Mlp },
}

impl Model {
    fn label(&self) -> String {
        match self {
            Model::Equilibrium(l) => format!("equilibrium (grad_iter {})", l.grad_iter()),
            Model::MeanMlp(_) => "mean-MLP (MLP on the mean)".into(),
            Model::DeepSets { .. } => "DeepSets (mean of φ(x))".into(),
        }
    }

    fn short(&self) -> &'static str {
        match self {
            Model::Equilibrium(_) => "equilibrium",
            Model::MeanMlp(_) => "mean-MLP",
            Model::DeepSets { .. } => "DeepSets",
        }
    }

    fn numel(&self) -> usize {
        match self {
            Model::Equilibrium(l) => l.parameters().numel(),
            Model::MeanMlp(m) => m.parameters().numel(),
            Model::DeepSets { phi, rho } => phi.parameters().numel() + rho.parameters().numel(),
        }
    }

    /// The parameter lists, for the optimiser and `zero_grad` (one or two).
    fn param_lists(&mut self) -> Vec<&mut Parameters> {
        match self {
            Model::Equilibrium(l) => vec![l.parameters_mut()],
            Model::MeanMlp(m) => vec![m.parameters_mut()],
            Model::DeepSets { phi, rho } => vec![phi.parameters_mut(), rho.parameters_mut()],
        }
    }

    /// The `[sets, 10]` output for `x [sets·100, 1]` grouped by `ptr`, on `tape` with
    /// parameters bound (trainable or not) by the caller.
    fn forward_on(
        &self,
        tape: &mut Tape<f32>,
        bound: &[readout_layers::Bound],
        x: Var,
        ptr: &[i64],
        mode: InnerGrad,
    ) -> Result<Var, LayerError> {
        match self {
            Model::Equilibrium(l) => {
                l.forward_on(tape, &bound[0], x, Segments::Ptr(ptr), None, mode)
            }
            Model::MeanMlp(m) => {
                let p: Vec<usize> = ptr.iter().map(|&v| v as usize).collect();
                let mean = tape.segment_mean(x, &p)?;
                m.forward(tape, &bound[0], mean)
            }
            Model::DeepSets { phi, rho } => {
                let p: Vec<usize> = ptr.iter().map(|&v| v as usize).collect();
                let h = phi.forward(tape, &bound[0], x)?;
                let h = tape.tanh(h)?;
                let pooled = tape.segment_mean(h, &p)?;
                rho.forward(tape, &bound[1], pooled)
            }
        }
    }

    fn bind(&self, tape: &mut Tape<f32>, trainable: bool) -> Vec<readout_layers::Bound> {
        match self {
            Model::Equilibrium(l) => vec![l.parameters().bind(tape, trainable)],
            Model::MeanMlp(m) => vec![m.parameters().bind(tape, trainable)],
            Model::DeepSets { phi, rho } => vec![
                phi.parameters().bind(tape, trainable),
                rho.parameters().bind(tape, trainable),
            ],
        }
    }

    /// One Adam step on PyG's loss for one set; returns the loss.
    fn train_step(&mut self, adam: &mut [Adam], set: &Set) -> Result<f32, LayerError> {
        let mut tape = Tape::<f32>::new();
        let bound = self.bind(&mut tape, true);
        let x = tape.constant(Tensor::from_vec(&[SET_SIZE, 1], set.x.clone())?);
        let ptr = [0, SET_SIZE as i64];
        let y = self.forward_on(&mut tape, &bound, x, &ptr, InnerGrad::Record)?;
        // ‖y − median‖₂ / 100, the median broadcast over the 10 outputs.
        let m = tape.scalar(set.median);
        let d = tape.sub(y, m)?;
        let d2 = tape.square(d)?;
        let s = tape.sum(d2)?;
        let norm = tape.sqrt(s)?;
        let loss = tape.scale(norm, 1.0 / SET_SIZE as f32)?;
        let value = tape.value(loss)?.item();
        let grads = tape.backward(loss)?;
        for ((p, b), opt) in self.param_lists().into_iter().zip(&bound).zip(adam) {
            p.accumulate(b, &grads);
            opt.step(p);
            p.zero_grad();
        }
        Ok(value)
    }

    /// Predictions (the mean of the 10 outputs) for every held-out set.
    fn predict(&self, h: &HeldOut) -> Result<Vec<f32>, LayerError> {
        let x = Tensor::from_vec(&[h.x.len(), 1], h.x.clone())?;
        let ptr = h.ptr();
        let y = match self {
            // The inference path: inner gradients computed eagerly, nothing recorded.
            Model::Equilibrium(l) => l.forward(&x, Segments::Ptr(&ptr), None)?,
            _ => {
                let mut tape = Tape::<f32>::new();
                tape.set_recording(false);
                let bound = self.bind(&mut tape, false);
                let xv = tape.constant(x);
                let y = self.forward_on(&mut tape, &bound, xv, &ptr, InnerGrad::Eager)?;
                tape.value(y)?.clone()
            }
        };
        Ok(y.data()
            .chunks(OUT)
            .map(|r| r.iter().sum::<f32>() / OUT as f32)
            .collect())
    }
}

/// CPU time of the calling thread, in seconds, from `/proc/thread-self/stat` (Linux;
/// `None` elsewhere). Unlike wall time it does not grow when other processes share the
/// cores, so it says what a quiet machine would take.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime field 14, stime field 15 (in clock ticks, USER_HZ = 100).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// What a worker reports while it trains.
#[derive(Clone, Default)]
struct Status {
    name: &'static str,
    done: usize,
    running_loss: f64,
    elapsed: Duration,
    finished: bool,
}

/// One point of a learning curve.
#[derive(Clone, Copy)]
struct CurvePoint {
    step: usize,
    /// Mean training loss since the previous point.
    train_loss: f64,
    /// Held-out mean absolute error (all distributions).
    heldout: f64,
}

/// The result of training one method.
struct Trained {
    label: String,
    short: &'static str,
    curve: Vec<CurvePoint>,
    errors: [f64; 4],
    seconds: f64,
    /// CPU seconds of the training thread (`NaN` where unknown).
    cpu_seconds: f64,
}

struct Config {
    steps: usize,
    seed: u64,
    grad_iter: usize,
    threads: usize,
    eval_sets: usize,
    curve_points: usize,
    plot: Option<String>,
}

fn parse() -> Result<Option<Config>, String> {
    let mut a = Args::from_env();
    if a.flag("--help") || a.flag("-h") {
        return Ok(None);
    }
    let c = Config {
        steps: a.value("--steps")?.unwrap_or(15000),
        seed: a.value("--seed")?.unwrap_or(0),
        grad_iter: a.value("--grad-iter")?.unwrap_or(1),
        threads: a.value("--threads")?.unwrap_or(2),
        eval_sets: a.value("--eval-sets")?.unwrap_or(300),
        curve_points: a.value("--curve-points")?.unwrap_or(30),
        plot: a.value("--plot")?,
    };
    a.finish()?;
    if c.threads == 0 {
        return Err("--threads must be ≥ 1".into());
    }
    if c.eval_sets == 0 {
        return Err("--eval-sets must be ≥ 1".into());
    }
    Ok(Some(c))
}

fn build(which: usize, cfg: &Config) -> Result<Model, LayerError> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(31).wrapping_add(which as u64 + 1));
    Ok(match which {
        0 => {
            let mut l = EquilibriumAggregation::new(1, OUT, &[256, 256], cfg.grad_iter, 0.1)?;
            l.reset_parameters(&mut rng);
            Model::Equilibrium(l)
        }
        1 => Model::MeanMlp(Mlp::new("mlp", &[1, 256, 256, OUT], Act::Tanh, &mut rng)),
        _ => Model::DeepSets {
            phi: Mlp::new("phi", &[1, 256, 256], Act::Tanh, &mut rng),
            rho: Mlp::new("rho", &[256, OUT], Act::Tanh, &mut rng),
        },
    })
}

/// Trains method `which` and evaluates it; reports progress into `status[which]`.
fn run(
    which: usize,
    cfg: &Config,
    heldout: &HeldOut,
    curve_set: &HeldOut,
    status: &Mutex<Vec<Status>>,
) -> Result<Trained, LayerError> {
    let mut model = build(which, cfg)?;
    let mut adam: Vec<Adam> = model
        .param_lists()
        .iter()
        .map(|_| Adam::new(1e-3))
        .collect::<Result<_, _>>()?;
    // Every method sees the same sets in the same order.
    let mut data = ChaCha8Rng::seed_from_u64(cfg.seed);
    let every = (cfg.steps / cfg.curve_points.max(1)).max(1);
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let mut curve = vec![CurvePoint {
        step: 0,
        train_loss: f64::NAN,
        heldout: curve_set.errors(&model.predict(curve_set)?)[3],
    }];
    let (mut window_sum, mut window_n) = (0.0f64, 0usize);
    let mut recent = std::collections::VecDeque::with_capacity(200);
    for step in 1..=cfg.steps {
        let set = next_training_set(&mut data);
        let loss = f64::from(model.train_step(&mut adam, &set)?);
        window_sum += loss;
        window_n += 1;
        if recent.len() == 200 {
            recent.pop_front();
        }
        recent.push_back(loss);
        if step % every == 0 || step == cfg.steps {
            let e = curve_set.errors(&model.predict(curve_set)?)[3];
            curve.push(CurvePoint {
                step,
                train_loss: window_sum / window_n as f64,
                heldout: e,
            });
            (window_sum, window_n) = (0.0, 0);
        }
        if step % 10 == 0 || step == cfg.steps {
            let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
            st[which].done = step;
            st[which].running_loss = recent.iter().sum::<f64>() / recent.len() as f64;
            st[which].elapsed = start.elapsed();
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = match (cpu_start, thread_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let errors = heldout.errors(&model.predict(heldout)?);
    {
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        st[which].finished = true;
        st[which].elapsed = start.elapsed();
    }
    Ok(Trained {
        label: model.label(),
        short: model.short(),
        curve,
        errors,
        seconds,
        cpu_seconds,
    })
}

fn progress_line(st: &[Status], steps: usize) -> String {
    let mut s = String::new();
    for (i, m) in st.iter().enumerate() {
        if i > 0 {
            s.push_str(" | ");
        }
        let rate = m.done as f64 / m.elapsed.as_secs_f64().max(1e-9);
        let _ = write!(
            s,
            "{} {}/{} {:.1} steps/s loss {:.5}{}",
            m.name,
            m.done,
            steps,
            if m.done > 0 { rate } else { 0.0 },
            m.running_loss,
            if m.finished { " done" } else { "" }
        );
    }
    s
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

fn real_main(cfg: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let heldout = HeldOut::new(cfg.seed, cfg.eval_sets);
    let curve_set = heldout.subsample((cfg.eval_sets / 50).max(1));
    println!(
        "median of {SET_SIZE} numbers from Normal(0.5, 0.4) / Gamma(0.2, rate 0.5) / Uniform(0, 1); \
         {} steps per method, seed {}, grad_iter {}, {} thread(s); held-out: {} sets per distribution",
        cfg.steps, cfg.seed, cfg.grad_iter, cfg.threads, cfg.eval_sets
    );
    let names = ["equilibrium", "mean-MLP", "DeepSets"];
    let status = Mutex::new(
        names
            .iter()
            .map(|&name| Status {
                name,
                ..Status::default()
            })
            .collect::<Vec<_>>(),
    );
    for w in 0..names.len() {
        let m = build(w, cfg)?;
        println!("  {:<28} {:>7} parameters", m.label(), m.numel());
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Trained, String>>>> =
        Mutex::new((0..names.len()).map(|_| None).collect());
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    std::thread::scope(|scope| {
        for _ in 0..cfg.threads.min(names.len()) {
            scope.spawn(|| {
                loop {
                    let w = next.fetch_add(1, Ordering::Relaxed);
                    if w >= names.len() {
                        break;
                    }
                    let r = run(w, cfg, &heldout, &curve_set, &status).map_err(|e| e.to_string());
                    if r.is_err() {
                        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                        st[w].finished = true;
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[w] = Some(r);
                }
            });
        }
        // Progress: a line rewritten in place on a terminal, one line every 15 s
        // otherwise (logs).
        let mut last_print = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let st = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let all_done = st.iter().all(|s| s.finished);
            if tty {
                eprint!("\r{}\x1b[K", progress_line(&st, cfg.steps));
                let _ = std::io::stderr().flush();
            } else if last_print.elapsed() >= Duration::from_secs(15) || all_done {
                eprintln!(
                    "[{:>5.0} s] {}",
                    start.elapsed().as_secs_f64(),
                    progress_line(&st, cfg.steps)
                );
                last_print = Instant::now();
            }
            if all_done {
                if tty {
                    eprintln!();
                }
                break;
            }
        }
    });
    let mut trained = Vec::new();
    for r in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Some(Ok(t)) => trained.push(t),
            Some(Err(e)) => return Err(e.into()),
            None => return Err("a worker did not report".into()),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let mean_pred: Vec<f32> = heldout
        .x
        .chunks(SET_SIZE)
        .map(|s| s.iter().sum::<f32>() / SET_SIZE as f32)
        .collect();
    let mean_errors = heldout.errors(&mean_pred);

    println!();
    println!(
        "learning curves: held-out mean |prediction − median| on {} sets / mean training loss since the previous row",
        curve_set.len()
    );
    let mut header = format!("{:>7}", "step");
    for t in &trained {
        header.push_str(&format!(" {:>23}", t.short));
    }
    println!("{header}");
    let points = trained[0].curve.len();
    let stride = points.div_ceil(8).max(1);
    for i in (0..points).filter(|i| i % stride == 0 || i + 1 == points) {
        let mut row = format!("{:>7}", trained[0].curve[i].step);
        for t in &trained {
            let p = t.curve[i];
            row.push_str(&format!(" {:>11.5} / {:>9.5}", p.heldout, p.train_loss));
        }
        println!("{row}");
    }
    println!();
    println!(
        "held-out mean |prediction − median| over {} sets per distribution (lower is better)",
        cfg.eval_sets
    );
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "method",
        DISTS[0].name(),
        DISTS[1].name(),
        DISTS[2].name(),
        "all",
        "train s",
        "cpu s",
        "ms/step"
    );
    for t in &trained {
        println!(
            "{:<30} {:>9.5} {:>9.5} {:>9.5} {:>9.5} {:>9.1} {:>9.1} {:>9.2}",
            t.label,
            t.errors[0],
            t.errors[1],
            t.errors[2],
            t.errors[3],
            t.seconds,
            t.cpu_seconds,
            1e3 * t.cpu_seconds / cfg.steps.max(1) as f64
        );
    }
    println!(
        "{:<30} {:>9.5} {:>9.5} {:>9.5} {:>9.5} {:>9} {:>9} {:>9}",
        "sample mean (untrained)",
        mean_errors[0],
        mean_errors[1],
        mean_errors[2],
        mean_errors[3],
        "-",
        "-",
        "-"
    );
    println!(
        "(train s: wall time of the method's thread; cpu s: its CPU time, which does not grow \
         when other processes share the cores; ms/step: cpu s per step, evaluations included)"
    );
    let eq = trained[0].errors[3];
    let best_other = trained[1..]
        .iter()
        .map(|t| t.errors[3])
        .fold(mean_errors[3], f64::min);
    println!();
    println!(
        "equilibrium vs best mean-pooling method (all distributions): {:.5} vs {:.5} ({})",
        eq,
        best_other,
        if eq < best_other {
            format!("{:.2}× lower error", best_other / eq)
        } else {
            format!("{:.2}× higher error", eq / best_other)
        }
    );
    println!("wall time {wall:.1} s");
    if let Some(path) = &cfg.plot {
        std::fs::write(path, svg(cfg, &trained, &mean_errors))?;
        println!("plot written to {path}");
    }
    Ok(())
}

/// Colours of the methods in the plot (the sample mean last).
const COLOURS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f"];

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The learning curves (held-out error against steps, log scale) and the final error
/// per distribution (grouped bars), side by side, as a standalone SVG document.
fn svg(cfg: &Config, trained: &[Trained], mean_errors: &[f64; 4]) -> String {
    let (w, h) = (1100.0, 460.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Learning the median of 100 numbers (seed {}, grad_iter {}, {} steps)</text>"#,
        w / 2.0,
        cfg.seed,
        cfg.grad_iter,
        cfg.steps
    );

    // Left panel: held-out error vs step, log y.
    let (x0, y0, pw, ph) = (70.0, 50.0, 460.0, 340.0);
    let mut lo = f64::INFINITY;
    let mut hi = 0.0f64;
    for t in trained {
        for p in &t.curve {
            if p.heldout.is_finite() && p.heldout > 0.0 {
                lo = lo.min(p.heldout);
                hi = hi.max(p.heldout);
            }
        }
    }
    lo = lo.min(mean_errors[3]);
    hi = hi.max(mean_errors[3]);
    let (llo, lhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let ymap = |v: f64| y0 + ph - (v.max(1e-12).log10() - llo) / (lhi - llo) * ph;
    let max_step = cfg.steps.max(1) as f64;
    let xmap = |st: f64| x0 + st / max_step * pw;
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let mut e = llo;
    while e <= lhi + 1e-9 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(e);
            if v.log10() > lhi + 1e-9 {
                break;
            }
            let y = ymap(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 + pw,
                x0 - 5.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        e += 1.0;
    }
    for i in 0..=5 {
        let st = max_step * i as f64 / 5.0;
        let x = xmap(st);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y0 + ph,
            y0 + ph + 5.0,
            y0 + ph + 18.0,
            st.round()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">training step</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 36.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">held-out mean |prediction − median| (log)</text>"#,
        y0 + ph / 2.0,
        y0 + ph / 2.0
    );
    for (i, t) in trained.iter().enumerate() {
        let pts: Vec<String> = t
            .curve
            .iter()
            .filter(|p| p.heldout.is_finite())
            .map(|p| format!("{:.1},{:.1}", xmap(p.step as f64), ymap(p.heldout)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLOURS[i],
            pts.join(" ")
        );
    }
    let ym = ymap(mean_errors[3]);
    let _ = writeln!(
        s,
        r#"<line x1="{x0}" y1="{ym:.1}" x2="{:.1}" y2="{ym:.1}" stroke="{}" stroke-dasharray="6 4" stroke-width="1.5"/>"#,
        x0 + pw,
        COLOURS[3]
    );
    // Legend.
    let mut labels: Vec<String> = trained.iter().map(|t| t.label.clone()).collect();
    labels.push("sample mean (untrained)".into());
    for (i, l) in labels.iter().enumerate() {
        let ly = y0 + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x0 + pw - 230.0,
            ly - 4.0,
            x0 + pw - 210.0,
            ly - 4.0,
            COLOURS[i],
            if i == 3 {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            x0 + pw - 205.0,
            ly,
            esc(l)
        );
    }

    // Right panel: grouped bars of the final held-out error.
    let (bx0, by0, bw, bh) = (620.0, 50.0, 450.0, 340.0);
    let mut rows: Vec<[f64; 4]> = trained.iter().map(|t| t.errors).collect();
    rows.push(*mean_errors);
    let top = rows
        .iter()
        .flat_map(|r| r.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12)
        * 1.1;
    let _ = writeln!(
        s,
        r##"<rect x="{bx0}" y="{by0}" width="{bw}" height="{bh}" fill="none" stroke="#333"/>"##
    );
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let y = by0 + bh - v / top * bh;
        let _ = writeln!(
            s,
            r##"<line x1="{bx0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.3}</text>"##,
            bx0 + bw,
            bx0 - 5.0,
            y + 4.0,
            v
        );
    }
    let groups = ["normal", "gamma", "uniform", "all"];
    let gw = bw / groups.len() as f64;
    let bar = gw * 0.8 / rows.len() as f64;
    for (g, name) in groups.iter().enumerate() {
        let gx = bx0 + gw * g as f64 + gw * 0.1;
        for (m, r) in rows.iter().enumerate() {
            let v = if r[g].is_finite() { r[g] } else { 0.0 };
            let bh_v = v / top * bh;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {:.5}</title></rect>"#,
                gx + bar * m as f64,
                by0 + bh - bh_v,
                bar * 0.9,
                bh_v,
                COLOURS[m],
                esc(&labels[m]),
                v
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{name}</text>"#,
            bx0 + gw * (g as f64 + 0.5),
            by0 + bh + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">final held-out mean |prediction − median| per distribution</text>"#,
        bx0 + bw / 2.0,
        by0 + bh + 36.0
    );
    let _ = writeln!(s, "</svg>");
    s
}

fn fmt_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let digits = (-v.log10()).ceil() as usize;
        format!("{v:.digits$}")
    }
}

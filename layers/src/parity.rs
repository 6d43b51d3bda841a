//! The parity check: run a PyG reference case (format in `tests/data/README.md`)
//! through readout and measure how far every result is from what PyG computes.
//!
//! For one [`Case`], [`run_case`] builds the layer from the case's constructor
//! arguments and loads its `param.*` tensors as a PyG `state_dict` (so the weight
//! loader is exercised too), runs the forward call the case describes on a recording
//! [`Tape`], forms the loss its `__metadata__.loss` names, differentiates it with
//! respect to every parameter and `input.x` (through the unrolled inner optimisation,
//! second-order terms included), and compares every result with the case's `expect.*`
//! tensors in the fixtures' measure ([`relative_error`]). The forward output of the
//! inference path (what a deployed model runs) is compared as well, as
//! `out (inference path)` (and `S (inference path)` for `MemPooling`).
//!
//! A case is checked on what it holds: every `expect.*` tensor present is compared and
//! every result the case has no expectation for is skipped (and listed in
//! [`CaseReport::absent`]). A forward-only case — no `lossw.*`, no `expect.loss`, no
//! `expect.grad.*`, what a user checking a deployed model exports — runs the forward
//! paths only; [`run_case_forward_only`] does the same for any case, leaving its
//! gradients aside ([`CaseReport::ignored`]). A case with nothing to compare is an
//! error ([`LayerError::NothingToCompare`]).
//!
//! Computation is in `f32` by default — what a deployed model computes; PyG's own
//! float32 run is within 7.3e-6 of the float64 `expect.*` on the reference cases, so
//! [`TOLERANCE`] = 1e-4 leaves room for summation-order differences only.
//! [`run_case_with`] takes [`Precision::F64`] too, where errors are ~1e-12.
//!
//! `cargo run --release -p readout-layers --example parity -- [--out DIR] FILE_OR_DIR...`
//! is the command-line front end.
//!
//! Layers: `EquilibriumAggregation` (`loss = sum(out * lossw.out)`) and `MemPooling`
//! (`loss = sum(out * lossw.out) + sum(S * lossw.S) + kl_weight * kl_loss(S)`, on the
//! default ragged path; `S` and `kl_loss` are compared too, and the inference path's
//! `out` and `S` on the ragged and the dense path).

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;
use std::path::{Path, PathBuf};

use readout_core::{Real, Tape, Tensor, Var};

use crate::case::{
    Case, CaseArgs, EquilibriumArgs, LayerKind, MemPoolingArgs, Worst, relative_error, worst_error,
};
use crate::equilibrium::{EquilibriumAggregation, InnerGrad};
use crate::error::LayerError;
use crate::mem_pool::{Mask, MemPooling, PoolArgs, PoolPath};
use crate::param::{Bound, Parameters};
use crate::raw::RawTensor;
use crate::segments::Segments;
use crate::weights::PygWeights;
use crate::weights::state_dict::{ParamView, save_params};

/// The error (in the fixtures' measure) at or below which a case passes.
pub const TOLERANCE: f64 = 1e-4;

/// The name under which the inference path's forward output is compared with
/// `expect.out`.
pub const INFERENCE_OUT: &str = "out (inference path)";

/// The name under which `MemPooling`'s inference path's `S` is compared with
/// `expect.S`.
pub const INFERENCE_S: &str = "S (inference path)";

/// `MemPooling`'s dense path (PyG's padded computation) `out`, compared with
/// `expect.out`.
pub const DENSE_OUT: &str = "out (dense path)";

/// `MemPooling`'s dense path `S`, compared with `expect.S`.
pub const DENSE_S: &str = "S (dense path)";

/// The floating-point type a case is computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// `f32`: the SIMD fast path, what a deployed model computes.
    F32,
    /// `f64`: scalar kernels; shows the implementation error without rounding noise.
    F64,
}

/// One result compared with its `expect.*` tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorError {
    /// The result's name (`out`, `loss`, `grad.lamb`, [`INFERENCE_OUT`], ...).
    pub name: String,
    /// Its error in the fixtures' measure ([`relative_error`]).
    pub error: f64,
    /// The multi-index (in PyG's shape) of the worst entry.
    pub at: Vec<usize>,
}

impl TensorError {
    /// `name[i, j]`: where the worst entry is.
    pub fn location(&self) -> String {
        let mut s = self.name.clone();
        s.push('[');
        for (k, i) in self.at.iter().enumerate() {
            if k > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "{i}");
        }
        s.push(']');
        s
    }
}

/// What [`run_case`] found for one case.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// The layer it exercises.
    pub layer: LayerKind,
    /// The precision it was computed in.
    pub precision: Precision,
    /// Every result, named like the case's `expect.*` entries without the prefix
    /// (`out`, `loss`, `grad.<key>`, `grad.input.x`; for `MemPooling` also `S` and
    /// `kl_loss`), in PyG's shapes (`grad.conv.weight` is `[1, H, 1, 1]`).
    pub outputs: Vec<(String, RawTensor<f64>)>,
    /// Every comparison, in the order of `outputs`, then [`INFERENCE_OUT`] (and, for
    /// `MemPooling`, [`INFERENCE_S`], [`DENSE_OUT`], [`DENSE_S`]).
    pub errors: Vec<TensorError>,
    /// How far PyG's own float32 run (`pyg32.*`) is from `expect.*`, for context
    /// (`None` when the case holds no `pyg32.*` tensors).
    pub pyg32: Option<Worst>,
    /// Results readout computed that the case holds no `expect.*` tensor for, so were
    /// not compared (`kl_loss` of a case written without it, for example).
    pub absent: Vec<String>,
    /// `expect.*` tensors the case holds but this run left aside on purpose (the loss
    /// and the gradients, in a forward-only run), with the prefix.
    pub ignored: Vec<String>,
    /// Nodes on the tape after the recorded forward pass (and the loss, when the
    /// gradients are checked): an indication of memory use, growing with `grad_iter`.
    pub tape_nodes: usize,
}

impl CaseReport {
    /// The largest error (`None` only when nothing was compared). A NaN counts as
    /// the worst possible.
    pub fn worst(&self) -> Option<&TensorError> {
        let key = |e: &TensorError| {
            if e.error.is_nan() {
                f64::INFINITY
            } else {
                e.error
            }
        };
        let mut worst: Option<&TensorError> = None;
        for e in &self.errors {
            if worst.is_none_or(|w| key(e) > key(w)) {
                worst = Some(e);
            }
        }
        worst
    }

    /// Whether every error is at most `tolerance` (and at least one result was
    /// compared).
    pub fn passed(&self, tolerance: f64) -> bool {
        !self.errors.is_empty() && self.errors.iter().all(|e| e.error <= tolerance)
    }

    /// `ok` when [`passed`](Self::passed), else `FAIL`.
    pub fn status(&self, tolerance: f64) -> &'static str {
        if self.passed(tolerance) { "ok" } else { "FAIL" }
    }

    /// Whether the loss and the gradients were compared (not a forward-only run).
    pub fn gradients_checked(&self) -> bool {
        self.errors.iter().any(|e| e.name.starts_with("grad."))
    }

    /// What was compared, in words: `compared out, S, kl_loss, loss, 4 gradients; 4
    /// other paths` (the inference and dense paths' results) — and what was not: `; not in the case: kl_loss`,
    /// `; ignored: expect.loss, 4 gradients`.
    pub fn coverage(&self) -> String {
        let grads = self
            .errors
            .iter()
            .filter(|e| e.name.starts_with("grad."))
            .count();
        let paths = self.errors.iter().filter(|e| e.name.contains(" (")).count();
        let mut words: Vec<String> = self
            .errors
            .iter()
            .filter(|e| !e.name.starts_with("grad.") && !e.name.contains(" ("))
            .map(|e| e.name.clone())
            .collect();
        if grads > 0 {
            words.push(alloc::format!("{grads} gradients"));
        }
        let mut s = alloc::format!("compared {}", words.join(", "));
        match paths {
            0 => {}
            1 => s.push_str("; 1 other path"),
            n => {
                let _ = write!(s, "; {n} other paths");
            }
        }
        if !self.absent.is_empty() {
            let _ = write!(s, "; not in the case: {}", self.absent.join(", "));
        }
        if !self.ignored.is_empty() {
            let grads = self
                .ignored
                .iter()
                .filter(|k| k.starts_with("expect.grad."))
                .count();
            let mut words: Vec<&str> = self
                .ignored
                .iter()
                .filter(|k| !k.starts_with("expect.grad."))
                .map(String::as_str)
                .collect();
            let counted = alloc::format!("{grads} gradients");
            if grads > 0 {
                words.push(&counted);
            }
            let _ = write!(s, "; ignored: {}", words.join(", "));
        }
        s
    }

    /// The worst error, where it occurs, and PyG's own float32 error:
    /// `worst 3.1e-7 at grad.lamb[0]  (PyG float32: 1.2e-6)`.
    pub fn summary(&self) -> String {
        let mut s = match self.worst() {
            Some(w) => alloc::format!("worst {:.2e} at {}", w.error, w.location()),
            None => String::from("nothing compared"),
        };
        if let Some(p) = &self.pyg32 {
            let _ = write!(s, "  (PyG float32: {:.2e})", p.error);
        }
        s
    }

    /// The one-line result: `ok    NAME  worst 3.1e-7 at grad.lamb[0]  (PyG float32: 1.2e-6)`.
    pub fn line(&self, tolerance: f64) -> String {
        alloc::format!(
            "{:<5} {}  {}",
            self.status(tolerance),
            self.name,
            self.summary()
        )
    }

    /// The results as a safetensors buffer of `F32` tensors named like the case's
    /// `expect.*` entries without the prefix, in PyG's shapes.
    ///
    /// # Errors
    /// [`LayerError::NonFinite`] naming a result that holds a NaN or an infinity
    /// (or a value beyond the `f32` range).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, LayerError> {
        let data: Vec<Vec<f32>> = self
            .outputs
            .iter()
            .map(|(_, t)| {
                // Rounding to f32 is the intent (the file format is F32).
                #[allow(clippy::cast_possible_truncation)]
                t.data().iter().map(|&v| v as f32).collect()
            })
            .collect();
        let views: Vec<ParamView<'_>> = self
            .outputs
            .iter()
            .zip(&data)
            .map(|((name, t), d)| ParamView {
                name,
                shape: t.shape(),
                data: d,
            })
            .collect();
        save_params(&views)
    }

    /// Writes [`to_safetensors`](Self::to_safetensors) to `path`.
    ///
    /// # Errors
    /// As [`to_safetensors`](Self::to_safetensors); [`LayerError::Io`] when the file
    /// cannot be written.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), LayerError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_safetensors()?).map_err(|e| LayerError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// Runs a case in `f32` (see the module docs).
///
/// # Errors
/// As [`run_case_with`].
pub fn run_case(case: &Case) -> Result<CaseReport, LayerError> {
    run_case_with(case, Precision::F32)
}

/// Runs a case in the given precision, comparing every `expect.*` tensor it holds.
///
/// The loss and the gradients are computed when the case expects any of them
/// (`expect.loss` or an `expect.grad.*`); otherwise only the forward paths run.
///
/// # Errors
/// [`LayerError::BadMetadata`] named `args` when the constructor arguments are not
/// the layer's, or named `loss` for a loss other than the one the format defines for
/// the layer; the loader's errors when the `param.*`
/// tensors do not fit the constructor arguments ([`LayerError::MissingTensor`],
/// [`LayerError::WrongShape`], [`LayerError::UnexpectedTensors`]); the layer's errors
/// for inputs it refuses; [`LayerError::MissingTensor`] (`lossw.<name>`) for a case
/// that expects gradients without the loss weights they need;
/// [`LayerError::UnexpectedTensors`] for an expectation nothing computes,
/// [`LayerError::LengthMismatch`] for an expectation of another size;
/// [`LayerError::NothingToCompare`] for a case without any `expect.*` tensor readout
/// computes.
pub fn run_case_with(case: &Case, precision: Precision) -> Result<CaseReport, LayerError> {
    let gradients = case.expect.keys().any(|k| is_gradient_result(k));
    run(case, precision, gradients)
}

/// Runs a case's forward paths only, in the given precision: `expect.loss` and the
/// `expect.grad.*` tensors are left aside even when present (listed in
/// [`CaseReport::ignored`]), and no loss weights are needed.
///
/// # Errors
/// As [`run_case_with`], without the errors about loss weights.
pub fn run_case_forward_only(case: &Case, precision: Precision) -> Result<CaseReport, LayerError> {
    run(case, precision, false)
}

/// The results that exist only when the loss is differentiated.
fn is_gradient_result(key: &str) -> bool {
    key == "loss" || key.starts_with("grad.")
}

fn run(case: &Case, precision: Precision, gradients: bool) -> Result<CaseReport, LayerError> {
    let computed = match precision {
        Precision::F32 => compute::<f32>(case, gradients)?,
        Precision::F64 => compute::<f64>(case, gradients)?,
    };
    let mut outputs = Vec::with_capacity(computed.outputs.len());
    let mut errors = Vec::with_capacity(computed.outputs.len() + computed.extra.len());
    let mut absent = Vec::new();
    for (name, got) in computed.outputs {
        let Some(expect) = case.expect.get(&name) else {
            absent.push(name);
            continue;
        };
        let (error, pos) = case.compare(&name, &got)?;
        let at = unflatten(pos, expect.shape());
        errors.push(TensorError {
            name: name.clone(),
            error,
            at,
        });
        outputs.push((
            name,
            RawTensor::new("output", expect.shape().to_vec(), got)?,
        ));
    }
    let mut ignored = Vec::new();
    let mut unexpected = Vec::new();
    for key in case.expect.keys() {
        if outputs.iter().any(|(n, _)| n == key) {
            continue;
        }
        let full = alloc::format!("expect.{key}");
        if !gradients && is_gradient_result(key) {
            ignored.push(full);
        } else {
            unexpected.push(full);
        }
    }
    if !unexpected.is_empty() {
        return Err(LayerError::UnexpectedTensors { names: unexpected });
    }
    for (label, key, got) in computed.extra {
        // Another path to a result the case does not hold: nothing to compare it with.
        let Some(expect) = case.expect.get(key) else {
            continue;
        };
        let (error, pos) =
            relative_error(&got, expect.data()).map_err(|_| LayerError::LengthMismatch {
                name: label.to_string(),
                expected: expect.numel(),
                got: got.len(),
            })?;
        errors.push(TensorError {
            name: label.to_string(),
            error,
            at: unflatten(pos, expect.shape()),
        });
    }
    if errors.is_empty() {
        return Err(LayerError::NothingToCompare {
            case: case.name.clone(),
        });
    }
    let pyg32 = worst_error(case.pyg32.iter().filter_map(|(k, t)| {
        let compared = outputs.iter().any(|(n, _)| n == k);
        let e = case.expect.get(k).filter(|_| compared)?;
        Some((k.as_str(), t.data(), e.data()))
    }))?;
    Ok(CaseReport {
        name: case.name.clone(),
        layer: case.layer,
        precision,
        outputs,
        errors,
        pyg32,
        absent,
        ignored,
        tape_nodes: computed.tape_nodes,
    })
}

/// The `*.safetensors` files named by `paths`: files as given, directories listed
/// (not recursively), each directory's files sorted by name.
///
/// # Errors
/// [`LayerError::Io`] for a path that does not exist or a directory that cannot be
/// listed.
pub fn case_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LayerError> {
    let mut out = Vec::new();
    for path in paths {
        let io = |e: std::io::Error| LayerError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if std::fs::metadata(path).map_err(io)?.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io)? {
                let p = entry.map_err(io)?.path();
                if p.is_file() && p.extension().is_some_and(|e| e == "safetensors") {
                    files.push(p);
                }
            }
            files.sort();
            out.extend(files);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// What a layer computed for a case.
struct Computed {
    /// Results named like `expect.*` keys, row-major values.
    outputs: Vec<(String, Vec<f64>)>,
    /// Further results compared with an `expect.*` tensor: `(label, expect key, values)`.
    extra: Vec<(&'static str, &'static str, Vec<f64>)>,
    tape_nodes: usize,
}

/// The one place that knows which layers the parity check can run. With `gradients`
/// false, only the forward paths run (no loss, no backward pass).
fn compute<T: Real>(case: &Case, gradients: bool) -> Result<Computed, LayerError> {
    match (&case.layer, &case.args) {
        (LayerKind::Equilibrium, CaseArgs::Equilibrium(args)) => {
            equilibrium::<T>(case, args, gradients)
        }
        (LayerKind::MemPooling, CaseArgs::MemPooling(args)) => {
            mem_pooling::<T>(case, args, gradients)
        }
        (kind, _) => Err(LayerError::BadMetadata {
            key: "args".into(),
            reason: alloc::format!("does not hold {}'s arguments", kind.pyg_name()),
        }),
    }
}

/// `Σ a ⊙ w` on the tape, checking that the loss weights `lossw.<name>` fit.
fn weighted_sum<T: Real>(
    tape: &mut Tape<T>,
    case: &Case,
    a: Var,
    name: &str,
) -> Result<Var, LayerError> {
    let weights = case.loss_weights(name)?;
    let shape = tape.value(a)?.shape().to_vec();
    if weights.shape() != shape.as_slice() {
        return Err(LayerError::WrongShape {
            name: alloc::format!("lossw.{name}"),
            expected: shape,
            got: weights.shape().to_vec(),
        });
    }
    let w = tape.constant(weights.cast::<T>());
    let weighted = tape.mul(a, w)?;
    Ok(tape.sum(weighted)?)
}

/// The gradient of every parameter (zeros where the loss does not depend on one) and
/// of `x`, named `grad.<key>` and `grad.input.x`.
/// The loss's value and the gradients of every parameter and of `x`, as output rows
/// (`loss`, `grad.<name>`, `grad.input.x`), from one backward pass of `loss`.
fn loss_and_gradients<T: Real>(
    tape: &mut Tape<T>,
    loss: Var,
    params: &Parameters,
    bound: &Bound,
    x: Var,
    x_numel: usize,
) -> Result<Vec<(String, Vec<f64>)>, LayerError> {
    let mut outputs = Vec::with_capacity(params.len() + 2);
    outputs.push((
        String::from("loss"),
        vec![tape.value(loss)?.item().to_f64()],
    ));
    let grads = tape.backward(loss)?;
    for (i, p) in params.iter().enumerate() {
        let g = match grads.get(bound.var(i)) {
            Some(g) => to_f64(g),
            // The loss does not depend on it (grad_iter = 0): PyG reports zeros.
            None => vec![0.0; p.value().numel()],
        };
        outputs.push((alloc::format!("grad.{}", p.name()), g));
    }
    let gx = match grads.get(x) {
        Some(g) => to_f64(g),
        None => vec![0.0; x_numel],
    };
    outputs.push((String::from("grad.input.x"), gx));
    Ok(outputs)
}

fn to_f64<T: Real>(t: &Tensor<T>) -> Vec<f64> {
    t.data().iter().map(|v| v.to_f64()).collect()
}

/// `EquilibriumAggregation`: `loss = sum(out * lossw.out)`.
fn equilibrium<T: Real>(
    case: &Case,
    a: &EquilibriumArgs,
    gradients: bool,
) -> Result<Computed, LayerError> {
    const LOSS: &str = "sum(out * lossw.out)";
    if gradients && case.loss != LOSS {
        return Err(LayerError::BadMetadata {
            key: "loss".into(),
            reason: alloc::format!("`{}`: EquilibriumAggregation cases use `{LOSS}`", case.loss),
        });
    }
    // The case stores `lamb` as f64 JSON; the layer keeps f32 like PyG's parameter.
    #[allow(clippy::cast_possible_truncation)]
    let lamb = a.lamb as f32;
    let layer = EquilibriumAggregation::new(
        a.in_channels,
        a.out_channels,
        &a.num_layers,
        a.grad_iter,
        lamb,
    )?
    .with_state_dict(case.params.clone())?;
    let segments = match &case.index {
        Some(ix) => Segments::Index(ix),
        None => Segments::One,
    };
    let dim_size = case.forward.dim_size;

    // Training path: recorded inner gradients, gradients of the loss.
    let mut tape = Tape::<T>::new();
    let bound = layer.parameters().bind(&mut tape, true);
    let x = tape.variable(case.x.cast::<T>());
    let out = layer.forward_on(&mut tape, &bound, x, segments, dim_size, InnerGrad::Record)?;
    let mut outputs = vec![(String::from("out"), to_f64(tape.value(out)?))];
    let mut tape_nodes = tape.len();
    if gradients {
        let loss = weighted_sum(&mut tape, case, out, "out")?;
        tape_nodes = tape.len();
        outputs.extend(loss_and_gradients(
            &mut tape,
            loss,
            layer.parameters(),
            &bound,
            x,
            case.x.numel(),
        )?);
    }

    // Inference path: eager inner gradients, parameters and x as constants — exactly
    // what `EquilibriumAggregation::forward` runs.
    let mut tape = Tape::<T>::new();
    let bound = layer.parameters().bind(&mut tape, false);
    let x = tape.constant(case.x.cast::<T>());
    let inferred = layer.forward_on(&mut tape, &bound, x, segments, dim_size, InnerGrad::Eager)?;
    let extra = vec![(INFERENCE_OUT, "out", to_f64(tape.value(inferred)?))];

    Ok(Computed {
        outputs,
        extra,
        tape_nodes,
    })
}

/// `MemPooling`: `loss = sum(out * lossw.out) + sum(S * lossw.S) + kl_weight * kl_loss(S)`,
/// on the default (ragged) path; the inference path's `out` and `S` are compared too,
/// on the ragged and on the dense path.
fn mem_pooling<T: Real>(
    case: &Case,
    a: &MemPoolingArgs,
    gradients: bool,
) -> Result<Computed, LayerError> {
    const LOSS: &str = "sum(out * lossw.out) + sum(S * lossw.S) + kl_weight * kl_loss(S)";
    if gradients && case.loss != LOSS {
        return Err(LayerError::BadMetadata {
            key: "loss".into(),
            reason: alloc::format!("`{}`: MemPooling cases use `{LOSS}`", case.loss),
        });
    }
    let layer = MemPooling::new(
        a.in_channels,
        a.out_channels,
        a.heads,
        a.num_clusters,
        a.tau,
    )?
    .with_state_dict(case.params.clone())?;
    let mut args = PoolArgs::new();
    if let Some(b) = &case.batch {
        args = args.batch(b);
    }
    if let Some(m) = &case.mask {
        let dims = match m.shape.as_slice() {
            &[b, n] => [b, n],
            other => {
                return Err(LayerError::WrongShape {
                    name: "input.mask".into(),
                    expected: vec![m.values.len(), 1],
                    got: other.to_vec(),
                });
            }
        };
        args = args.mask(Mask::new(dims, &m.values)?);
    }
    if let Some(n) = case.forward.max_num_nodes {
        args = args.max_num_nodes(n);
    }
    if let Some(b) = case.forward.batch_size {
        args = args.batch_size(b);
    }

    // Training path.
    let mut tape = Tape::<T>::new();
    let bound = layer.parameters().bind(&mut tape, true);
    let x = tape.variable(case.x.cast::<T>());
    let mut pooled = layer.forward_on(&mut tape, &bound, x, args)?;
    let out = pooled.out();
    let s = pooled.s(&mut tape)?;
    let kl = pooled.kl_loss(&mut tape)?;
    let mut outputs = vec![
        (String::from("out"), to_f64(tape.value(out)?)),
        (String::from("S"), to_f64(tape.value(s)?)),
        (
            String::from("kl_loss"),
            vec![tape.value(kl)?.item().to_f64()],
        ),
    ];
    let mut tape_nodes = tape.len();
    if gradients {
        let lo = weighted_sum(&mut tape, case, out, "out")?;
        let ls = weighted_sum(&mut tape, case, s, "S")?;
        let mut loss = tape.add(lo, ls)?;
        // A weight of 0 leaves the term out, as a loss without it is written in PyG
        // (and 0 · NaN would poison the loss for batches with empty graphs).
        if case.kl_weight != 0.0 {
            let lk = tape.scale(kl, T::from_f64(case.kl_weight))?;
            loss = tape.add(loss, lk)?;
        }
        tape_nodes = tape.len();
        outputs.extend(loss_and_gradients(
            &mut tape,
            loss,
            layer.parameters(),
            &bound,
            x,
            case.x.numel(),
        )?);
    }

    // Inference: what `MemPooling::forward` runs (the ragged path), and PyG's padded
    // computation (the dense path).
    let mut extra = Vec::with_capacity(4);
    for (path, labels) in [
        (PoolPath::Ragged, [INFERENCE_OUT, INFERENCE_S]),
        (PoolPath::Dense, [DENSE_OUT, DENSE_S]),
    ] {
        let mut tape = Tape::<T>::new();
        tape.set_recording(false);
        let bound = layer.parameters().bind(&mut tape, false);
        let x = tape.constant(case.x.cast::<T>());
        let mut pooled = layer.forward_on(&mut tape, &bound, x, args.path(path))?;
        let s = pooled.s(&mut tape)?;
        extra.push((labels[0], "out", to_f64(tape.value(pooled.out())?)));
        extra.push((labels[1], "S", to_f64(tape.value(s)?)));
    }
    Ok(Computed {
        outputs,
        extra,
        tape_nodes,
    })
}

/// The multi-index of flat position `pos` in `shape` (row-major).
fn unflatten(mut pos: usize, shape: &[usize]) -> Vec<usize> {
    let mut at = vec![0; shape.len()];
    for (a, &d) in at.iter_mut().zip(shape).rev() {
        if d > 0 {
            *a = pos % d;
            pos /= d;
        }
    }
    at
}

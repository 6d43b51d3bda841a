//! Reader of the PyG reference cases (`tests/data/*.safetensors`, format in
//! `tests/data/README.md`) and the error measure they are checked with.
//!
//! One file is one [`Case`]: a layer's constructor arguments and forward keyword
//! arguments (JSON in `__metadata__`), its parameters under PyG's `state_dict` keys
//! (`param.*`), the forward inputs (`input.*`), the loss weights (`lossw.*`), and what
//! PyG computes, in float64 (`expect.*`) and in float32 (`pyg32.*`).
//! The reader is strict: an unknown tensor or metadata key, a wrong element type or a
//! non-finite value is an error, so that a drifting format is noticed, never half-read.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use std::path::Path;

use readout_kernels::Real;

use crate::error::LayerError;
use crate::raw::RawTensor;
use crate::weights::state_dict::{
    StateDict, decode_bool, decode_f32_only, decode_f64, decode_i64, parse, read_file,
};
use readout_core::Tensor;
use serde_json::Value;

/// Which PyG layer a case exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `torch_geometric.nn.aggr.EquilibriumAggregation`.
    Equilibrium,
    /// `torch_geometric.nn.MemPooling`.
    MemPooling,
}

impl LayerKind {
    /// PyG's class name, as in the case's `layer` metadata.
    pub fn pyg_name(self) -> &'static str {
        match self {
            LayerKind::Equilibrium => "EquilibriumAggregation",
            LayerKind::MemPooling => "MemPooling",
        }
    }

    /// The loss the format defines for the layer, in the words of the `loss` metadata.
    pub fn loss(self) -> &'static str {
        match self {
            LayerKind::Equilibrium => "sum(out * lossw.out)",
            LayerKind::MemPooling => {
                "sum(out * lossw.out) + sum(S * lossw.S) + kl_weight * kl_loss(S)"
            }
        }
    }
}

/// `EquilibriumAggregation`'s constructor arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct EquilibriumArgs {
    /// `in_channels`.
    pub in_channels: usize,
    /// `out_channels`.
    pub out_channels: usize,
    /// `num_layers`: the potential's hidden widths (may be empty).
    pub num_layers: Vec<usize>,
    /// `grad_iter`: inner gradient steps.
    pub grad_iter: usize,
    /// `lamb`: the regulariser's initial raw value.
    pub lamb: f64,
}

/// `MemPooling`'s constructor arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct MemPoolingArgs {
    /// `in_channels`.
    pub in_channels: usize,
    /// `out_channels`.
    pub out_channels: usize,
    /// `heads`.
    pub heads: usize,
    /// `num_clusters`.
    pub num_clusters: usize,
    /// `tau`.
    pub tau: f64,
}

/// A case's constructor arguments, by layer.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseArgs {
    /// For [`LayerKind::Equilibrium`].
    Equilibrium(EquilibriumArgs),
    /// For [`LayerKind::MemPooling`].
    MemPooling(MemPoolingArgs),
}

/// The forward call's scalar keyword arguments (`None` when not passed, or passed as
/// JSON `null`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardArgs {
    /// `dim_size` (EquilibriumAggregation).
    pub dim_size: Option<usize>,
    /// `max_num_nodes` (MemPooling).
    pub max_num_nodes: Option<usize>,
    /// `batch_size` (MemPooling).
    pub batch_size: Option<usize>,
}

/// A boolean mask with its shape (`[B, N]` for `MemPooling`'s dense input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseMask {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<bool>,
}

/// One reference case. Tensor maps are keyed by the name without its prefix
/// (`expect["out"]`, `expect["grad.lamb"]`, `expect["grad.input.x"]`, `lossw["S"]`).
#[derive(Clone, Debug)]
pub struct Case {
    /// The case's name (the file stem for [`Case::from_file`]).
    pub name: String,
    /// The layer.
    pub layer: LayerKind,
    /// The constructor arguments.
    pub args: CaseArgs,
    /// The forward keyword arguments.
    pub forward: ForwardArgs,
    /// The weight of `kl_loss(S)` in the loss (0 for EquilibriumAggregation, and when
    /// the case omits it).
    pub kl_weight: f64,
    /// The loss in words (`loss` metadata; [`LayerKind::loss`] when the case omits it).
    pub loss: String,
    /// The `note` metadata, when present (cases where PyG's `kl_loss` is NaN).
    pub note: Option<String>,
    /// The parameters (`param.*`), under PyG's keys and shapes.
    pub params: StateDict,
    /// `input.x`: `[N, F]`, or `[B, N, F]` for dense MemPooling input.
    pub x: Tensor<f32>,
    /// `input.index` (EquilibriumAggregation), when the call passes one.
    pub index: Option<Vec<i64>>,
    /// `input.batch` (MemPooling), when the call passes one.
    pub batch: Option<Vec<i64>>,
    /// `input.mask` (MemPooling dense input), when the call passes one.
    pub mask: Option<CaseMask>,
    /// The loss weights (`lossw.*`).
    pub lossw: BTreeMap<String, Tensor<f32>>,
    /// PyG's results computed in float64 (`expect.*`), in PyG's shapes.
    pub expect: BTreeMap<String, RawTensor<f64>>,
    /// PyG's results computed in float32 (`pyg32.*`), in PyG's shapes.
    pub pyg32: BTreeMap<String, RawTensor<f32>>,
}

fn meta_err(key: &str, reason: impl Into<String>) -> LayerError {
    LayerError::BadMetadata {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn parse_json(key: &str, text: &str) -> Result<Value, LayerError> {
    serde_json::from_str(text).map_err(|e| meta_err(key, alloc::format!("invalid JSON: {e}")))
}

/// The JSON type of `v`, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The members of a JSON object, refusing keys outside `allowed`.
fn object<'a>(
    key: &str,
    v: &'a Value,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, LayerError> {
    let Value::Object(members) = v else {
        return Err(meta_err(
            key,
            alloc::format!("expected an object, got {}", kind(v)),
        ));
    };
    if let Some(k) = members.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(meta_err(
            key,
            alloc::format!("unknown key `{k}` (expected one of {allowed:?})"),
        ));
    }
    Ok(members)
}

/// A JSON number that is an exact non-negative integer fitting `usize` (`3` or `3.0`).
fn as_count(key: &str, v: &Value) -> Result<usize, LayerError> {
    const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    let n = match v {
        Value::Number(n) => n,
        other => {
            return Err(meta_err(
                key,
                alloc::format!("expected a non-negative integer, got {}", kind(other)),
            ));
        }
    };
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        // Exact: a non-negative integer below 2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (None, Some(x)) if x >= 0.0 && x.fract() == 0.0 && x <= LIMIT => Some(x as u64),
        _ => None,
    };
    let whole = whole.ok_or_else(|| {
        meta_err(
            key,
            alloc::format!("expected a non-negative integer, got {n}"),
        )
    })?;
    usize::try_from(whole).map_err(|_| meta_err(key, alloc::format!("{n} does not fit usize")))
}

fn as_number(key: &str, v: &Value) -> Result<f64, LayerError> {
    v.as_f64()
        .ok_or_else(|| meta_err(key, alloc::format!("expected a number, got {}", kind(v))))
}

fn required<'a>(parent: &str, v: &'a Value, key: &str) -> Result<&'a Value, LayerError> {
    v.get(key)
        .ok_or_else(|| meta_err(&alloc::format!("{parent}.{key}"), "missing"))
}

fn parse_args(layer: LayerKind, text: &str) -> Result<CaseArgs, LayerError> {
    let v = parse_json("args", text)?;
    match layer {
        LayerKind::Equilibrium => {
            object(
                "args",
                &v,
                &[
                    "in_channels",
                    "out_channels",
                    "num_layers",
                    "grad_iter",
                    "lamb",
                ],
            )?;
            let Value::Array(layers) = required("args", &v, "num_layers")? else {
                return Err(meta_err("args.num_layers", "expected an array"));
            };
            let num_layers = layers
                .iter()
                .map(|l| as_count("args.num_layers", l))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(CaseArgs::Equilibrium(EquilibriumArgs {
                in_channels: as_count("args.in_channels", required("args", &v, "in_channels")?)?,
                out_channels: as_count("args.out_channels", required("args", &v, "out_channels")?)?,
                num_layers,
                grad_iter: as_count("args.grad_iter", required("args", &v, "grad_iter")?)?,
                lamb: as_number("args.lamb", required("args", &v, "lamb")?)?,
            }))
        }
        LayerKind::MemPooling => {
            object(
                "args",
                &v,
                &[
                    "in_channels",
                    "out_channels",
                    "heads",
                    "num_clusters",
                    "tau",
                ],
            )?;
            Ok(CaseArgs::MemPooling(MemPoolingArgs {
                in_channels: as_count("args.in_channels", required("args", &v, "in_channels")?)?,
                out_channels: as_count("args.out_channels", required("args", &v, "out_channels")?)?,
                heads: as_count("args.heads", required("args", &v, "heads")?)?,
                num_clusters: as_count("args.num_clusters", required("args", &v, "num_clusters")?)?,
                tau: as_number("args.tau", required("args", &v, "tau")?)?,
            }))
        }
    }
}

fn parse_forward(layer: LayerKind, text: &str) -> Result<ForwardArgs, LayerError> {
    let v = parse_json("forward", text)?;
    let allowed: &[&str] = match layer {
        LayerKind::Equilibrium => &["dim_size"],
        LayerKind::MemPooling => &["max_num_nodes", "batch_size"],
    };
    let members = object("forward", &v, allowed)?;
    let mut f = ForwardArgs::default();
    for (k, val) in members {
        let n = match val {
            Value::Null => None,
            other => Some(as_count(&alloc::format!("forward.{k}"), other)?),
        };
        match k.as_str() {
            "dim_size" => f.dim_size = n,
            "max_num_nodes" => f.max_num_nodes = n,
            _ => f.batch_size = n,
        }
    }
    Ok(f)
}

fn one_d(name: &str, t: RawTensor<i64>) -> Result<Vec<i64>, LayerError> {
    if t.shape().len() != 1 {
        return Err(LayerError::WrongShape {
            name: name.to_string(),
            expected: alloc::vec![t.numel()],
            got: t.shape().to_vec(),
        });
    }
    Ok(t.into_parts().1)
}

impl Case {
    /// Reads a case from a file; its name is the file stem.
    ///
    /// # Errors
    /// [`LayerError::Io`] when the file cannot be read, then as
    /// [`from_bytes`](Self::from_bytes).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Case, LayerError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Case::from_bytes(&name, &bytes)
    }

    /// Reads a case from the bytes of its safetensors file.
    ///
    /// # Errors
    /// [`LayerError::Parse`] for bytes that are not safetensors;
    /// [`LayerError::BadMetadata`] for a missing or malformed `__metadata__` entry
    /// (`layer`, `args`, `forward`; `kl_weight` and `loss` may be omitted) or an
    /// unknown one;
    /// [`LayerError::UnexpectedTensors`] for tensors outside the format;
    /// [`LayerError::MissingTensor`] without `input.x`;
    /// [`LayerError::WrongDtype`], [`LayerError::WrongShape`], [`LayerError::NonFinite`],
    /// [`LayerError::BadValue`] for a tensor of the wrong type, shape or value;
    /// [`LayerError::Core`] for an input or loss weight of rank above 3.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Case, LayerError> {
        let st = parse(bytes, name)?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| LayerError::Parse {
                source: name.to_string(),
                reason: e.to_string(),
            })?;
        let Some(meta) = meta.metadata() else {
            return Err(meta_err("__metadata__", "missing"));
        };
        const KNOWN: [&str; 6] = ["layer", "args", "forward", "kl_weight", "loss", "note"];
        let mut keys: Vec<&String> = meta.keys().collect();
        keys.sort_unstable();
        if let Some(k) = keys.iter().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(meta_err(k, "unknown metadata key"));
        }
        let get = |k: &str| meta.get(k).ok_or_else(|| meta_err(k, "missing"));
        let layer = match get("layer")?.as_str() {
            "EquilibriumAggregation" => LayerKind::Equilibrium,
            "MemPooling" => LayerKind::MemPooling,
            other => {
                return Err(meta_err(
                    "layer",
                    alloc::format!(
                        "unknown layer `{other}` (expected EquilibriumAggregation or MemPooling)"
                    ),
                ));
            }
        };
        let args = parse_args(layer, get("args")?)?;
        let forward = parse_forward(layer, get("forward")?)?;
        // A forward-only case (no loss weights, no gradients) may omit both: the format
        // defines one loss per layer, and a loss without `kl_loss` has weight 0.
        let kl_weight = match meta.get("kl_weight") {
            Some(text) => as_number("kl_weight", &parse_json("kl_weight", text)?)?,
            None => 0.0,
        };
        let loss = meta
            .get("loss")
            .cloned()
            .unwrap_or_else(|| layer.loss().to_string());
        let note = meta.get("note").cloned();

        let mut names = st.names();
        names.sort_unstable();
        let mut params = StateDict::new();
        let mut x = None;
        let mut index = None;
        let mut batch = None;
        let mut mask = None;
        let mut lossw = BTreeMap::new();
        let mut expect = BTreeMap::new();
        let mut pyg32 = BTreeMap::new();
        let mut unexpected = Vec::new();
        for full in names {
            let view = st.tensor(full).map_err(|e| LayerError::Parse {
                source: name.to_string(),
                reason: e.to_string(),
            })?;
            let (prefix, key) = full.split_once('.').unwrap_or((full, ""));
            if key.is_empty() {
                unexpected.push(full.to_string());
                continue;
            }
            match (prefix, key, layer) {
                ("param", _, _) => params.insert(key, decode_f32_only(full, &view)?)?,
                ("input", "x", _) => x = Some(decode_f32_only(full, &view)?.into_tensor()?),
                ("input", "index", LayerKind::Equilibrium) => {
                    index = Some(one_d(full, decode_i64(full, &view)?)?);
                }
                ("input", "batch", LayerKind::MemPooling) => {
                    batch = Some(one_d(full, decode_i64(full, &view)?)?);
                }
                ("input", "mask", LayerKind::MemPooling) => {
                    let (shape, values) = decode_bool(full, &view)?.into_parts();
                    if shape.len() != 2 {
                        return Err(LayerError::WrongShape {
                            name: full.to_string(),
                            expected: alloc::vec![values.len(), 1],
                            got: shape,
                        });
                    }
                    mask = Some(CaseMask { shape, values });
                }
                ("lossw", _, _) => {
                    lossw.insert(
                        key.to_string(),
                        decode_f32_only(full, &view)?.into_tensor()?,
                    );
                }
                ("expect", _, _) => {
                    expect.insert(key.to_string(), decode_f64(full, &view)?);
                }
                ("pyg32", _, _) => {
                    pyg32.insert(key.to_string(), decode_f32_only(full, &view)?);
                }
                _ => unexpected.push(full.to_string()),
            }
        }
        if !unexpected.is_empty() {
            return Err(LayerError::UnexpectedTensors { names: unexpected });
        }
        let x = x.ok_or_else(|| LayerError::MissingTensor {
            name: "input.x".to_string(),
        })?;
        Ok(Case {
            name: name.to_string(),
            layer,
            args,
            forward,
            kl_weight,
            loss,
            note,
            params,
            x,
            index,
            batch,
            mask,
            lossw,
            expect,
            pyg32,
        })
    }

    /// The expected (float64) tensor `name` (`"out"`, `"S"`, `"grad.lamb"`, ...).
    ///
    /// # Errors
    /// [`LayerError::MissingTensor`] (named `expect.<name>`) when absent.
    pub fn expected(&self, name: &str) -> Result<&RawTensor<f64>, LayerError> {
        self.expect
            .get(name)
            .ok_or_else(|| LayerError::MissingTensor {
                name: alloc::format!("expect.{name}"),
            })
    }

    /// The loss weights `name` (`"out"` or `"S"`).
    ///
    /// # Errors
    /// [`LayerError::MissingTensor`] (named `lossw.<name>`) when absent.
    pub fn loss_weights(&self, name: &str) -> Result<&Tensor<f32>, LayerError> {
        self.lossw
            .get(name)
            .ok_or_else(|| LayerError::MissingTensor {
                name: alloc::format!("lossw.{name}"),
            })
    }

    /// The error of `got` against `expect.<name>`, in the fixtures' measure
    /// (see [`relative_error`]): `(error, flat position of the worst entry)`.
    ///
    /// # Errors
    /// [`LayerError::MissingTensor`] when `expect.<name>` is absent,
    /// [`LayerError::LengthMismatch`] when `got` has another element count.
    pub fn compare<T: Real>(&self, name: &str, got: &[T]) -> Result<(f64, usize), LayerError> {
        relative_error_named(name, got, self.expected(name)?.data())
    }

    /// The worst error over several results, each compared with `expect.<name>`.
    ///
    /// # Errors
    /// As [`compare`](Self::compare), for the first result at fault.
    pub fn worst<T: Real>(&self, results: &[(&str, &[T])]) -> Result<Option<Worst>, LayerError> {
        let mut pairs = Vec::with_capacity(results.len());
        for &(n, got) in results {
            pairs.push((n, got, self.expected(n)?.data()));
        }
        worst_error(pairs)
    }
}

/// Reads every `*.safetensors` case of a directory, sorted by file name.
///
/// # Errors
/// [`LayerError::Io`] when the directory cannot be listed, then as
/// [`Case::from_file`] for the first bad file.
pub fn load_cases(dir: impl AsRef<Path>) -> Result<Vec<Case>, LayerError> {
    let dir = dir.as_ref();
    let io = |e: std::io::Error| LayerError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            paths.push(p);
        }
    }
    paths.sort();
    paths.iter().map(Case::from_file).collect()
}

/// The fixtures' error measure of `got` against `expect`:
/// `max_i |got_i − expect_i| / max(1, max_i |expect_i|)`, with the flat position of the
/// worst entry. A non-finite `got_i` gives an infinite error at its position. Empty
/// inputs give `(0.0, 0)`.
///
/// # Errors
/// [`LayerError::LengthMismatch`] (named `got`) when the lengths differ.
pub fn relative_error<T: Real>(got: &[T], expect: &[f64]) -> Result<(f64, usize), LayerError> {
    relative_error_named("got", got, expect)
}

fn relative_error_named<T: Real>(
    name: &str,
    got: &[T],
    expect: &[f64],
) -> Result<(f64, usize), LayerError> {
    if got.len() != expect.len() {
        return Err(LayerError::LengthMismatch {
            name: name.to_string(),
            expected: expect.len(),
            got: got.len(),
        });
    }
    let scale = expect.iter().fold(1.0f64, |m, e| m.max(e.abs()));
    let mut worst = (0.0f64, 0usize);
    for (i, (g, e)) in got.iter().zip(expect).enumerate() {
        let g = g.to_f64();
        if !g.is_finite() {
            return Ok((f64::INFINITY, i));
        }
        let err = (g - e).abs() / scale;
        if err > worst.0 {
            worst = (err, i);
        }
    }
    Ok(worst)
}

/// The worst of several errors: which tensor, how large, where.
#[derive(Clone, Debug, PartialEq)]
pub struct Worst {
    /// The tensor's name.
    pub name: String,
    /// Its error, in the measure of [`relative_error`].
    pub error: f64,
    /// The flat position of its worst entry.
    pub position: usize,
}

/// The largest [`relative_error`] over `(name, got, expect)` triples; `None` for no
/// triple. Ties keep the first.
///
/// # Errors
/// [`LayerError::LengthMismatch`] naming the first tensor whose lengths differ.
pub fn worst_error<'a, T: Real + 'a>(
    items: impl IntoIterator<Item = (&'a str, &'a [T], &'a [f64])>,
) -> Result<Option<Worst>, LayerError> {
    let mut worst: Option<Worst> = None;
    for (name, got, expect) in items {
        let (error, position) = relative_error_named(name, got, expect)?;
        if worst.as_ref().is_none_or(|w| error > w.error) {
            worst = Some(Worst {
                name: name.to_string(),
                error,
                position,
            });
        }
    }
    Ok(worst)
}

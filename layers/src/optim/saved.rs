//! Optimiser state in a safetensors file, so that a run stopped and resumed continues
//! bit for bit (PyTorch's `optimizer.state_dict()` / `load_state_dict`).
//!
//! Layout: the hyper-parameters as `__metadata__` strings (`optimizer` = `Adam` or
//! `SGD`, then `lr`, `betas`, … written in Rust's shortest round-trip form, so they read
//! back exactly), and per parameter, under its `state_dict` key `<name>`:
//! `state.<name>.step` (I64 `[1]`), `state.<name>.exp_avg`, `state.<name>.exp_avg_sq`,
//! `state.<name>.max_exp_avg_sq` (with `amsgrad`) for Adam, and
//! `state.<name>.momentum_buffer` for SGD (F32, the parameter's shape). A parameter that
//! has not been updated yet has no entries, like PyTorch's lazily created state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{Adam, AdamState, Sgd, names};
use crate::error::LayerError;
use crate::param::Parameters;

/// Saving and loading an optimiser's state (`std` feature).
pub trait OptimizerState: Sized {
    /// The state for `params` (the parameters this optimiser has been stepping, in the
    /// same order) as safetensors bytes.
    ///
    /// # Errors
    /// [`LayerError::LengthMismatch`] (`params`) when the optimiser has state for
    /// another number of parameters; [`LayerError::Parse`] if serialisation fails.
    fn state_bytes(&self, params: &Parameters) -> Result<Vec<u8>, LayerError>;

    /// Replaces this optimiser's hyper-parameters and state by those in `bytes`.
    /// All or nothing: on error, `self` is unchanged.
    ///
    /// # Errors
    /// [`LayerError::Parse`] for bytes that are not safetensors;
    /// [`LayerError::BadMetadata`] for a missing or malformed hyper-parameter or
    /// state of another optimiser; [`LayerError::UnexpectedTensors`] for tensors that
    /// name no parameter of `params`; [`LayerError::WrongShape`] /
    /// [`LayerError::WrongDtype`] / [`LayerError::MissingTensor`] for a state tensor
    /// that does not fit its parameter; [`LayerError::InvalidArgument`] for
    /// hyper-parameters out of range.
    fn load_state_bytes(&mut self, params: &Parameters, bytes: &[u8]) -> Result<(), LayerError>;

    /// Writes [`state_bytes`](Self::state_bytes) to `path`.
    ///
    /// # Errors
    /// As [`state_bytes`](Self::state_bytes); [`LayerError::Io`] when the file cannot
    /// be written.
    fn save_state(&self, params: &Parameters, path: impl AsRef<Path>) -> Result<(), LayerError> {
        let path = path.as_ref();
        std::fs::write(path, self.state_bytes(params)?).map_err(|e| io(path, &e))
    }

    /// Reads a file written by [`save_state`](Self::save_state).
    ///
    /// # Errors
    /// [`LayerError::Io`] when the file cannot be read, then as
    /// [`load_state_bytes`](Self::load_state_bytes).
    fn load_state(
        &mut self,
        params: &Parameters,
        path: impl AsRef<Path>,
    ) -> Result<(), LayerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| io(path, &e))?;
        self.load_state_bytes(params, &bytes)
    }
}

fn io(path: &Path, e: &std::io::Error) -> LayerError {
    LayerError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn meta_err(key: &str, reason: impl Into<String>) -> LayerError {
    LayerError::BadMetadata {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Tensors to write: name, dtype, shape, little-endian bytes.
type Entries = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn f32_entry(out: &mut Entries, name: String, shape: &[usize], values: &[f32]) {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.push((name, Dtype::F32, shape.to_vec(), bytes));
}

fn step_entry(out: &mut Entries, name: String, step: u64) {
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    out.push((name, Dtype::I64, vec![1], step.to_le_bytes().to_vec()));
}

fn serialise(entries: &Entries, meta: HashMap<String, String>) -> Result<Vec<u8>, LayerError> {
    let views = entries
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| LayerError::Parse {
                    source: name.clone(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::tensor::serialize(views, Some(meta)).map_err(|e| LayerError::Parse {
        source: "<optimizer state>".into(),
        reason: e.to_string(),
    })
}

fn check_len(what: usize, params: &Parameters) -> Result<(), LayerError> {
    if what > params.len() {
        return Err(LayerError::LengthMismatch {
            name: "params".into(),
            expected: what,
            got: params.len(),
        });
    }
    Ok(())
}

/// A parsed state file: its metadata and its tensors by name.
struct Loaded<'a> {
    meta: HashMap<String, String>,
    tensors: BTreeMap<String, TensorView<'a>>,
}

impl<'a> Loaded<'a> {
    fn parse(bytes: &'a [u8], optimizer: &str) -> Result<Self, LayerError> {
        let parse_err = |e: safetensors::SafeTensorError| LayerError::Parse {
            source: "<optimizer state>".into(),
            reason: e.to_string(),
        };
        let st = SafeTensors::deserialize(bytes).map_err(parse_err)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(parse_err)?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("optimizer") {
            Some(o) if o == optimizer => {}
            Some(o) => {
                return Err(meta_err(
                    "optimizer",
                    format!("state of {o}, not of {optimizer}"),
                ));
            }
            None => return Err(meta_err("optimizer", "missing")),
        }
        let tensors = st
            .tensors()
            .into_iter()
            .collect::<BTreeMap<String, TensorView<'a>>>();
        Ok(Loaded { meta, tensors })
    }

    fn number(&self, key: &str) -> Result<f64, LayerError> {
        let text = self.meta.get(key).ok_or_else(|| meta_err(key, "missing"))?;
        text.parse()
            .map_err(|_| meta_err(key, format!("`{text}` is not a number")))
    }

    fn flag(&self, key: &str) -> Result<bool, LayerError> {
        match self.meta.get(key).map(String::as_str) {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(meta_err(key, format!("`{other}` is not true or false"))),
            None => Err(meta_err(key, "missing")),
        }
    }

    /// Removes and decodes `state.<param>.<field>` as F32 of `shape`, if present.
    fn take_f32(
        &mut self,
        param: &str,
        field: &str,
        shape: &[usize],
    ) -> Result<Option<Vec<f32>>, LayerError> {
        let name = format!("state.{param}.{field}");
        let Some(view) = self.tensors.remove(&name) else {
            return Ok(None);
        };
        if view.dtype() != Dtype::F32 {
            return Err(LayerError::WrongDtype {
                name,
                expected: "F32",
                got: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != shape {
            return Err(LayerError::WrongShape {
                name,
                expected: shape.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Some(values))
    }

    /// Removes and decodes `state.<param>.step`, if present.
    fn take_step(&mut self, param: &str) -> Result<Option<u64>, LayerError> {
        let name = format!("state.{param}.step");
        let Some(view) = self.tensors.remove(&name) else {
            return Ok(None);
        };
        if view.dtype() != Dtype::I64 || view.shape() != [1] {
            return Err(LayerError::WrongShape {
                name,
                expected: vec![1],
                got: view.shape().to_vec(),
            });
        }
        let d = view.data();
        let step = i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        u64::try_from(step)
            .map(Some)
            .map_err(|_| LayerError::BadValue {
                name,
                position: 0,
                value: i128::from(step),
                reason: "a step count is ≥ 0",
            })
    }

    /// Errors for tensors nothing took.
    fn finish(self) -> Result<(), LayerError> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            Err(LayerError::UnexpectedTensors {
                names: self.tensors.into_keys().collect(),
            })
        }
    }
}

fn missing(name: String) -> LayerError {
    LayerError::MissingTensor { name }
}

impl OptimizerState for Adam {
    fn state_bytes(&self, params: &Parameters) -> Result<Vec<u8>, LayerError> {
        check_len(self.state.len(), params)?;
        let mut entries = Entries::new();
        for (p, st) in params.iter().zip(&self.state) {
            let Some(st) = st else { continue };
            let (name, shape) = (p.name(), p.value().shape());
            step_entry(&mut entries, format!("state.{name}.step"), st.step);
            f32_entry(
                &mut entries,
                format!("state.{name}.exp_avg"),
                shape,
                &st.exp_avg,
            );
            f32_entry(
                &mut entries,
                format!("state.{name}.exp_avg_sq"),
                shape,
                &st.exp_avg_sq,
            );
            if let Some(max) = &st.max_exp_avg_sq {
                f32_entry(
                    &mut entries,
                    format!("state.{name}.max_exp_avg_sq"),
                    shape,
                    max,
                );
            }
        }
        let meta = HashMap::from([
            ("optimizer".to_string(), "Adam".to_string()),
            ("lr".to_string(), self.lr.to_string()),
            ("beta1".to_string(), self.betas.0.to_string()),
            ("beta2".to_string(), self.betas.1.to_string()),
            ("eps".to_string(), self.eps.to_string()),
            ("weight_decay".to_string(), self.weight_decay.to_string()),
            (
                "decoupled_weight_decay".to_string(),
                self.decoupled_weight_decay.to_string(),
            ),
            ("amsgrad".to_string(), self.amsgrad.to_string()),
        ]);
        serialise(&entries, meta)
    }

    fn load_state_bytes(&mut self, params: &Parameters, bytes: &[u8]) -> Result<(), LayerError> {
        let mut file = Loaded::parse(bytes, "Adam")?;
        let loaded = Adam::with(
            file.number("lr")?,
            (file.number("beta1")?, file.number("beta2")?),
            file.number("eps")?,
            file.number("weight_decay")?,
        )?
        .decoupled_weight_decay(file.flag("decoupled_weight_decay")?)
        .amsgrad(file.flag("amsgrad")?);
        let mut state = Vec::with_capacity(params.len());
        for (p, name) in params.iter().zip(names(params)) {
            let shape = p.value().shape();
            let Some(step) = file.take_step(&name)? else {
                state.push(None);
                continue;
            };
            let exp_avg = file
                .take_f32(&name, "exp_avg", shape)?
                .ok_or_else(|| missing(format!("state.{name}.exp_avg")))?;
            let exp_avg_sq = file
                .take_f32(&name, "exp_avg_sq", shape)?
                .ok_or_else(|| missing(format!("state.{name}.exp_avg_sq")))?;
            let max_exp_avg_sq = file.take_f32(&name, "max_exp_avg_sq", shape)?;
            if loaded.amsgrad && max_exp_avg_sq.is_none() {
                return Err(missing(format!("state.{name}.max_exp_avg_sq")));
            }
            state.push(Some(AdamState {
                step,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq,
            }));
        }
        file.finish()?;
        *self = Adam { state, ..loaded };
        Ok(())
    }
}

impl OptimizerState for Sgd {
    fn state_bytes(&self, params: &Parameters) -> Result<Vec<u8>, LayerError> {
        check_len(self.buf.len(), params)?;
        let mut entries = Entries::new();
        for (p, buf) in params.iter().zip(&self.buf) {
            if let Some(buf) = buf {
                let name = p.name();
                f32_entry(
                    &mut entries,
                    format!("state.{name}.momentum_buffer"),
                    p.value().shape(),
                    buf,
                );
            }
        }
        let meta = HashMap::from([
            ("optimizer".to_string(), "SGD".to_string()),
            ("lr".to_string(), self.lr.to_string()),
            ("momentum".to_string(), self.momentum.to_string()),
            ("dampening".to_string(), self.dampening.to_string()),
            ("weight_decay".to_string(), self.weight_decay.to_string()),
            ("nesterov".to_string(), self.nesterov.to_string()),
        ]);
        serialise(&entries, meta)
    }

    fn load_state_bytes(&mut self, params: &Parameters, bytes: &[u8]) -> Result<(), LayerError> {
        let mut file = Loaded::parse(bytes, "SGD")?;
        let loaded = Sgd::new(
            file.number("lr")?,
            file.number("momentum")?,
            file.number("weight_decay")?,
        )?
        .dampening(file.number("dampening")?)?
        .nesterov(file.flag("nesterov")?)?;
        let mut buf = Vec::with_capacity(params.len());
        for (p, name) in params.iter().zip(names(params)) {
            buf.push(file.take_f32(&name, "momentum_buffer", p.value().shape())?);
        }
        file.finish()?;
        *self = Sgd { buf, ..loaded };
        Ok(())
    }
}

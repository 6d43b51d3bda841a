//! PyG-compatible weights in and out: safetensors files whose tensor names are PyG's
//! `state_dict` keys (`potential.layers.0.0.weight`, `optimizer._lr`, `lamb`, `k`,
//! `conv.weight`, `lin.weight`, ...), with PyG's shapes.
//!
//! A file written by [`save_state_dict`] loads in PyG with
//! `model.load_state_dict(safetensors.torch.load_file(path))`, and a file saved from PyG with
//! `safetensors.torch.save_file(model.state_dict(), path)` loads here with
//! [`StateDict::from_file`] (`std` feature), or from bytes with [`StateDict::from_bytes`]
//! (no `std` needed: e.g. weights built into firmware with `include_bytes!`). Values are stored as little-endian `F32`; `F64` files are
//! accepted and rounded to `f32`; every other element type is refused with a typed error
//! naming the tensor. Non-finite values are refused on both load and save, so a
//! checkpoint that saves always loads back.
//!
//! Arbitrary bytes never panic: every malformed input is a [`LayerError`].

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
#[cfg(feature = "std")]
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};

use crate::error::LayerError;
use crate::raw::{RawTensor, checked_numel};
use readout_core::Tensor;

/// The text used as the source of bytes that do not come from a file.
const BYTES: &str = "<bytes>";

/// Parses safetensors bytes, mapping every parser error to [`LayerError::Parse`].
pub(crate) fn parse<'a>(bytes: &'a [u8], source: &str) -> Result<SafeTensors<'a>, LayerError> {
    SafeTensors::deserialize(bytes).map_err(|e| LayerError::Parse {
        source: source.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(feature = "std")]
/// Reads a whole file, mapping the I/O error to [`LayerError::Io`].
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, LayerError> {
    std::fs::read(path).map_err(|e| LayerError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(feature = "std")]
/// Writes a whole file, mapping the I/O error to [`LayerError::Io`].
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LayerError> {
    std::fs::write(path, bytes).map_err(|e| LayerError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn dtype_name(d: Dtype) -> String {
    alloc::format!("{d:?}")
}

fn wrong_dtype(name: &str, view: &TensorView<'_>, expected: &'static str) -> LayerError {
    LayerError::WrongDtype {
        name: name.to_string(),
        expected,
        got: dtype_name(view.dtype()),
    }
}

/// Decodes an `F32` or `F64` tensor into `f32` values, refusing non-finite values
/// (including `F64` values too large for `f32`).
pub(crate) fn decode_f32(name: &str, view: &TensorView<'_>) -> Result<RawTensor<f32>, LayerError> {
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => {
            let mut out = Vec::with_capacity(bytes.len() / 4);
            for (i, c) in bytes.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !v.is_finite() {
                    return Err(non_finite(name, i, f64::from(v)));
                }
                out.push(v);
            }
            out
        }
        Dtype::F64 => {
            let mut out = Vec::with_capacity(bytes.len() / 8);
            for (i, v) in decode_f64_values(bytes).enumerate() {
                // Rounding to the nearest f32 is the intent here.
                #[allow(clippy::cast_possible_truncation)]
                let w = v as f32;
                if !w.is_finite() {
                    return Err(non_finite(name, i, v));
                }
                out.push(w);
            }
            out
        }
        _ => return Err(wrong_dtype(name, view, "F32 or F64")),
    };
    RawTensor::new(name, view.shape().to_vec(), data)
}

fn decode_f64_values(bytes: &[u8]) -> impl Iterator<Item = f64> + '_ {
    bytes.chunks_exact(8).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        f64::from_le_bytes(b)
    })
}

fn non_finite(name: &str, position: usize, value: f64) -> LayerError {
    LayerError::NonFinite {
        name: name.to_string(),
        position,
        value,
    }
}

#[cfg(feature = "std")]
/// Decodes an `F64` tensor (only `F64`), refusing non-finite values.
pub(crate) fn decode_f64(name: &str, view: &TensorView<'_>) -> Result<RawTensor<f64>, LayerError> {
    if view.dtype() != Dtype::F64 {
        return Err(wrong_dtype(name, view, "F64"));
    }
    let mut data = Vec::with_capacity(view.data().len() / 8);
    for (i, v) in decode_f64_values(view.data()).enumerate() {
        if !v.is_finite() {
            return Err(non_finite(name, i, v));
        }
        data.push(v);
    }
    RawTensor::new(name, view.shape().to_vec(), data)
}

#[cfg(feature = "std")]
/// Decodes an `F32` tensor (only `F32`), refusing non-finite values.
pub(crate) fn decode_f32_only(
    name: &str,
    view: &TensorView<'_>,
) -> Result<RawTensor<f32>, LayerError> {
    if view.dtype() != Dtype::F32 {
        return Err(wrong_dtype(name, view, "F32"));
    }
    decode_f32(name, view)
}

#[cfg(feature = "std")]
/// Decodes an `I64` tensor.
pub(crate) fn decode_i64(name: &str, view: &TensorView<'_>) -> Result<RawTensor<i64>, LayerError> {
    if view.dtype() != Dtype::I64 {
        return Err(wrong_dtype(name, view, "I64"));
    }
    let data = view
        .data()
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            i64::from_le_bytes(b)
        })
        .collect();
    RawTensor::new(name, view.shape().to_vec(), data)
}

#[cfg(feature = "std")]
/// Decodes a `BOOL` tensor; every byte must be 0 or 1.
pub(crate) fn decode_bool(
    name: &str,
    view: &TensorView<'_>,
) -> Result<RawTensor<bool>, LayerError> {
    if view.dtype() != Dtype::BOOL {
        return Err(wrong_dtype(name, view, "BOOL"));
    }
    let mut data = Vec::with_capacity(view.data().len());
    for (i, &b) in view.data().iter().enumerate() {
        match b {
            0 => data.push(false),
            1 => data.push(true),
            _ => {
                return Err(LayerError::BadValue {
                    name: name.to_string(),
                    position: i,
                    value: i128::from(b),
                    reason: "a BOOL byte must be 0 or 1",
                });
            }
        }
    }
    RawTensor::new(name, view.shape().to_vec(), data)
}

/// A set of named `f32` parameters as read from a safetensors file, keyed by PyG's
/// `state_dict` names and kept in PyG's shapes.
///
/// A layer is built from it by [`take`](Self::take)-ing each parameter it owns with the
/// shape it expects, then calling [`finish`](Self::finish), which refuses leftover
/// tensors — so a file for another configuration or another layer is an error, never a
/// silently half-loaded model (PyG's `load_state_dict(strict=True)` behaves the same).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    entries: BTreeMap<String, RawTensor<f32>>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        StateDict::default()
    }

    /// Reads every tensor of a safetensors buffer (the `__metadata__` is ignored).
    ///
    /// # Errors
    /// [`LayerError::Parse`] for bytes that are not safetensors,
    /// [`LayerError::WrongDtype`] for a tensor that is neither `F32` nor `F64`,
    /// [`LayerError::NonFinite`] for a NaN or infinite value (or an `F64` value beyond
    /// the `f32` range).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LayerError> {
        Self::from_bytes_named(bytes, BYTES)
    }

    /// Reads every tensor of a safetensors file (`std` feature).
    ///
    /// # Errors
    /// [`LayerError::Io`] when the file cannot be read, then as
    /// [`from_bytes`](Self::from_bytes).
    #[cfg(feature = "std")]
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LayerError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Self::from_bytes_named(&bytes, &path.display().to_string())
    }

    fn from_bytes_named(bytes: &[u8], source: &str) -> Result<Self, LayerError> {
        let st = parse(bytes, source)?;
        let mut names = st.names();
        names.sort_unstable();
        let mut sd = StateDict::new();
        for name in names {
            let view = st.tensor(name).map_err(|e| LayerError::Parse {
                source: source.to_string(),
                reason: e.to_string(),
            })?;
            sd.insert(name, decode_f32(name, &view)?)?;
        }
        Ok(sd)
    }

    /// Adds a tensor.
    ///
    /// # Errors
    /// [`LayerError::DuplicateTensor`] when `name` is already present,
    /// [`LayerError::NonFinite`] for a NaN or infinite value.
    pub fn insert(&mut self, name: &str, value: RawTensor<f32>) -> Result<(), LayerError> {
        check_finite(name, value.data())?;
        if self.entries.contains_key(name) {
            return Err(LayerError::DuplicateTensor {
                name: name.to_string(),
            });
        }
        self.entries.insert(name.to_string(), value);
        Ok(())
    }

    /// Moves every tensor of `other` into this one: a model's state dict gathered from
    /// its layers' ([`PygWeights::state_dict`](crate::PygWeights::state_dict) under
    /// each layer's prefix).
    ///
    /// # Errors
    /// [`LayerError::DuplicateTensor`] naming a key both hold; nothing is moved then.
    pub fn merge(&mut self, other: StateDict) -> Result<(), LayerError> {
        if let Some(name) = other.names().find(|n| self.entries.contains_key(*n)) {
            return Err(LayerError::DuplicateTensor {
                name: name.to_string(),
            });
        }
        self.entries.extend(other.entries);
        Ok(())
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The tensor named `name`, if present.
    pub fn get(&self, name: &str) -> Option<&RawTensor<f32>> {
        self.entries.get(name)
    }

    /// The tensor `name`, which must have exactly the shape `expected`.
    fn checked(&self, name: &str, expected: &[usize]) -> Result<&RawTensor<f32>, LayerError> {
        let Some(t) = self.entries.get(name) else {
            return Err(LayerError::MissingTensor {
                name: name.to_string(),
            });
        };
        if t.shape() != expected {
            return Err(LayerError::WrongShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: t.shape().to_vec(),
            });
        }
        Ok(t)
    }

    /// Removes and returns the tensor `name`, which must have exactly the shape
    /// `expected` (PyG's shape).
    ///
    /// # Errors
    /// [`LayerError::MissingTensor`] when absent, [`LayerError::WrongShape`] when the
    /// shape differs. On error the tensor stays in the dict.
    pub fn take_raw(
        &mut self,
        name: &str,
        expected: &[usize],
    ) -> Result<RawTensor<f32>, LayerError> {
        self.checked(name, expected)?;
        self.entries
            .remove(name)
            .ok_or_else(|| LayerError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// Removes and returns the tensor `name` as a [`Tensor`] of shape `expected`.
    ///
    /// # Errors
    /// As [`take_raw`](Self::take_raw); [`LayerError::Core`] when `expected` has rank
    /// above 3 (use [`take_reshaped`](Self::take_reshaped) for those). On error the
    /// tensor stays in the dict.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<Tensor<f32>, LayerError> {
        self.take_reshaped(name, expected, expected)
    }

    /// Removes the tensor `name`, checks it has PyG's shape `expected`, and returns it
    /// as a [`Tensor`] of shape `shape` with the same element count — e.g. `MemPooling`'s
    /// `conv.weight`, `[1, H, 1, 1]` in PyG, as a `[H]` tensor.
    ///
    /// # Errors
    /// As [`take_raw`](Self::take_raw); [`LayerError::InvalidArgument`] when `shape` has
    /// another element count than `expected`; [`LayerError::Core`] when `shape` has rank
    /// above 3. On error the tensor stays in the dict.
    pub fn take_reshaped(
        &mut self,
        name: &str,
        expected: &[usize],
        shape: &[usize],
    ) -> Result<Tensor<f32>, LayerError> {
        if checked_numel(expected) != checked_numel(shape) {
            return Err(LayerError::invalid_argument(
                "shape",
                alloc::format!("{shape:?}"),
                alloc::format!("must have as many elements as {name}'s shape {expected:?}"),
            ));
        }
        let t = Tensor::from_vec(shape, self.checked(name, expected)?.data().to_vec())?;
        self.entries.remove(name);
        Ok(t)
    }

    /// Ends a load: succeeds only when every tensor was taken.
    ///
    /// # Errors
    /// [`LayerError::UnexpectedTensors`] listing every tensor left.
    pub fn finish(self) -> Result<(), LayerError> {
        if self.entries.is_empty() {
            Ok(())
        } else {
            Err(LayerError::UnexpectedTensors {
                names: self.entries.into_keys().collect(),
            })
        }
    }

    /// Serialises every tensor, with its stored shape, as a safetensors buffer.
    ///
    /// # Errors
    /// [`LayerError::Parse`] if the safetensors writer refuses the header (over 100 MB of
    /// names).
    pub fn to_bytes(&self) -> Result<Vec<u8>, LayerError> {
        let views: Vec<ParamView<'_>> = self
            .entries
            .iter()
            .map(|(n, t)| ParamView {
                name: n,
                shape: t.shape(),
                data: t.data(),
            })
            .collect();
        save_params(&views)
    }
}

fn check_finite(name: &str, data: &[f32]) -> Result<(), LayerError> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(non_finite(name, i, f64::from(data[i]))),
        None => Ok(()),
    }
}

/// One parameter to save: its PyG name, its PyG shape and its values.
#[derive(Clone, Copy, Debug)]
pub struct ParamView<'a> {
    /// The PyG `state_dict` key.
    pub name: &'a str,
    /// The shape written to the file (PyG's shape).
    pub shape: &'a [usize],
    /// The values, row-major.
    pub data: &'a [f32],
}

impl<'a> ParamView<'a> {
    /// A tensor saved under its own shape.
    pub fn of(name: &'a str, tensor: &'a Tensor<f32>) -> Self {
        ParamView {
            name,
            shape: tensor.shape(),
            data: tensor.data(),
        }
    }

    /// A tensor saved under PyG's shape `shape` (same element count), e.g. a `[H]`
    /// tensor as `conv.weight` `[1, H, 1, 1]`.
    pub fn with_shape(name: &'a str, shape: &'a [usize], tensor: &'a Tensor<f32>) -> Self {
        ParamView {
            name,
            shape,
            data: tensor.data(),
        }
    }
}

/// A safetensors view over bytes we own.
struct OwnedView {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for OwnedView {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises parameters as a safetensors buffer of little-endian `F32` tensors.
///
/// # Errors
/// [`LayerError::LengthMismatch`] when a shape's element count differs from its data,
/// [`LayerError::DuplicateTensor`] for a name given twice, [`LayerError::NonFinite`]
/// for a NaN or infinite value, [`LayerError::InvalidArgument`] for an empty name,
/// [`LayerError::Parse`] if the safetensors writer refuses the header.
pub fn save_params(params: &[ParamView<'_>]) -> Result<Vec<u8>, LayerError> {
    let mut seen: BTreeMap<&str, ()> = BTreeMap::new();
    let mut views: Vec<(String, OwnedView)> = Vec::with_capacity(params.len());
    for p in params {
        if p.name.is_empty() {
            return Err(LayerError::invalid_argument(
                "name",
                "\"\"",
                "a parameter name must not be empty",
            ));
        }
        if seen.insert(p.name, ()).is_some() {
            return Err(LayerError::DuplicateTensor {
                name: p.name.to_string(),
            });
        }
        let n = checked_numel(p.shape);
        if n != Some(p.data.len()) {
            return Err(LayerError::LengthMismatch {
                name: p.name.to_string(),
                expected: n.unwrap_or(usize::MAX),
                got: p.data.len(),
            });
        }
        check_finite(p.name, p.data)?;
        let mut bytes = Vec::with_capacity(p.data.len() * 4);
        for v in p.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        views.push((
            p.name.to_string(),
            OwnedView {
                shape: p.shape.to_vec(),
                bytes,
            },
        ));
    }
    safetensors::tensor::serialize(views, None).map_err(|e| LayerError::Parse {
        source: BYTES.to_string(),
        reason: e.to_string(),
    })
}

/// Serialises named tensors, each under its own shape, as a safetensors buffer of
/// little-endian `F32` tensors (the names must be PyG's `state_dict` keys for PyG to
/// load the file). Takes [`Parameters::state_dict`](crate::Parameters::state_dict)'s
/// output directly; a parameter whose PyG shape has rank 4 (`MemPooling`'s
/// `conv.weight`) must go through [`save_params`] with [`ParamView::with_shape`].
///
/// # Errors
/// As [`save_params`].
pub fn save_state_dict<S: AsRef<str>>(
    entries: &[(S, &Tensor<f32>)],
) -> Result<Vec<u8>, LayerError> {
    let views: Vec<ParamView<'_>> = entries
        .iter()
        .map(|(n, t)| ParamView::of(n.as_ref(), t))
        .collect();
    save_params(&views)
}

#[cfg(feature = "std")]
/// [`save_params`] into a file.
///
/// # Errors
/// As [`save_params`]; [`LayerError::Io`] when the file cannot be written.
pub fn save_params_to_file(
    path: impl AsRef<Path>,
    params: &[ParamView<'_>],
) -> Result<(), LayerError> {
    write_file(path.as_ref(), &save_params(params)?)
}

#[cfg(feature = "std")]
/// [`save_state_dict`] into a file.
///
/// # Errors
/// As [`save_params`]; [`LayerError::Io`] when the file cannot be written.
pub fn save_state_dict_to_file<S: AsRef<str>>(
    path: impl AsRef<Path>,
    entries: &[(S, &Tensor<f32>)],
) -> Result<(), LayerError> {
    write_file(path.as_ref(), &save_state_dict(entries)?)
}

//! PyG weights in and out, written once for every layer.
//!
//! A layer implements [`PygWeights`] by handing over its [`Parameters`] (built from its
//! modules, so they carry PyG's keys and, where readout keeps a lower-rank view, PyG's
//! shape: [`Parameter::pyg_shape`]); the trait gives it PyG's `load_state_dict`
//! (strict by default, or [`LoadOptions`] for a key prefix and `strict=False`) and the
//! saving methods.
//!
//! Loading from bytes needs no file system (it works under `alloc` alone, e.g. on a
//! microcontroller with weights built in by `include_bytes!`); only the methods that
//! take a path are behind the `std` feature.
//!
//! In PyG, save with `safetensors.torch.save_file(model.state_dict(), path)` and load
//! ours with `model.load_state_dict(safetensors.torch.load_file(path))`.

pub mod state_dict;

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::LayerError;
use crate::param::Parameter;
use crate::param::Parameters;

pub use state_dict::{ParamView, StateDict, save_params, save_state_dict};
#[cfg(feature = "std")]
pub use state_dict::{save_params_to_file, save_state_dict_to_file};

/// How [`PygWeights::load_state_dict_with`] matches a state dict's keys to the layer's
/// parameters.
///
/// The default is PyG's `load_state_dict(sd)`: no prefix, strict.
///
/// ```
/// use readout_layers::LoadOptions;
/// // The MemPooling layer registered as `mem1` in a whole model's state dict,
/// // tolerating keys it does not have and keys it lacks.
/// let opts = LoadOptions::new().prefix("mem1.").strict(false);
/// assert!(!opts.strict);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions<'a> {
    /// Prepended to every parameter's key (`"mem1."` for a layer registered as
    /// `self.mem1` in a PyG model). Keys that do not start with it belong to other
    /// modules and are ignored.
    pub prefix: &'a str,
    /// PyG's `strict`: when `true` (the default) every parameter must be present and
    /// every key under the prefix must be a parameter's, else the load fails; when
    /// `false` missing parameters keep their values and both lists are returned.
    pub strict: bool,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            prefix: "",
            strict: true,
        }
    }
}

impl<'a> LoadOptions<'a> {
    /// No prefix, strict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: &'a str) -> Self {
        self.prefix = prefix;
        self
    }

    /// Sets strictness.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

/// What a load left out, as PyG's `load_state_dict` returns it (`missing_keys`,
/// `unexpected_keys`); both empty after a strict load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Full keys (prefix included) of the parameters the state dict did not hold; those
    /// parameters kept their values.
    pub missing: Vec<String>,
    /// Keys under the prefix that no parameter takes, sorted.
    pub unexpected: Vec<String>,
}

/// A layer whose weights load from and save to PyG's `state_dict`.
///
/// A layer supplies its parameters; every other method is written here once.
///
/// ```
/// use readout_layers::{LoadOptions, MemPooling, PygWeights, StateDict};
///
/// # fn main() -> Result<(), readout_layers::LayerError> {
/// // Two layers saved under their names in one model's state dict ...
/// let mem1 = MemPooling::new(4, 8, 3, 2, 1.0)?;
/// let mem2 = MemPooling::new(8, 2, 1, 1, 1.0)?;
/// let mut model = mem1.state_dict("mem1.")?;
/// model.merge(mem2.state_dict("mem2.")?)?;
/// let bytes = model.to_bytes()?;
/// // ... and one of them loaded back by its prefix.
/// let mut again = MemPooling::new(8, 2, 1, 1, 1.0)?;
/// again.load_state_dict_with(StateDict::from_bytes(&bytes)?, LoadOptions::new().prefix("mem2."))?;
/// assert_eq!(again.parameters(), mem2.parameters());
/// # Ok(())
/// # }
/// ```
pub trait PygWeights {
    /// The parameters, in PyG's `state_dict` order.
    fn parameters(&self) -> &Parameters;

    /// The parameters, mutable (for optimisers and loading weights).
    fn parameters_mut(&mut self) -> &mut Parameters;

    /// Replaces every parameter by the tensor of the same PyG `state_dict` key, as
    /// PyG's `load_state_dict` (strict) does. The layer's configuration (channels,
    /// sizes, ...) is not in a `state_dict`: build the layer with the PyG model's
    /// constructor arguments first.
    ///
    /// All or nothing: every tensor is checked before any parameter changes; gradients
    /// are kept.
    ///
    /// # Errors
    /// [`LayerError::MissingTensor`] naming the first parameter the state dict lacks,
    /// [`LayerError::WrongShape`] naming a tensor whose shape is not PyG's,
    /// [`LayerError::UnexpectedTensors`] listing the tensors no parameter takes (a file
    /// saved from a model of another configuration gives one of these). Wrong element
    /// types and non-finite values are refused when the [`StateDict`] is read.
    fn load_state_dict(&mut self, state_dict: StateDict) -> Result<(), LayerError> {
        self.load_state_dict_with(state_dict, LoadOptions::new())
            .map(drop)
    }

    /// [`load_state_dict`](Self::load_state_dict) with a key prefix and PyG's
    /// `strict` flag. Returns the missing and unexpected keys (both empty when strict).
    ///
    /// Still all or nothing, and a tensor of the wrong shape is an error in both modes
    /// (as in PyG).
    ///
    /// # Errors
    /// As [`load_state_dict`](Self::load_state_dict), with keys named in full
    /// (prefix included); when not strict, only [`LayerError::WrongShape`].
    fn load_state_dict_with(
        &mut self,
        state_dict: StateDict,
        options: LoadOptions<'_>,
    ) -> Result<Loaded, LayerError> {
        load(self.parameters_mut(), state_dict, options)
    }

    /// [`load_state_dict`](Self::load_state_dict) in builder form.
    ///
    /// # Errors
    /// As [`load_state_dict`](Self::load_state_dict).
    fn with_state_dict(mut self, state_dict: StateDict) -> Result<Self, LayerError>
    where
        Self: Sized,
    {
        self.load_state_dict(state_dict)?;
        Ok(self)
    }

    /// Loads a safetensors file saved by PyG's
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    ///
    /// # Errors
    /// [`LayerError::Io`] or [`LayerError::Parse`] for an unreadable file,
    /// [`LayerError::WrongDtype`] for a tensor that is neither `F32` nor `F64`,
    /// [`LayerError::NonFinite`] for a NaN or an infinity, then as
    /// [`load_state_dict`](Self::load_state_dict). Each names the tensor at fault.
    #[cfg(feature = "std")]
    fn load_state_dict_file(
        &mut self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<(), LayerError> {
        self.load_state_dict(StateDict::from_file(path)?)
    }

    /// The parameters as a [`StateDict`] under PyG's keys, each prefixed with `prefix`
    /// (`""` for the layer alone, `"mem1."` for a layer registered as `mem1`), with
    /// PyG's shapes. [`StateDict::merge`] gathers several layers into one model's.
    ///
    /// # Errors
    /// [`LayerError::NonFinite`] naming a parameter that holds a NaN or an infinity
    /// (such a checkpoint would not load back).
    fn state_dict(&self, prefix: &str) -> Result<StateDict, LayerError> {
        let mut sd = StateDict::new();
        for p in self.parameters().iter() {
            let key = alloc::format!("{prefix}{}", p.name());
            sd.insert(&key, raw(&key, p)?)?;
        }
        Ok(sd)
    }

    /// The parameters as a safetensors buffer in PyG's `state_dict` form (keys, PyG's
    /// shapes, `F32`), loadable by `model.load_state_dict(safetensors.torch.load(bytes))`.
    ///
    /// # Errors
    /// As [`state_dict`](Self::state_dict).
    fn state_dict_bytes(&self) -> Result<Vec<u8>, LayerError> {
        self.state_dict("")?.to_bytes()
    }

    /// Writes [`state_dict_bytes`](Self::state_dict_bytes) to a file, loadable by
    /// `model.load_state_dict(safetensors.torch.load_file(path))`.
    ///
    /// # Errors
    /// As [`state_dict_bytes`](Self::state_dict_bytes); [`LayerError::Io`] when the
    /// file cannot be written.
    #[cfg(feature = "std")]
    fn save_state_dict(&self, path: impl AsRef<std::path::Path>) -> Result<(), LayerError> {
        state_dict::write_file(path.as_ref(), &self.state_dict_bytes()?)
    }
}

/// A parameter's values under its PyG shape.
fn raw(key: &str, p: &Parameter) -> Result<crate::RawTensor<f32>, LayerError> {
    crate::RawTensor::new(key, p.pyg_shape().to_vec(), p.value().data().to_vec())
}

/// The one loader behind [`PygWeights::load_state_dict_with`].
fn load(
    params: &mut Parameters,
    mut state_dict: StateDict,
    options: LoadOptions<'_>,
) -> Result<Loaded, LayerError> {
    let mut values = Vec::with_capacity(params.len());
    let mut missing = Vec::new();
    for p in params.iter() {
        let key = alloc::format!("{}{}", options.prefix, p.name());
        if !options.strict && state_dict.get(&key).is_none() {
            missing.push(key);
            values.push(None);
            continue;
        }
        let value = state_dict.take_reshaped(&key, p.pyg_shape(), p.value().shape())?;
        values.push(Some(value));
    }
    let unexpected: Vec<String> = state_dict
        .names()
        .filter(|n| n.starts_with(options.prefix))
        .map(String::from)
        .collect();
    if options.strict && !unexpected.is_empty() {
        return Err(LayerError::UnexpectedTensors { names: unexpected });
    }
    // Every tensor is checked: only now does any parameter change.
    for (p, v) in params.iter_mut().zip(values) {
        if let Some(v) = v {
            p.set_value(v)?;
        }
    }
    Ok(Loaded {
        missing,
        unexpected,
    })
}

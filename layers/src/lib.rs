//! PyTorch Geometric's `EquilibriumAggregation` and `MemPooling`, on readout's tape.
//!
//! This crate is being built: it will hold both layers with PyG's parameter names,
//! initialisation and numbers. Available now: the error type ([`LayerError`]), arrays
//! of any rank as files store them ([`RawTensor`]), and with the `std` feature the
//! PyG-compatible safetensors weight I/O ([`StateDict`], [`save_state_dict`]) and the
//! reader of the PyG reference cases ([`Case`]).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod standin;
/// The names this crate uses from `readout-core` (a stand-in until the core lands).
pub(crate) mod core_api {
    pub use crate::standin::{CoreError, Tensor};
}

pub mod error;
pub mod raw;

#[cfg(feature = "std")]
pub mod case;
#[cfg(feature = "std")]
mod json;
#[cfg(feature = "std")]
pub mod state_dict;

pub use error::LayerError;
pub use raw::RawTensor;

#[cfg(feature = "std")]
pub use case::{
    Case, CaseArgs, EquilibriumArgs, ForwardArgs, LayerKind, Mask, MemPoolingArgs, Worst,
    load_cases, relative_error, worst_error,
};
#[cfg(feature = "std")]
pub use state_dict::{
    ParamView, StateDict, save_params, save_params_to_file, save_state_dict,
    save_state_dict_to_file,
};

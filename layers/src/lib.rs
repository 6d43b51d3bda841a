//! PyTorch Geometric's `EquilibriumAggregation` and `MemPooling`, on readout's tape.
//!
//! Same constructor arguments, parameter names (`state_dict` keys), initialisation and
//! numbers as PyG 2.8.1; weights load from and save to PyG's safetensors files (`std`
//! feature: [`StateDict`], [`save_state_dict`], [`save_params`]), and the PyG reference
//! cases are read by [`Case`] (`std` feature).
//!
//! ```
//! use readout_layers::{EquilibriumAggregation, Segments};
//! use readout_core::Tensor;
//!
//! # fn main() -> Result<(), readout_layers::LayerError> {
//! let layer = EquilibriumAggregation::new(1, 4, &[16], 3, 0.1)?;
//! let x = Tensor::from_vec(&[5, 1], vec![0.1, 0.5, 0.2, 0.9, 0.4])?;
//! let y = layer.forward(&x, Segments::One, None)?;
//! assert_eq!(y.shape(), &[1, 4]);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod equilibrium;
pub mod error;
pub mod init;
pub mod limits;
pub mod mem_pool;
pub mod optim;
pub mod param;
pub mod raw;
pub mod segments;

#[cfg(feature = "std")]
pub mod case;
#[cfg(feature = "std")]
pub mod parity;
#[cfg(feature = "std")]
pub mod state_dict;

pub use equilibrium::{EquilibriumAggregation, InnerGrad};
pub use error::LayerError;
pub use mem_pool::{Mask, MemPooling, PoolArgs, PoolPath, Pooled};
pub use optim::{Adam, Sgd};
pub use param::{Bound, Parameter, Parameters};
pub use raw::RawTensor;
pub use segments::Segments;

#[cfg(feature = "std")]
pub use case::{
    Case, CaseArgs, CaseMask, EquilibriumArgs, ForwardArgs, LayerKind, MemPoolingArgs, Worst,
    load_cases, relative_error, worst_error,
};
#[cfg(feature = "std")]
pub use state_dict::{
    ParamView, StateDict, save_params, save_params_to_file, save_state_dict,
    save_state_dict_to_file,
};

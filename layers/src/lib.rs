//! PyTorch Geometric's `EquilibriumAggregation` and `MemPooling`, on readout's tape.
//!
//! Same constructor arguments, parameter names (`state_dict` keys), initialisation and
//! numbers as PyG 2.8.1. Parameters live in PyG's modules ([`module`]: `Linear`,
//! `LayerNorm`, ...; each layer's `params`); weights load from and save to PyG's
//! safetensors files through [`PygWeights`] and [`StateDict`], and the PyG
//! reference cases are read by [`Case`] (`std` feature).
//!
//! Without the default `std` feature the crate is `no_std` + `alloc` (bare-metal
//! targets such as `thumbv7em-none-eabihf`): both layers' forwards, training on the
//! tape, and PyG weights in and out as bytes ([`StateDict::from_bytes`]) all work.
//! `std` adds what needs an operating system: reading and writing files
//! (`from_file`, `load_state_dict_file`, `save_*_to_file`), the PyG reference cases
//! and parity reports, the `Error` trait impl, the kept inference workspace (a mutex),
//! and `rayon` (its own feature).
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
pub mod module;
pub mod optim;
pub mod param;
pub mod raw;
pub mod segments;
pub mod weights;

#[cfg(feature = "std")]
pub mod case;
#[cfg(feature = "std")]
pub mod json;
#[cfg(feature = "std")]
pub mod parity;

pub use equilibrium::{EquilibriumAggregation, InnerGrad};
pub use error::LayerError;
pub use mem_pool::{Mask, MemPooling, PoolArgs, PoolPath, Pooled};
pub use module::{LayerNorm, Linear};
pub use optim::{Adam, Sgd};
pub use param::{Bound, Parameter, Parameters};
pub use raw::RawTensor;
pub use segments::Segments;
pub use weights::{LoadOptions, Loaded, PygWeights};

#[cfg(feature = "std")]
pub use case::{
    Case, CaseArgs, CaseMask, EquilibriumArgs, ForwardArgs, LayerKind, MemPoolingArgs, Worst,
    load_cases, relative_error, worst_error,
};
pub use weights::{ParamView, StateDict, save_params, save_state_dict};
#[cfg(feature = "std")]
pub use weights::{save_params_to_file, save_state_dict_to_file};

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
//! A user's crate needs only this one: [`Tensor`], [`Tape`] and the other types of
//! `readout-core` that a layer's API takes are re-exported here. With
//! `readout-layers = { path = "…/readout/layers" }` under `[dependencies]`, a complete
//! program (inference with both layers, then one training step) is:
//!
//! ```
//! use readout_layers::{Adam, EquilibriumAggregation, MemPooling, Optimizer, PoolArgs, PygWeights};
//! use readout_layers::{LayerError, Segments, Tape, Tensor};
//!
//! fn main() -> Result<(), LayerError> {
//!     // Two sets of scalars, aggregated into 4 features each (PyG's arguments:
//!     // in_channels, out_channels, num_layers, grad_iter, lamb).
//!     let aggr = EquilibriumAggregation::new(1, 4, &[16], 3, 0.1)?;
//!     let x = Tensor::from_vec(&[5, 1], vec![0.1, 0.5, 0.2, 0.9, 0.4])?;
//!     let y = aggr.forward(&x, Segments::Index(&[0, 0, 1, 1, 1]), None)?;
//!     assert_eq!(y.shape(), &[2, 4]);
//!
//!     // Pool a graph of 5 nodes with 4 features into 2 clusters of 3 features
//!     // (in_channels, out_channels, heads, num_clusters, tau).
//!     let mut pool = MemPooling::new(4, 3, 2, 2, 1.0)?;
//!     let nodes = Tensor::from_vec(&[5, 4], (0..20).map(|i| i as f32 / 20.0).collect())?;
//!     let (out, s) = pool.forward(&nodes, PoolArgs::new())?;
//!     assert_eq!((out.shape(), s.shape()), (&[1, 2, 3][..], &[1, 5, 2][..]));
//!
//!     // One training step on MemPooling's KL loss: record the forward on a tape,
//!     // differentiate, accumulate into the parameters, let Adam update them.
//!     let mut adam = Adam::new(1e-3)?;
//!     let mut tape = Tape::<f32>::new();
//!     let bound = pool.parameters().bind(&mut tape, true);
//!     let xv = tape.constant(nodes.clone());
//!     let mut pooled = pool.forward_on(&mut tape, &bound, xv, PoolArgs::new())?;
//!     let kl = pooled.kl_loss(&mut tape)?;
//!     let grads = tape.backward(kl)?;
//!     pool.parameters_mut().accumulate(&bound, &grads);
//!     adam.step(pool.parameters_mut());
//!     pool.parameters_mut().zero_grad();
//!     Ok(())
//! }
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
pub mod parity;

pub use equilibrium::{EquilibriumAggregation, InnerGrad};
pub use error::LayerError;
pub use mem_pool::{Mask, MemPooling, PoolArgs, PoolPath, Pooled};
pub use module::{LayerNorm, Linear};
#[cfg(feature = "std")]
pub use optim::OptimizerState;
pub use optim::{
    Adam, CosineAnnealingLR, ExponentialLR, LrScheduler, Optimizer, Sgd, StepLR, clip_grad_norm,
};
pub use param::{Bound, Parameter, Parameters};
pub use raw::RawTensor;
/// The tensor, tape and error types of `readout-core` that the layers' API takes and
/// returns, so that a user depends on `readout-layers` alone.
pub use readout_core::{CoreError, Gradients, Real, Tape, Tensor, Var};
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

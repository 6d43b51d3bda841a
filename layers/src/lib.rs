//! PyTorch Geometric's `EquilibriumAggregation` and `MemPooling`, on readout's tape.
//!
//! This crate is being built: it will hold both layers with PyG's parameter names,
//! initialisation and numbers, the safetensors weight I/O (`std` feature) and the
//! parity tool (`examples/parity.rs`). Nothing public is exported yet.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

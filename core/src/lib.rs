//! Tensors and a tape-based reverse-mode autodiff engine (being written).
#![no_std]
#![forbid(unsafe_code)]

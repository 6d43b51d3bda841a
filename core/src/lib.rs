//! Tensors and a tape-based reverse-mode autodiff engine whose backward pass can itself
//! be differentiated.
//!
//! A [`Tape`] is an arena of nodes. Each op (`matmul`, `tanh`, `scatter_add`, ...)
//! checks its operands' shapes, computes its value through `readout-kernels`, and
//! appends a node; you hold [`Var`] handles. [`Tape::grad`] runs the backward rules
//! from an output back to the leaves. Every rule is written in tape ops, so with
//! `create_graph = true` the gradient computation is itself recorded and can be
//! differentiated again — PyTorch's `autograd.grad(..., create_graph=True)`, which
//! PyG's `EquilibriumAggregation` uses inside its unrolled inner optimisation.
//!
//! The engine is generic over `f32` (the fast path, SIMD kernels) and `f64` (scalar
//! kernels, used for gradient checks in double precision as `torch.autograd.gradcheck`
//! does).
//!
//! # Example: a second derivative from two nested `grad` calls
//!
//! For `f(x) = Σ sin²`-like smooth functions the second derivative of a composite
//! exposes any rule that detaches its incoming gradient. Here `f(x) = x·tanh(x)`:
//! `f'(x) = tanh x + x·(1 − tanh² x)` and `f''(x) = 2·(1 − tanh² x)·(1 − x·tanh x)`.
//!
//! ```
//! use readout_core::{Tape, Tensor};
//!
//! # fn main() -> Result<(), readout_core::CoreError> {
//! let mut tape = Tape::<f64>::new();
//! let x = tape.variable(Tensor::scalar(0.7));
//! let t = tape.tanh(x)?;
//! let f = tape.mul(x, t)?;
//! // First derivative, recorded so it can be differentiated again.
//! let df = tape.grad(f, None, &[x], true)?[0];
//! // Second derivative.
//! let d2f = tape.grad(df, None, &[x], false)?[0];
//!
//! let th = 0.7f64.tanh();
//! let expected = 2.0 * (1.0 - th * th) * (1.0 - 0.7 * th);
//! assert!((tape.value(d2f)?.item() - expected).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```
//!
//! # Checking gradients
//! [`gradcheck::check_gradients`] compares first and second derivatives of any
//! function built on a tape with central finite differences in `f64`, as PyTorch's
//! `gradcheck` / `gradgradcheck` do; the layers crate and the fuzz targets reuse it.
//!
//! # Memory
//! Eager backward passes (`create_graph = false`, [`Tape::backward`]) free every
//! intermediate they create. [`Tape::stats`] reports nodes and bytes held,
//! [`Tape::mark`] / [`Tape::truncate`] drop what a computation no longer needs, and
//! [`Tape::clear`] releases everything.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod grad;
pub mod gradcheck;
mod op;
mod ops;
mod pool;
mod shape;
mod tape;
mod tensor;

pub use error::CoreError;
pub use grad::Gradients;
pub use ops::custom::CustomBackward;
pub use ops::index::{check_index, check_ptr};
pub use readout_kernels::Real;
pub use shape::{MAX_RANK, Shape};
pub use tape::{Mark, Tape, TapeStats, Var};
pub use tensor::Tensor;

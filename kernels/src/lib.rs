//! Compute kernels for readout: slices in, slices out.
//!
//! Every function here is a pure function over `&[T]` / `&mut [T]` with explicit
//! shapes, for `T` = `f32` or `f64` ([`Real`]). No allocation, no tensors, no tape:
//! the autodiff core (`readout-core`) validates user shapes and calls these.
//!
//! Each accelerated kernel has a scalar reference twin (the `reference` module next to
//! it); the tests check the fast path against it.
//!
//! ```
//! use readout_kernels::gemm::{gemm, GemmShape};
//! // C[2×2] = A[2×3] · B[3×2]
//! let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let b = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
//! let mut c = [0.0f32; 4];
//! gemm(&GemmShape::new(2, 2, 3), 1.0, &a, &b, 0.0, &mut c);
//! assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod dispatch;
pub mod elementwise;
pub mod gemm;
pub mod real;
pub mod reduce;
pub mod rows;
pub mod segment;
mod simd;

pub use dispatch::Path;
pub use real::Real;

//! Compute kernels for readout: slices in, slices out.
//!
//! Every function here is a pure function over `&[T]` / `&mut [T]` with explicit
//! shapes, for `T` = `f32` or `f64` ([`Real`]). No allocation, no tensors, no tape:
//! the autodiff core (`readout-core`) validates user shapes and calls these.
//!
//! Each accelerated kernel has a scalar reference beside its SIMD body, in the same
//! file; the tests check every fast path against it.
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
//!
//! # Fast paths and how one is chosen
//!
//! The `f32` kernels (GEMM, unary and binary elementwise, row softmax, layer norm
//! forward and backward) exist in three versions, listed by [`Path`]; [`dispatch`] picks one:
//!
//! - **AVX2 + FMA** (`core::arch` intrinsics), picked at run time with the default
//!   `std` feature when the CPU has both (`is_x86_feature_detected!`, checked once and
//!   cached in an atomic). So a plain `cargo build --release`, with no `RUSTFLAGS`,
//!   runs the AVX2 code on any AVX2 machine and still runs on older x86-64 CPUs.
//!   Without `std` it is picked only when the build enables `avx2` and `fma`.
//! - **portable**, on `wide::f32x8`: for other CPUs and targets.
//! - **scalar**: the reference code, also the fallback of last resort.
//!
//! Why not `wide` alone: `wide` picks its instruction set when `wide` itself is
//! compiled, so in a default x86-64 build its `f32x8` is two SSE halves, and wrapping
//! its calls in `#[target_feature]` functions does not change that. Measured on the
//! development machine (AMD Zen 4, shared with other jobs), the GEMM on the `wide`
//! path of a default build does about a quarter of the work per CPU-second of the
//! AVX2 path (12–20 against 50–75 GFLOP/s; `README.md` has the tables).
//!
//! A kernel is written once, generic over a small 8-lane vector trait
//! (`simd::Simd`) implemented for AVX2 and for `wide`, and every call goes through one
//! dispatch point, [`dispatch`], whose module documentation explains the design (and
//! how to add a kernel). Tests and benchmarks can run a given path through the
//! `*_with` functions ([`gemm::gemm_with`], [`elementwise::unary_with`],
//! [`rows::softmax_rows_with`], ...) or force one process-wide with
//! [`dispatch::set_path`].
//!
//! # Threads
//!
//! With the `rayon` feature, a long call runs on the current rayon pool: the GEMM by
//! blocks of rows of `C` (from [`gemm::PARALLEL_MIN_FLOPS`]), the elementwise kernels
//! and long sums by parts (from [`parallel::PARALLEL_MIN_VALUES`]). No result depends
//! on the number of threads; [`parallel::on_this_thread`] keeps a caller's kernels on
//! its thread when it has split its work itself.
//!
//! `unsafe` is confined to small blocks, each with a `// SAFETY:` comment: the one
//! call into the `#[target_feature(enable = "avx2,fma")]` trampoline in [`dispatch`]
//! (sound because an AVX2 token only exists after detection); in the AVX2 vector
//! trait, one call into its safe `#[target_feature]` arithmetic (same argument,
//! written once) and its four pointer loads and stores (plus their bounds); the
//! micro-kernel's unchecked loads of `A` (bounds asserted once per tile) and the view
//! of the GEMM packing buffer after it is filled.
//!
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod dispatch;
pub mod elementwise;
pub mod gemm;
pub mod layout;
pub mod parallel;
pub mod real;
pub mod reduce;
pub mod rows;
pub mod segment;
mod simd;

pub use dispatch::Path;
pub use real::Real;

//! Elementwise kernels: unary maps ([`unary`]), broadcasting binary arithmetic
//! ([`binary`]) and [`axpy`].
//!
//! For `f32`, [`unary`] and [`binary`] run the dispatched SIMD path
//! ([`crate::dispatch`]); the transcendental functions there are this crate's own
//! vector implementations, whose maximum errors are stated on each [`Unary`] variant
//! and checked by the tests (`tests/elementwise.rs`). `f64` uses `libm` one value at a
//! time.

mod binary;
mod unary;

pub use binary::{Binary, Broadcast, binary, binary_with};
pub use unary::{Unary, unary, unary_inplace, unary_with};

use crate::Real;

/// `y += alpha · x`.
///
/// # Panics
/// If `x` and `y` differ in length.
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "axpy: x and y differ in length");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

//! [`RawTensor`]: an array of any rank exactly as a file stores it.
//!
//! `readout_core::Tensor` has rank 0 to 3, but PyG's state dicts also hold rank-4
//! parameters (`MemPooling`'s `conv.weight` is `[1, heads, 1, 1]`). Files are therefore
//! read into `RawTensor`s, which keep PyG's shape so that it can be checked and written
//! back unchanged, and are converted to a `Tensor` (possibly under another shape with the
//! same element count) where the layers need one.

use alloc::vec::Vec;

use readout_kernels::Real;

use crate::error::LayerError;
use readout_core::Tensor;

/// The number of elements of `shape`, or `None` when the product overflows `usize`.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// An owned, row-major array of any rank: a shape and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Copy> RawTensor<T> {
    /// An array from its shape and its values in row-major order.
    ///
    /// # Errors
    /// [`LayerError::LengthMismatch`] (named `name`) when `data` does not hold exactly
    /// the shape's element count, or when that count overflows `usize`.
    pub fn new(name: &str, shape: Vec<usize>, data: Vec<T>) -> Result<Self, LayerError> {
        match checked_numel(&shape) {
            Some(n) if n == data.len() => Ok(RawTensor { shape, data }),
            n => Err(LayerError::LengthMismatch {
                name: name.into(),
                expected: n.unwrap_or(usize::MAX),
                got: data.len(),
            }),
        }
    }

    /// The dimensions, exactly as stored.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The number of values.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The shape and the values, consuming the array.
    pub fn into_parts(self) -> (Vec<usize>, Vec<T>) {
        (self.shape, self.data)
    }
}

impl<T: Real> RawTensor<T> {
    /// A copy of a tensor, with its shape.
    pub fn from_tensor(t: &Tensor<T>) -> Self {
        RawTensor {
            shape: t.shape().to_vec(),
            data: t.data().to_vec(),
        }
    }

    /// Converts into a [`Tensor`] of the same shape.
    ///
    /// # Errors
    /// [`LayerError::Core`] when the rank is above the core's maximum of 3.
    pub fn into_tensor(self) -> Result<Tensor<T>, LayerError> {
        Ok(Tensor::from_vec(&self.shape, self.data)?)
    }

    /// Converts into a [`Tensor`] of shape `shape`, which must have the same element
    /// count (e.g. `[1, H, 1, 1]` → `[H]`).
    ///
    /// # Errors
    /// [`LayerError::Core`] when `shape` has rank above 3 or another element count.
    pub fn into_tensor_shaped(self, shape: &[usize]) -> Result<Tensor<T>, LayerError> {
        Ok(Tensor::from_vec(shape, self.data)?)
    }
}

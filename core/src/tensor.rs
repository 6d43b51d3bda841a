//! `Tensor`: an owned, contiguous, row-major array of rank 0 to 3.

use alloc::vec;
use alloc::vec::Vec;

use crate::{CoreError, Real, Shape};

/// An owned, contiguous, row-major array of `f32` or `f64` with a shape of rank 0 to 3.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Shape,
    data: Vec<T>,
}

fn shape_of(op: &'static str, dims: &[usize]) -> Result<Shape, CoreError> {
    Shape::new(dims).ok_or(CoreError::RankTooHigh {
        op,
        rank: dims.len(),
    })
}

/// Checks that a tensor of `shape` can be allocated: its element count fits `usize`
/// and its bytes fit one allocation (`isize::MAX`, `Vec`'s limit).
pub(crate) fn check_alloc<T>(op: &'static str, shape: Shape) -> Result<usize, CoreError> {
    shape
        .checked_numel()
        .filter(|&n| {
            n.checked_mul(core::mem::size_of::<T>().max(1))
                .is_some_and(|b| b <= isize::MAX as usize)
        })
        .ok_or(CoreError::TooLarge { op, shape })
}

impl<T: Real> Tensor<T> {
    /// A tensor from its shape and its values in row-major order.
    ///
    /// # Errors
    /// [`CoreError::RankTooHigh`] for more than three dimensions,
    /// [`CoreError::DataLength`] when `data` does not hold exactly the shape's count.
    pub fn from_vec(dims: &[usize], data: Vec<T>) -> Result<Self, CoreError> {
        let shape = shape_of("Tensor::from_vec", dims)?;
        Self::from_shape(shape, data)
    }

    /// A tensor from a [`Shape`] and its values.
    ///
    /// # Errors
    /// [`CoreError::DataLength`] when `data` does not hold exactly the shape's count.
    pub fn from_shape(shape: Shape, data: Vec<T>) -> Result<Self, CoreError> {
        if data.len() != shape.numel() {
            return Err(CoreError::DataLength {
                op: "Tensor::from_vec",
                shape,
                len: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros.
    ///
    /// # Errors
    /// As [`Tensor::full`].
    pub fn zeros(dims: &[usize]) -> Result<Self, CoreError> {
        Self::full(dims, T::ZERO)
    }

    /// A tensor with every value equal to `v`.
    ///
    /// # Errors
    /// [`CoreError::RankTooHigh`] for more than three dimensions,
    /// [`CoreError::TooLarge`] when the element count overflows or cannot be allocated.
    pub fn full(dims: &[usize], v: T) -> Result<Self, CoreError> {
        let shape = shape_of("Tensor::full", dims)?;
        check_alloc::<T>("Tensor::full", shape)?;
        Ok(Self::filled(shape, v))
    }

    /// A tensor of the given shape filled with `v`.
    ///
    /// # Panics
    /// When the element count overflows `usize` or cannot be allocated (use
    /// [`Tensor::full`] for a typed error instead).
    pub fn filled(shape: Shape, v: T) -> Self {
        Tensor {
            shape,
            data: vec![v; shape.numel()],
        }
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(v: T) -> Self {
        Tensor {
            shape: Shape::SCALAR,
            data: vec![v],
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        self.shape.dims()
    }

    /// The shape as a [`Shape`] value.
    pub fn dims(&self) -> Shape {
        self.shape
    }

    /// The values in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The values in row-major order, mutable.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The values, consuming the tensor.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// The number of values.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    /// The first value (the value of a scalar).
    pub fn item(&self) -> T {
        self.data.first().copied().unwrap_or(T::ZERO)
    }

    /// The same values under another shape with the same number of elements.
    ///
    /// # Errors
    /// [`CoreError::DataLength`] when the element counts differ.
    pub fn reshape(self, dims: &[usize]) -> Result<Self, CoreError> {
        let shape = shape_of("Tensor::reshape", dims)?;
        Self::from_shape(shape, self.data)
    }

    /// Converts every value to another element type (`f32` ↔ `f64`).
    pub fn cast<U: Real>(&self) -> Tensor<U> {
        Tensor {
            shape: self.shape,
            data: self.data.iter().map(|v| U::from_f64(v.to_f64())).collect(),
        }
    }

    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }

    /// The bytes held by the values.
    pub fn bytes(&self) -> usize {
        self.data.capacity() * core::mem::size_of::<T>()
    }

    /// Builds a tensor from a shape already validated and data of the right length.
    pub(crate) fn raw(shape: Shape, data: Vec<T>) -> Self {
        debug_assert_eq!(shape.numel(), data.len());
        Tensor { shape, data }
    }
}

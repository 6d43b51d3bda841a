//! Temporary stand-in for `readout_core::{Tensor, CoreError}` until the core crate lands
//! on `main`: the same names and signatures, nothing more. Deleted at that merge.

use alloc::vec::Vec;
use core::fmt;

use readout_kernels::Real;

/// Stand-in for `readout_core::CoreError`.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreError {
    /// A shape with more than three dimensions was asked for.
    RankTooHigh {
        /// The op or constructor.
        op: &'static str,
        /// How many dimensions were given.
        rank: usize,
    },
    /// The data does not hold as many values as the shape needs.
    DataLength {
        /// The op or constructor.
        op: &'static str,
        /// Values needed.
        needed: usize,
        /// Values given.
        len: usize,
    },
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::RankTooHigh { op, rank } => write!(
                f,
                "{op}: a shape of rank {rank} was asked for; tensors have rank 0 to 3"
            ),
            CoreError::DataLength { op, needed, len } => {
                write!(
                    f,
                    "{op}: the shape needs {needed} values but {len} were given"
                )
            }
        }
    }
}

/// Stand-in for `readout_core::Tensor`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Real> Tensor<T> {
    /// A tensor from its shape and its values in row-major order.
    ///
    /// # Errors
    /// More than three dimensions, or a data length that is not the shape's count.
    pub fn from_vec(dims: &[usize], data: Vec<T>) -> Result<Self, CoreError> {
        if dims.len() > 3 {
            return Err(CoreError::RankTooHigh {
                op: "Tensor::from_vec",
                rank: dims.len(),
            });
        }
        let needed = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if needed != Some(data.len()) {
            return Err(CoreError::DataLength {
                op: "Tensor::from_vec",
                needed: needed.unwrap_or(usize::MAX),
                len: data.len(),
            });
        }
        Ok(Tensor {
            shape: dims.to_vec(),
            data,
        })
    }

    /// The dimensions.
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
}

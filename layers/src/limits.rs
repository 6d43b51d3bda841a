//! Caps on the sizes the layers accept, checked before anything is allocated.
//!
//! A size that comes from an argument (`dim_size`, `batch_size`, `max_num_nodes`, an
//! `index` or `batch` entry, a constructor argument) can ask for far more memory than
//! exists; without a cap, the allocation aborts the process (or panics with "capacity
//! overflow" when the element count overflows `usize`). Every such size is checked
//! against these limits first and refused with [`LayerError::TooLarge`], which names
//! the argument and the factors.
//!
//! The caps are far above the reference workloads (the largest buffer of
//! `../shared/bench/workloads.json` holds about 10⁸ values, under 2²⁷) and far below
//! what overflows: they only refuse sizes that cannot be meant.

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::LayerError;

/// The largest number of values of any one buffer a layer allocates: a parameter, an
/// output, or an intermediate such as EquilibriumAggregation's `N × width` activations,
/// MemPooling's padded `S [B, N_max, K]` or its `B × K × F` pooled rows. 2³⁰ values
/// (4 GiB of `f32`, 8 GiB of `f64`).
pub const MAX_ELEMENTS: usize = 1 << 30;

/// The largest total number of parameter values of one layer: [`MAX_ELEMENTS`].
pub const MAX_PARAMETERS: usize = MAX_ELEMENTS;

/// The largest `grad_iter` of EquilibriumAggregation. Each inner step records about
/// one forward and one backward pass of the potential on the training path, so the
/// tape grows linearly with it; PyG's default is 5 and its papers use at most tens.
pub const MAX_GRAD_ITER: usize = 10_000;

/// The product of `dims` if it is at most `limit`, else [`LayerError::TooLarge`]
/// naming `name` (overflow of `usize` included).
pub(crate) fn check(name: &str, dims: &[usize], limit: usize) -> Result<usize, LayerError> {
    match dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(n) if n <= limit => Ok(n),
        _ => Err(LayerError::TooLarge {
            name: String::from(name),
            dims: Vec::from(dims),
            limit,
        }),
    }
}

/// [`check`] against [`MAX_ELEMENTS`].
pub(crate) fn elements(name: &str, dims: &[usize]) -> Result<usize, LayerError> {
    check(name, dims, MAX_ELEMENTS)
}

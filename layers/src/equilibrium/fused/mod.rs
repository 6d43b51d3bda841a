//! The fused engines of `EquilibriumAggregation`: the inner loop's maths written
//! straight over slices, row-blocked, with no tape. Each step names, in a comment, the
//! tape op(s) of the reference path ([`super::reference`], [`super::potential`]) it
//! replaces; the tests hold every engine to the reference in `f64`.
//!
//! - [`forward`]: the inference engine (`InnerGrad::Eager`, `forward`): the inner
//!   loop's first-order gradients `∂E/∂y`, block by block.
//! - [`hvp`]: the Hessian-vector products of the adjoint training pass
//!   (`InnerGrad::Adjoint`), written out by hand as reverse-over-forward through the
//!   potential's Linear → LayerNorm → tanh blocks.
//! - [`net`]: the potential's weights laid out for both engines.

pub(crate) mod forward;
pub(crate) mod hvp;
pub(crate) mod net;

/// Floating-point operations one thread should have before work is split across
/// threads: about 40–60 µs of one core at the 35–50 GFLOP/s the block loops reach,
/// ten times the few microseconds it costs to wake a rayon worker and join it. Below
/// that, a second thread costs more than it saves (this is what made 2 threads slower
/// than 1 on the smallest workloads).
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
pub(crate) const MIN_FLOPS_PER_THREAD: usize = 2_000_000;

/// How many threads to split `work` floating-point operations over, in at most
/// `pieces` pieces: 1 without the `rayon` feature, in a pool of one thread, or when
/// each thread would get less than [`MIN_FLOPS_PER_THREAD`].
pub(crate) fn threads_for(work: usize, pieces: usize) -> usize {
    #[cfg(feature = "rayon")]
    {
        let pool = rayon::current_num_threads().max(1);
        pool.min(pieces).min(work / MIN_FLOPS_PER_THREAD).max(1)
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = (work, pieces);
        1
    }
}

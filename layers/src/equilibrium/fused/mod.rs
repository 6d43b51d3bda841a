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

pub(crate) mod forward;
pub(crate) mod hvp;

/// Floating-point operations one thread should have before work is split across
/// threads: about 40–60 µs of one core at the 35–50 GFLOP/s the block loops reach,
/// ten times the few microseconds it costs to wake a rayon worker and join it. Below
/// that, a second thread costs more than it saves (this is what made 2 threads slower
/// than 1 on the smallest workloads).
///
/// Measured with `cargo run --release -p readout-benches --example ab_threads`
/// (1 and 2 threads interleaved, medians), on the reference workloads and the
/// criterion shapes: see `benches/README.md`.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
pub(crate) const MIN_FLOPS_PER_THREAD: usize = 2_000_000;

/// What clearing one freshly allocated scratch value costs, in floating-point
/// operations of the block loops: a new page is faulted in and cleared by the kernel,
/// then zeroed again by `vec![0; n]` — about 1 µs per 4 KiB page in this VM (perf:
/// `exc_page_fault`, `clear_page_erms`, `memset` took a quarter of eq_median's
/// training call), i.e. ~0.3 ns per `f32`, ~12 operations at 40 GFLOP/s; counted
/// with margin. A second thread needs its own scratch, so on small calls this, not
/// the wake-up, decides whether it pays.
pub(crate) const ZEROING_FLOPS_PER_VALUE: usize = 32;

/// How many threads to split `work` floating-point operations over, in at most
/// `pieces` pieces, when each thread beyond the first first costs `setup` operations
/// (its scratch, if it has none yet): 1 without the `rayon` feature, in a pool of one
/// thread, or when each thread would get less than [`MIN_FLOPS_PER_THREAD`] plus
/// `setup`.
pub(crate) fn threads_for(work: usize, pieces: usize, setup: usize) -> usize {
    #[cfg(feature = "rayon")]
    {
        let pool = rayon::current_num_threads().max(1);
        let per_thread = MIN_FLOPS_PER_THREAD + setup;
        pool.min(pieces).min(work / per_thread).max(1)
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = (work, pieces, setup);
        1
    }
}

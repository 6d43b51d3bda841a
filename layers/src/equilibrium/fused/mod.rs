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
///
/// Not raised: eq_small's inference has 6.4 MFLOP a step (3.2 per thread) and gains
/// about a quarter from the second thread on a quiet machine (3.29 → 2.48 ms). What
/// made small calls lose was not this bar but what came with the split: blocks of
/// unequal size, GEMMs splitting again inside a thread's blocks, and the second
/// thread's fresh scratch ([`ZEROING_FLOPS_PER_VALUE`]). Compare with
/// `cargo run --release -p readout-benches --example ab_threads -- NAME` (1 and 2
/// threads interleaved, medians); see `benches/README.md`.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
pub(crate) const MIN_FLOPS_PER_THREAD: usize = 2_000_000;

/// What clearing one freshly allocated scratch value costs, in floating-point
/// operations of the block loops. A new page is faulted in and cleared by the kernel,
/// then zeroed again by `vec![0; n]`. Measured on eq_median's training call (one
/// thread, `perf stat -e page-faults`): about 1 040 page faults per call, and the call
/// 1.6 ms faster (4.4 → 2.75 ms) when glibc is told to keep its memory
/// (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`): ~1.5 µs per 4 KiB page,
/// ~0.37 ns per `f32`, which the GEMMs of these loops (90 GFLOP/s on 100×256×256)
/// would spend on ~33 operations. Counted twice that: the scratch is zeroed again
/// on every call even when its pages are reused (inference keeps its workspace), and
/// the second thread starts with cold caches. With 32, eq_median's inference split its
/// 100 elements and ran 1.22× slower on 2 threads than on 1 (`ab_threads`, four runs,
/// a loaded machine); with 64 it stays on one thread (1.00–1.01×). A second thread
/// needs a scratch of its own, so on small calls this, not the wake-up, decides
/// whether the thread pays.
pub(crate) const ZEROING_FLOPS_PER_VALUE: usize = 64;

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

/// Runs `run_piece` on every piece: in parallel when `parallel` (with the `rayon`
/// feature), else one after the other on this thread. Either way the pieces' GEMMs
/// stay on the thread that runs the piece ([`readout_kernels::gemm::on_this_thread`]):
/// in parallel every thread already has a piece, and on one thread the GEMMs are only
/// a part of work that was judged too small to split.
pub(crate) fn run_pieces<P: Send>(
    pieces: impl Iterator<Item = P>,
    parallel: bool,
    run_piece: impl Fn(P) + Send + Sync,
) {
    #[cfg(feature = "rayon")]
    if parallel {
        use rayon::prelude::*;
        let pieces: alloc::vec::Vec<P> = pieces.collect();
        pieces
            .into_par_iter()
            .for_each(|p| readout_kernels::gemm::on_this_thread(|| run_piece(p)));
        return;
    }
    let _ = parallel;
    readout_kernels::gemm::on_this_thread(|| pieces.for_each(run_piece));
}

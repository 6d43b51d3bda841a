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
/// thread's fresh scratch (now [`CLEARING_FLOPS_PER_VALUE`]). Compare with
/// `cargo run --release -p readout-benches --example ab_threads -- NAME` (1 and 2
/// threads interleaved, medians); see `benches/README.md`.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
pub(crate) const MIN_FLOPS_PER_THREAD: usize = 2_000_000;

/// What giving a second thread its scratch costs per value, in floating-point
/// operations of the block loops: clearing it (a `memset`: the layer's workspace keeps
/// the scratches from one call to the next, so its pages are faulted in once per
/// layer, not once per call), and the second core's cold caches on it.
///
/// History, all with `ab_threads` (2 threads against 1, interleaved, medians of the
/// rounds' ratios; 2026-12-02, 04:30–05:40 UTC, on the 2-vCPU Xeon VM, AVX2 path,
/// nothing else running; the spread between two identical 1-thread pools measured the
/// same way was up to 1.07 on these shapes): while every call allocated its scratch, page faults came on top
/// (~1.5 µs per 4 KiB page here), counted as 64 per value; that kept `eq_median` on one
/// thread, and `eqx_width_100` too, whose inference was then 1.05–1.07× slower on 2
/// threads (its hoisted GEMM split, its groups did not). With the kept workspace, 8
/// per value let both split: `eqx_width_100` infer 0.73–0.83, but `eq_median`'s
/// single-step inference swung between 0.89 and 1.17 from one run to the next. 40
/// splits `eqx_width_100` (each of its 2 048-row groups has 7.8 MFLOP a step and a
/// 116 k-value scratch over 3 steps; 49 is the most that still splits it), `eq_small`
/// and `eq_median`'s training, and keeps `eq_median`'s inference (28 MFLOP, a 333
/// k-value scratch, one step; 36 is the least that keeps it) on one thread.
pub(crate) const CLEARING_FLOPS_PER_VALUE: usize = 40;

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

//! Long streaming kernels split over the rayon pool.
//!
//! An elementwise kernel over a large tensor (`a · b`, a broadcast, a copy) does one
//! or two floating-point operations per value it moves: it runs at the speed one core
//! streams memory, not at the speed it computes. On the machines these crates are
//! measured on, two cores stream about twice what one does (two copies of a 32 MB
//! multiply-add loop run side by side in the time one takes alone), so such a pass
//! split in two halves finishes in about half the time. Its result does not depend on
//! the split: every value is computed by the same operations either way.
//!
//! With the `rayon` feature, `for_each_part` splits calls of at least
//! [`PARALLEL_MIN_VALUES`] values into one part per thread of the current pool;
//! without it, or inside [`on_this_thread`], it runs the whole call at once. Long sums
//! ([`crate::reduce::sum_all`]) go by fixed blocks (`sum_of_blocks`) so that their
//! rounding does not depend on the number of threads either.

/// Below this many values (8 MiB of `f32`) an elementwise call stays on one thread.
/// Smaller operands mostly sit in the caches (2 MiB of L2 per core here), where one
/// core is fast and a split mostly moves lines between the cores' caches. Measured
/// with `ab_threads` on 2026-12-02 (2-vCPU Xeon VM, AVX2 path, nothing else running):
/// at 1 MiB, the training of `eqx_no_hidden` (tensors of 2.5 MiB) showed no gain from
/// the split (2-against-1 ratios 1.01–1.29 over four runs, where two identical 1-thread
/// pools differ by up to 1.07), while `mp_skewed`'s training, whose loss goes over a
/// 32 MB padded `S`, ran at 0.69× the 1-thread time in the benchmark window of 05:38.
pub const PARALLEL_MIN_VALUES: usize = 1 << 21;

#[cfg(feature = "rayon")]
std::thread_local! {
    /// Set while the current thread runs inside [`on_this_thread`].
    static ON_THIS_THREAD: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Runs `f` with every kernel call it makes ([`crate::gemm::gemm`], the elementwise
/// kernels) kept on the calling thread, whatever its size.
///
/// For callers that already split their work across the pool (the fused engines of
/// `readout-layers` run blocks of rows on every thread): a kernel that split again
/// inside such a block would only hand half of its rows to a thread that is busy with
/// a block of its own (and a GEMM would pack the same `B` twice). The result is the
/// same either way: no kernel's result depends on its split. Without the `rayon`
/// feature this is just `f()`.
pub fn on_this_thread<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "rayon")]
    {
        /// Restores the previous state, also if `f` panics.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                let was = self.0;
                ON_THIS_THREAD.with(|c| c.set(was));
            }
        }
        let _restore = Restore(ON_THIS_THREAD.with(|c| c.replace(true)));
        f()
    }
    #[cfg(not(feature = "rayon"))]
    {
        f()
    }
}

/// How many threads a call may use: the current pool's size, or 1 inside
/// [`on_this_thread`] or without the `rayon` feature.
pub(crate) fn threads_here() -> usize {
    #[cfg(feature = "rayon")]
    {
        if !ON_THIS_THREAD.with(|c| c.get()) {
            return rayon::current_num_threads().max(1);
        }
    }
    1
}

/// Calls `f(start, part)` on consecutive parts of `out` that together cover it: the
/// whole of it, or, for at least [`PARALLEL_MIN_VALUES`] values and more than one
/// thread available ([`threads_here`]), one part per thread, in parallel. Every part
/// but the last holds a multiple of `unit` values (a row, for kernels whose other
/// operands go by rows); `start` is the index of the part's first value in `out`.
pub(crate) fn for_each_part<T: Send>(
    out: &mut [T],
    unit: usize,
    f: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    let unit = unit.max(1);
    let units = out.len() / unit;
    let threads = threads_here().min(units);
    if threads < 2 || out.len() < PARALLEL_MIN_VALUES {
        f(0, out);
        return;
    }
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        let part = units.div_ceil(threads) * unit;
        out.par_chunks_mut(part)
            .enumerate()
            .for_each(|(i, chunk)| f(i * part, chunk));
    }
    #[cfg(not(feature = "rayon"))]
    f(0, out);
}

/// `f` of each block of `block` values of `x` (the last may be shorter), added in
/// block order: on the current pool's threads when there are several, with the same
/// bits as on one (the blocks do not depend on the number of threads).
pub(crate) fn sum_of_blocks<T: crate::Real>(
    x: &[T],
    block: usize,
    f: impl Fn(&[T]) -> T + Send + Sync,
) -> T {
    #[cfg(feature = "rayon")]
    if threads_here() >= 2 {
        use rayon::prelude::*;
        let partials: std::vec::Vec<T> = x.par_chunks(block).map(&f).collect();
        return partials.into_iter().fold(T::ZERO, |s, p| s + p);
    }
    x.chunks(block).map(f).fold(T::ZERO, |s, p| s + p)
}

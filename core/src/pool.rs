//! Recycled value buffers of a [`Tape`](crate::Tape).
//!
//! Every op allocates its output. Left to the system allocator, the buffers of a
//! training step are freed together when the tape is dropped, and glibc's `malloc`
//! hands such a large free block back to the kernel; the next step then pays a page
//! fault and a page clear for every page it touches again. Measured on the benchmark
//! workloads, that was a third to two thirds of the time of small training steps. A
//! tape that is cleared or truncated instead keeps the freed buffers here, and ops
//! take their outputs from them.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::Real;

/// Buffers kept for reuse, by capacity.
#[derive(Default)]
pub(crate) struct BufferPool<T> {
    free: BTreeMap<usize, Vec<Vec<T>>>,
    bytes: usize,
    /// Most bytes kept at once: buffers given beyond it are freed.
    limit: usize,
}

impl<T: Real> BufferPool<T> {
    /// A buffer of `len` zeros: a recycled one whose capacity is at least `len` and at
    /// most twice it (so a small op does not hold on to a large buffer), else a new one.
    pub(crate) fn take(&mut self, len: usize) -> Vec<T> {
        if len == 0 {
            return Vec::new();
        }
        let found = self
            .free
            .range_mut(len..=len.saturating_mul(2))
            .find_map(|(&cap, list)| list.pop().map(|v| (cap, v)));
        match found {
            Some((cap, mut v)) => {
                if self.free.get(&cap).is_some_and(Vec::is_empty) {
                    self.free.remove(&cap);
                }
                self.bytes -= cap * core::mem::size_of::<T>();
                v.clear();
                v.resize(len, T::ZERO);
                v
            }
            None => alloc::vec![T::ZERO; len],
        }
    }

    /// Raises the most bytes kept at once to `bytes` if it is lower.
    pub(crate) fn raise_limit(&mut self, bytes: usize) {
        self.limit = self.limit.max(bytes);
    }

    /// Keeps `v` for a later [`BufferPool::take`], or frees it if the pool is full.
    pub(crate) fn give(&mut self, v: Vec<T>) {
        let cap = v.capacity();
        let size = cap * core::mem::size_of::<T>();
        if cap == 0 || self.bytes + size > self.limit {
            return;
        }
        self.bytes += size;
        self.free.entry(cap).or_default().push(v);
    }

    /// Bytes held by the kept buffers.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frees every kept buffer (the limit stays).
    pub(crate) fn release(&mut self) {
        self.free.clear();
        self.bytes = 0;
    }
}

//! Recycled value buffers of a [`Tape`](crate::Tape).
//!
//! Every op allocates its output. Left to the system allocator, the buffers of a
//! training step are freed together when the tape is dropped, and glibc's `malloc`
//! hands such a large free block back to the kernel; the next step then pays a page
//! fault and a page clear for every page it touches again. Measured on the benchmark
//! workloads, that was a third to two thirds of the time of small training steps. A
//! tape that is cleared or truncated instead keeps the freed buffers here, and ops
//! take their outputs from them.
//!
//! Two generations bound what is kept: a buffer freed during a step is *fresh*; at the
//! next [`Tape::clear`](crate::Tape::clear) the fresh ones become *stale* and the stale
//! ones (unused for a whole step) are freed. A byte limit (the most the tape's values
//! have held at once) also bounds loops that only truncate.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::Real;

/// Buffers of one generation, by capacity.
type ByCapacity<T> = BTreeMap<usize, Vec<Vec<T>>>;

/// Buffers kept for reuse.
#[derive(Default)]
pub(crate) struct BufferPool<T> {
    fresh: ByCapacity<T>,
    stale: ByCapacity<T>,
    bytes: usize,
    /// Most bytes kept at once: buffers given beyond it are freed.
    limit: usize,
}

/// The smallest buffer of `map` with a capacity in `len ..= 2·len` (a small op does
/// not hold on to a large buffer), removed from `map`.
fn pop_fit<T>(map: &mut ByCapacity<T>, len: usize) -> Option<Vec<T>> {
    let (&cap, list) = map
        .range_mut(len..=len.saturating_mul(2))
        .find(|(_, list)| !list.is_empty())?;
    let v = list.pop();
    if list.is_empty() {
        map.remove(&cap);
    }
    v
}

impl<T: Real> BufferPool<T> {
    /// A buffer of `len` zeros: a recycled one if one fits, else a new one.
    pub(crate) fn take(&mut self, len: usize) -> Vec<T> {
        let mut v = self.take_any(len);
        v.fill(T::ZERO);
        v
    }

    /// A buffer of `len` values that may hold anything (old values of a recycled
    /// buffer): for ops whose kernel writes every element, which would otherwise pay
    /// a pass of zeroing for nothing.
    pub(crate) fn take_any(&mut self, len: usize) -> Vec<T> {
        if len == 0 {
            return Vec::new();
        }
        let found = pop_fit(&mut self.fresh, len).or_else(|| pop_fit(&mut self.stale, len));
        match found {
            Some(mut v) => {
                self.bytes -= v.capacity() * core::mem::size_of::<T>();
                // Shorten, or extend with zeros up to `len` (within the capacity).
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
        self.fresh.entry(cap).or_default().push(v);
    }

    /// The start of a step: frees the buffers no op took during the last one and
    /// makes the fresh ones stale.
    pub(crate) fn next_generation(&mut self) {
        let unused = core::mem::replace(&mut self.stale, core::mem::take(&mut self.fresh));
        for (cap, list) in unused {
            self.bytes -= cap * list.len() * core::mem::size_of::<T>();
        }
    }

    /// Bytes held by the kept buffers.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frees every kept buffer (the limit stays).
    pub(crate) fn release(&mut self) {
        self.fresh.clear();
        self.stale.clear();
        self.bytes = 0;
    }
}

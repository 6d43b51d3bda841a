//! A global allocator that counts the bytes live and the peak since the last reset,
//! for the report's "peak bytes allocated during the call".
//!
//! Install it in a binary with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;`; without that the
//! counters stay at 0. It forwards to the system allocator and adds two relaxed atomic
//! updates per allocation (a few nanoseconds; the layers allocate per tensor, not per
//! value). Every thread's allocations count, rayon's workers included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static REUSED: AtomicUsize = AtomicUsize::new(0);

/// The counting allocator (a unit struct over [`System`]).
pub struct CountingAlloc;

fn grow(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrink(by: usize) {
    LIVE.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only updates counters on the side; the contracts of `GlobalAlloc` are `System`'s.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (the caller guarantees a non-zero size).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (`ptr` came from this allocator, i.e. `System`).
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        p
    }
}

/// Bytes allocated and not yet freed.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a measurement: the peak becomes the current live count, which is returned
/// as the baseline for [`peak_since`].
pub fn reset_peak() -> usize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    REUSED.store(0, Ordering::Relaxed);
    now
}

/// Counts `bytes` kept from an earlier call (a reused tape's buffers) as allocated
/// by the call being measured: it uses them instead of allocating its own.
pub fn count_reused(bytes: usize) {
    REUSED.fetch_add(bytes, Ordering::Relaxed);
}

/// The most bytes allocated at once above `baseline` since [`reset_peak`], plus the
/// bytes the call reused ([`count_reused`]).
pub fn peak_since(baseline: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(baseline) + REUSED.load(Ordering::Relaxed)
}

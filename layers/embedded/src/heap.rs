//! The fixed-size heap, and a count of the bytes it has handed out.
//!
//! `embedded-alloc`'s linked-list heap serves every allocation from one static buffer
//! of [`CAPACITY`] bytes. The wrapper counts the bytes requested and keeps the highest
//! count (the high-water mark); the allocator's own bookkeeping and fragmentation are
//! not included, so the buffer needs some margin above the mark.

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// Bytes of the heap buffer: the high-water mark of the model the firmware is built
/// with (README.md) and a margin for the allocator's bookkeeping and fragmentation.
pub const CAPACITY: usize = if cfg!(feature = "eq-large") {
    3 * 1024 * 1024
} else if cfg!(feature = "eq-medium") {
    320 * 1024
} else {
    64 * 1024
};

static mut BUFFER: [MaybeUninit<u8>; CAPACITY] = [MaybeUninit::uninit(); CAPACITY];

#[global_allocator]
static HEAP: Counted = Counted {
    heap: LlffHeap::empty(),
    in_use: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    high_water: AtomicUsize::new(0),
};

/// An allocator that counts the bytes in use and their peak.
struct Counted {
    heap: LlffHeap,
    /// Bytes allocated and not yet freed.
    in_use: AtomicUsize,
    /// The peak of `in_use` since the last [`measure`] began.
    peak: AtomicUsize,
    /// The peak of `in_use` over the whole run.
    high_water: AtomicUsize,
}

// SAFETY: every method forwards to `LlffHeap`'s own `GlobalAlloc` implementation with
// the caller's arguments unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { self.heap.alloc(layout) };
        if !ptr.is_null() {
            let now = self.in_use.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
            self.high_water.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.heap.dealloc(ptr, layout) };
        self.in_use.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Hands the static buffer to the allocator; call once, before anything allocates.
pub fn init() {
    // SAFETY: called once at the start of `main`, before any allocation; the buffer is
    // a static that nothing else refers to, so the heap owns it from here on.
    unsafe { HEAP.heap.init(&raw mut BUFFER as usize, CAPACITY) }
}

/// Runs `f` and returns its result with the heap's high-water mark during `f` and the
/// bytes still held when it returns, both counted above what was in use before it.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let before = HEAP.in_use.load(Ordering::Relaxed);
    HEAP.peak.store(before, Ordering::Relaxed);
    let result = f();
    let peak = HEAP.peak.load(Ordering::Relaxed);
    let after = HEAP.in_use.load(Ordering::Relaxed);
    (result, peak - before, after.saturating_sub(before))
}

/// The most bytes in use at once since [`init`].
pub fn high_water() -> usize {
    HEAP.high_water.load(Ordering::Relaxed)
}

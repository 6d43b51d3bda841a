//! The stack's high-water mark: `cortex-m-rt` (feature `paint-stack`) fills the stack
//! region with a known word at reset; the deepest word no longer holding it marks how
//! far the stack has grown.

use cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    /// The top of the stack (its first, highest address), from `cortex-m-rt`'s `link.x`.
    static _stack_start: u32;
    /// The lowest address the stack may reach (after the static RAM), from `link.x`.
    static _stack_end: u32;
}

/// Bytes of stack used so far, at most.
pub fn high_water() -> usize {
    let top = (&raw const _stack_start) as usize;
    let mut addr = (&raw const _stack_end) as usize;
    while addr < top {
        // SAFETY: `addr` lies in `[_stack_end, _stack_start)`, RAM reserved for the
        // stack by the linker script and painted at reset; `link.x` aligns
        // `_stack_end` to 4 bytes, so every read is an aligned `u32` in bounds.
        let word = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if word != STACK_PAINT_VALUE {
            break;
        }
        addr += 4;
    }
    top - addr
}

//! Buffers the inference engine keeps from one call to the next.
//!
//! The engine needs a dozen buffers of `block rows × width` values per call, plus a
//! few of `elements × width`. Allocated and freed on every call, they go back to the
//! operating system each time (glibc trims its heap once more than 128 KiB is free at
//! its top), and the next call pays a page fault and a page clear for every page:
//! measured, that was half the time of `eq_median`'s inference. A layer keeps one
//! [`Workspace`] (behind a mutex, see [`Cache`]) and the engine takes its buffers
//! from it.

use alloc::vec::Vec;

use readout_core::Real;

/// Free buffers.
pub(crate) struct Workspace<T> {
    free: Vec<Vec<T>>,
}

impl<T: Real> Workspace<T> {
    /// No buffers yet.
    pub(crate) fn new() -> Self {
        Workspace { free: Vec::new() }
    }

    /// `len` zeros, in the smallest kept buffer that can hold them, else a new one.
    pub(crate) fn zeros(&mut self, len: usize) -> Vec<T> {
        let best = (0..self.free.len())
            .filter(|&i| self.free[i].capacity() >= len)
            .min_by_key(|&i| self.free[i].capacity());
        match best {
            Some(i) => {
                let mut v = self.free.swap_remove(i);
                v.clear();
                v.resize(len, T::ZERO);
                v
            }
            None => alloc::vec![T::ZERO; len],
        }
    }

    /// Bytes held by the kept buffers (only a `std` [`Cache`] keeps a workspace).
    #[cfg(feature = "std")]
    pub(crate) fn bytes(&self) -> usize {
        self.free.iter().map(|v| v.capacity()).sum::<usize>() * core::mem::size_of::<T>()
    }

    /// Keeps `v` for a later [`Workspace::zeros`].
    pub(crate) fn put(&mut self, v: Vec<T>) {
        if v.capacity() > 0 {
            self.free.push(v);
        }
    }
}

/// A layer's [`Workspace`] for `f32` inference, shared by `&self` calls.
///
/// With `std` it sits behind a mutex; a call that finds it taken by another thread
/// uses a fresh workspace instead of waiting. Without `std` every call allocates. It
/// is not part of the layer's value: clones start empty, and it never makes two
/// layers unequal.
#[derive(Default)]
pub(crate) struct Cache {
    #[cfg(feature = "std")]
    kept: std::sync::Mutex<Option<Workspace<f32>>>,
}

impl Cache {
    /// Runs `f` with the kept workspace (or a fresh one) and keeps it afterwards.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Workspace<f32>) -> R) -> R {
        #[cfg(feature = "std")]
        if let Ok(mut slot) = self.kept.try_lock() {
            let ws = slot.get_or_insert_with(Workspace::new);
            return f(ws);
        }
        f(&mut Workspace::new())
    }
}

impl Cache {
    /// Bytes held by the kept workspace (0 while another thread uses it).
    pub(crate) fn bytes(&self) -> usize {
        #[cfg(feature = "std")]
        if let Ok(slot) = self.kept.try_lock() {
            return slot.as_ref().map_or(0, Workspace::bytes);
        }
        0
    }
}

impl Clone for Cache {
    fn clone(&self) -> Self {
        Cache::default()
    }
}

impl core::fmt::Debug for Cache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Cache")
    }
}

impl PartialEq for Cache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

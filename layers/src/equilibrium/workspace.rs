//! Buffers the fused engines keep from one call to the next.
//!
//! The engine needs a dozen buffers of `block rows × width` values per call, plus a
//! few of `elements × width`. Allocated and freed on every call, they go back to the
//! operating system each time (glibc trims its heap once more than 128 KiB is free at
//! its top), and the next call pays a page fault and a page clear for every page:
//! measured, that was half the time of `eq_median`'s inference. A layer keeps one
//! [`Workspace`] per value type (behind a mutex, see [`Cache`]) and the engines take
//! their buffers from it: the inference engine, and in training the adjoint mode's
//! inner loop and its Hessian-vector-product engine. With two threads this mattered
//! most: glibc gives each thread its own heap and trims it, so a training step that
//! allocated its buffers afresh paid the page faults on both threads, and
//! `eq_median` trained slower on two threads than on one.

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

/// A layer's [`Workspace`]s (one per value type: `f32` for inference and `f32`
/// training, `f64` for gradient checks), shared by `&self` calls and by the nodes the
/// adjoint mode leaves on a tape.
///
/// With `std` they sit behind a mutex; a call that finds it taken by another thread
/// uses a fresh workspace instead of waiting. Without `std` every call allocates. It
/// is not part of the layer's value: clones start empty, and it never makes two
/// layers unequal.
#[derive(Default)]
pub(crate) struct Cache {
    #[cfg(feature = "std")]
    kept: std::sync::Arc<std::sync::Mutex<Vec<Box<dyn core::any::Any + Send>>>>,
}

impl Cache {
    /// Runs `f` with the kept workspace of `T` (or a fresh one) and keeps it
    /// afterwards.
    pub(crate) fn with<T: Real, R>(&self, f: impl FnOnce(&mut Workspace<T>) -> R) -> R {
        #[cfg(feature = "std")]
        if let Ok(mut kept) = self.kept.try_lock() {
            let at = match kept.iter().position(|w| w.is::<Workspace<T>>()) {
                Some(at) => at,
                None => {
                    kept.push(Box::new(Workspace::<T>::new()));
                    kept.len() - 1
                }
            };
            if let Some(ws) = kept[at].downcast_mut::<Workspace<T>>() {
                return f(ws);
            }
        }
        f(&mut Workspace::new())
    }

    /// Another handle on the same workspaces, for a tape node that runs after the
    /// call that made it (unlike [`Clone`], which starts empty).
    pub(crate) fn share(&self) -> Cache {
        Cache {
            #[cfg(feature = "std")]
            kept: self.kept.clone(),
        }
    }

    /// Bytes held by the kept workspaces (0 while another thread uses them).
    pub(crate) fn bytes(&self) -> usize {
        #[cfg(feature = "std")]
        if let Ok(kept) = self.kept.try_lock() {
            let bytes = |w: &Box<dyn core::any::Any + Send>| {
                w.downcast_ref::<Workspace<f32>>()
                    .map_or(0, Workspace::bytes)
                    + w.downcast_ref::<Workspace<f64>>()
                        .map_or(0, Workspace::bytes)
            };
            return kept.iter().map(bytes).sum();
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

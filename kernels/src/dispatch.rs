//! Which implementation the `f32` kernels run: chosen once, cached, overridable.
//!
//! - [`Path::Avx2`]: `core::arch` AVX2 + FMA kernels, compiled into
//!   `#[target_feature(enable = "avx2,fma")]` functions. With the `std` feature they
//!   are picked at run time when the CPU has AVX2 and FMA, so a plain
//!   `cargo build --release` (no `RUSTFLAGS`) gets them. Without `std` they are picked
//!   only if the build itself enables `avx2` and `fma` (`-C target-feature` or
//!   `-C target-cpu`), because `no_std` code cannot ask the CPU portably.
//! - [`Path::Portable`]: the same generic kernels on `wide::f32x8` (SSE2 halves in a
//!   default x86-64 build, NEON on aarch64).
//! - [`Path::Scalar`]: the scalar reference kernels (`reference` modules).
//!
//! [`best`] is computed on first use and cached in an atomic; [`set_path`] overrides
//! it process-wide (for benchmarks and experiments); the `*_with` functions of each
//! kernel module (for example [`crate::gemm::gemm_with`]) run one given path for one
//! call, which is what the tests use so that parallel tests do not interfere.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// One implementation of the `f32` kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Scalar reference code.
    Scalar,
    /// `wide::f32x8` kernels.
    Portable,
    /// x86-64 AVX2 + FMA kernels.
    Avx2,
}

impl Path {
    /// Every path, fastest last.
    pub const ALL: [Path; 3] = [Path::Scalar, Path::Portable, Path::Avx2];

    /// Whether this path can run here (AVX2 needs an x86-64 CPU with AVX2 and FMA,
    /// and, without `std`, a build that enables them).
    pub fn is_available(self) -> bool {
        match self {
            Path::Scalar | Path::Portable => true,
            Path::Avx2 => avx2_available(),
        }
    }

    fn code(self) -> u8 {
        match self {
            Path::Scalar => 1,
            Path::Portable => 2,
            Path::Avx2 => 3,
        }
    }

    fn from_code(c: u8) -> Option<Path> {
        match c {
            1 => Some(Path::Scalar),
            2 => Some(Path::Portable),
            3 => Some(Path::Avx2),
            _ => None,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Scalar => "scalar",
            Path::Portable => "portable (wide)",
            Path::Avx2 => "avx2+fma",
        })
    }
}

/// [`set_path`] was asked for a path this CPU or build cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathUnavailable(pub Path);

impl fmt::Display for PathUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel path {} is not available on this CPU/build",
            self.0
        )
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn avx2_available() -> bool {
    crate::simd::avx2::Avx2::detect().is_some()
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn avx2_available() -> bool {
    false
}

/// Cached result of [`best`] (0 = not computed yet).
static BEST: AtomicU8 = AtomicU8::new(0);
/// Path forced by [`set_path`] (0 = none).
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The fastest available path (detected once, then cached).
pub fn best() -> Path {
    if let Some(p) = Path::from_code(BEST.load(Ordering::Relaxed)) {
        return p;
    }
    let p = if Path::Avx2.is_available() {
        Path::Avx2
    } else {
        Path::Portable
    };
    BEST.store(p.code(), Ordering::Relaxed);
    p
}

/// The path the `f32` kernels use now: the one forced by [`set_path`], else [`best`].
#[inline]
pub fn active() -> Path {
    Path::from_code(FORCED.load(Ordering::Relaxed)).unwrap_or_else(best)
}

/// Forces every later `f32` kernel call in the process onto `path`, or back to
/// automatic choice with `None`.
///
/// # Errors
/// [`PathUnavailable`] if `path` cannot run here; the setting is then unchanged.
pub fn set_path(path: Option<Path>) -> Result<(), PathUnavailable> {
    match path {
        None => FORCED.store(0, Ordering::Relaxed),
        Some(p) if p.is_available() => FORCED.store(p.code(), Ordering::Relaxed),
        Some(p) => return Err(PathUnavailable(p)),
    }
    Ok(())
}

/// Asserts that `path` can run here; the `*_with` kernel entry points call this.
#[track_caller]
pub(crate) fn assert_available(path: Path) {
    assert!(
        path.is_available(),
        "kernel path {path} is not available on this CPU/build"
    );
}

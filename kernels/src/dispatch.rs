//! The one place where a kernel call picks its implementation.
//!
//! # What a kernel is
//!
//! A *kernel* is a type implementing [`Kernel`], written in one file (for example
//! `rows/softmax.rs`). It has three parts:
//!
//! - [`Kernel::Args`]: the arguments of one call (slices, shapes, scalars), for any
//!   element type `T` ([`Real`]: `f32` or `f64`);
//! - [`Kernel::reference`]: the scalar reference, generic over `T`. It is the
//!   definition the fast paths are tested against, the [`Path::Scalar`] path, and the
//!   whole implementation for `f64`;
//! - [`Kernel::run`]: the `f32` body, written once, generic over the 8-lane vector
//!   trait `Simd` (`crate::simd`). It is compiled once per instruction set.
//!
//! It has two public functions. The generic one (`softmax_rows::<T>`) checks the
//! lengths (in the arguments' constructor) and calls [`Real::run_kernel`], which is
//! the reference for `f64` and `run` on the [`active`] path for `f32`. The `*_with`
//! one (`softmax_rows_with`) calls `run` on a path the caller names (tests,
//! benchmarks). So a call takes four steps: public function → `Real::run_kernel` →
//! `run` (one `match` on the path) → the kernel's body.
//!
//! # How it is dispatched
//!
//! `run` matches on the [`Path`] once per call and hands the arguments to
//! `K::reference`, to `K::run` with the `wide` token, or to `K::run` with the AVX2
//! token inside a function compiled with `#[target_feature(enable = "avx2,fma")]`.
//! There is one such function for all kernels (generic over `K`), so every kernel's
//! body is monomorphised *inside* it. Everything a body calls (the `Simd` methods,
//! the vector math, the kernel's own helpers) is `#[inline(always)]`, so the whole
//! kernel is compiled as AVX2 + FMA code in one function, even in a default build
//! without `RUSTFLAGS`. A helper that is not inlined would be compiled for the
//! baseline CPU and each of its intrinsics would become a call: correct, but several
//! times slower. There is no dispatch inside a kernel's loops.
//!
//! Which path is active: [`best`] asks the CPU once (with `std`, through
//! `is_x86_feature_detected!`) and caches the answer in an atomic; [`set_path`]
//! overrides it process-wide; the `*_with` functions run one given path for one call,
//! which is what the tests use to check every path (they run in parallel, so they must
//! not change a process-wide setting).
//!
//! - [`Path::Avx2`]: `core::arch` AVX2 + FMA intrinsics. Without `std` there is no
//!   portable way to ask the CPU, so it is picked only when the build enables `avx2`
//!   and `fma` (`-C target-feature` or `-C target-cpu`). It is compiled on x86-64
//!   targets with SSE2, i.e. every hosted one, and left out of soft-float targets
//!   such as `x86_64-unknown-none`, where LLVM cannot emit vector code.
//! - [`Path::Portable`]: the same bodies on `wide::f32x8` (two SSE halves in a default
//!   x86-64 build, NEON on aarch64, plain arrays elsewhere).
//! - [`Path::Scalar`]: the references.
//!
//! # Why the `unsafe` is sound
//!
//! Calling a `#[target_feature]` function is `unsafe`: on a CPU without those
//! features it would execute illegal instructions. `run` makes that call in one
//! place, and only with an `Avx2` token in hand; the token can only be created by
//! `Avx2::detect`, which returns it only when the running CPU has AVX2 and FMA. The
//! same token is what makes the AVX2 `Simd` methods sound (`simd/avx2.rs`): their
//! arithmetic is safe `#[target_feature]` code reached through one `unsafe` call that
//! takes the token, and their four loads and stores check their bounds as well.
//!
//! # Adding a kernel
//!
//! Write one file: an arguments struct, `impl Kernel` (the reference and the `Simd`
//! body, everything under it `#[inline(always)]`), and the two public functions. No
//! other file changes, apart from its `mod` and `pub use` lines in the parent module
//! (`kernels/README.md` has a checklist).

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::Real;
use crate::simd::Simd;
use crate::simd::portable::Portable;

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
            Path::Avx2 => avx2::Token::detect().is_some(),
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

/// A computation with a scalar reference and one SIMD body (see the module
/// documentation). Implemented by a unit type per kernel; its calls are values of
/// [`Kernel::Args`].
///
/// The trait is public only because [`Real::run_kernel`] names it; its SIMD trait is
/// private to this crate, so kernels can only be written here.
pub trait Kernel {
    /// The arguments of one call on elements of type `T`.
    type Args<'a, T: Real>;
    /// What a call returns (`()` for kernels that write into an output slice).
    type Output;

    /// The scalar reference: the definition, the [`Path::Scalar`] path, and the only
    /// implementation for `f64`.
    fn reference<T: Real>(args: Self::Args<'_, T>) -> Self::Output;

    /// The `f32` body on the instruction set `s`. Must be `#[inline(always)]`, as must
    /// everything it calls, so that it is compiled inside `run`'s
    /// `#[target_feature]` function.
    fn run<S: Simd>(s: S, args: Self::Args<'_, f32>) -> Self::Output;
}

/// Runs kernel `K` on `path`: the single dispatch point of the crate.
///
/// # Panics
/// If `path` is not available here ([`Path::is_available`]).
#[inline]
pub(crate) fn run<K: Kernel>(path: Path, args: K::Args<'_, f32>) -> K::Output {
    match path {
        Path::Scalar => K::reference(args),
        Path::Portable => K::run(Portable, args),
        Path::Avx2 => {
            let Some(token) = avx2::Token::detect() else {
                panic!("{}", PathUnavailable(Path::Avx2));
            };
            // SAFETY: `avx2::run` is compiled for AVX2 and FMA, so it may only run on
            // a CPU that has both. `token` proves this one does: an `Avx2` token can
            // only be created by `Avx2::detect`, which returns it only after checking
            // that the running CPU has AVX2 and FMA (or, without `std`, that the build
            // targets them). Nothing else is required: the arguments are ordinary
            // safe values, and the body is safe code.
            unsafe { avx2::run::<K>(token, args) }
        }
    }
}

/// The AVX2 + FMA instance of every kernel, on x86-64 targets with SSE2.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod avx2 {
    use super::Kernel;
    pub(super) use crate::simd::avx2::Avx2 as Token;

    /// The trampoline: `K::run` and everything it inlines become AVX2 + FMA code.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (which `token` proves).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run<K: Kernel>(token: Token, args: K::Args<'_, f32>) -> K::Output {
        K::run(token, args)
    }
}

/// No AVX2 code on this target: the path is never available.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod avx2 {
    use super::Kernel;

    /// Stands for the AVX2 token; no value of it exists.
    pub(super) enum Token {}

    impl Token {
        /// Always `None`.
        pub(super) fn detect() -> Option<Token> {
            None
        }
    }

    /// Unreachable: there is no token.
    ///
    /// # Safety
    /// None needed; `unsafe` only to match the x86-64 signature.
    pub(super) unsafe fn run<K: Kernel>(token: Token, _args: K::Args<'_, f32>) -> K::Output {
        match token {}
    }
}

//! The element types the kernels work on: `f32` (the fast, SIMD path) and `f64`
//! (scalar, for gradient checks in double precision).

use core::fmt::{Debug, Display};
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::dispatch::Kernel;

/// A real floating-point element type: `f32` or `f64`.
///
/// Besides scalar arithmetic and math functions (from `libm`, so they work in
/// `no_std`), the trait carries one hook, [`Real::run_kernel`]: its default runs a
/// kernel's scalar reference, and the `f32` implementation overrides it with the
/// dispatched SIMD path ([`crate::dispatch`]). The public kernel functions (`gemm`,
/// `unary`, ...) call it, so the caller never chooses a path.
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + Display
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Machine epsilon.
    const EPSILON: Self;
    /// The type's name, for messages (`"f32"`, `"f64"`).
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest.
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Converts a count to this type.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
    /// `e^self`.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// `ln(1 + self)`, accurate near 0.
    fn ln_1p(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// `self^p`.
    fn powf(self, p: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Whether the value is neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
    /// The larger of two values; NaN if either is NaN (unlike `f32::max`).
    fn max_nan(self, other: Self) -> Self {
        if self.is_nan() || other.is_nan() {
            self + other
        } else if self >= other {
            self
        } else {
            other
        }
    }

    /// Runs kernel `K` on the path for this element type: its scalar reference for
    /// `f64`, the dispatched SIMD path ([`crate::dispatch::active`]) for `f32`. Every
    /// generic kernel function ends here; it is the only per-type hook.
    fn run_kernel<K: Kernel>(args: K::Args<'_, Self>) -> K::Output {
        K::reference(args)
    }
}

macro_rules! impl_real_math {
    ($t:ty, $exp:path, $ln:path, $ln1p:path, $tanh:path, $sqrt:path, $pow:path, $abs:path) => {
        const ZERO: Self = 0.0;
        const ONE: Self = 1.0;
        const EPSILON: Self = <$t>::EPSILON;
        fn exp(self) -> Self {
            $exp(self)
        }
        fn ln(self) -> Self {
            $ln(self)
        }
        fn ln_1p(self) -> Self {
            $ln1p(self)
        }
        fn tanh(self) -> Self {
            $tanh(self)
        }
        fn sqrt(self) -> Self {
            $sqrt(self)
        }
        fn powf(self, p: Self) -> Self {
            $pow(self, p)
        }
        fn abs(self) -> Self {
            $abs(self)
        }
        fn is_finite(self) -> bool {
            <$t>::is_finite(self)
        }
        fn is_nan(self) -> bool {
            <$t>::is_nan(self)
        }
    };
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    impl_real_math!(
        f64,
        libm::exp,
        libm::log,
        libm::log1p,
        libm::tanh,
        libm::sqrt,
        libm::pow,
        libm::fabs
    );
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    impl_real_math!(
        f32,
        libm::expf,
        libm::logf,
        libm::log1pf,
        libm::tanhf,
        libm::sqrtf,
        libm::powf,
        libm::fabsf
    );
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn run_kernel<K: Kernel>(args: K::Args<'_, f32>) -> K::Output {
        crate::dispatch::run::<K>(crate::dispatch::active(), args)
    }
}

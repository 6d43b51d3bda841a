//! The element types the kernels work on: `f32` (the fast, SIMD path) and `f64`
//! (scalar, for gradient checks in double precision).

use core::fmt::{Debug, Display};
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::elementwise::{Binary, Broadcast, Unary};
use crate::gemm::GemmShape;

/// A real floating-point element type: `f32` or `f64`.
///
/// Besides scalar arithmetic and math functions (from `libm`, so they work in
/// `no_std`), the trait carries the *fast-path hooks*: one method per accelerated
/// kernel. Their default bodies are the scalar reference kernels; the `f32`
/// implementation overrides them with the dispatched SIMD kernels. The public kernel
/// functions (`gemm`, `unary`, ...) call these hooks, so the caller never chooses a path.
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

    /// Fast-path hook behind [`crate::gemm::gemm`]. Same contract.
    fn gemm_hook(
        shape: &GemmShape,
        alpha: Self,
        a: &[Self],
        b: &[Self],
        beta: Self,
        c: &mut [Self],
    ) {
        crate::gemm::reference::gemm(shape, alpha, a, b, beta, c)
    }
    /// Fast-path hook behind [`crate::elementwise::unary`]. Same contract.
    fn unary_hook(op: Unary<Self>, x: &[Self], out: &mut [Self]) {
        crate::elementwise::reference::unary(op, x, out)
    }
    /// Fast-path hook behind [`crate::elementwise::binary`], called with checked
    /// lengths, a non-empty `a` and `cols > 0`. Same contract.
    fn binary_hook(
        op: Binary,
        a: &[Self],
        b: &[Self],
        bcast: Broadcast,
        cols: usize,
        out: &mut [Self],
    ) {
        crate::elementwise::reference::binary(op, a, b, bcast, cols, out)
    }
    /// Fast-path hook behind [`crate::rows::softmax_rows`]. Same contract.
    fn softmax_rows_hook(x: &[Self], cols: usize, out: &mut [Self]) {
        crate::rows::reference::softmax_rows(x, cols, out)
    }
    /// Fast-path hook behind [`crate::rows::layer_norm_rows`], called with checked
    /// lengths and `cols > 0`. Same contract.
    fn layer_norm_rows_hook(
        x: &[Self],
        cols: usize,
        eps: Self,
        affine: Option<(&[Self], &[Self])>,
        out: &mut [Self],
        stats: (&mut [Self], &mut [Self]),
    ) {
        crate::rows::reference::layer_norm_rows(x, cols, eps, affine, out, stats)
    }
    /// Fast-path hook behind [`crate::rows::layer_norm_backward_rows`], called with
    /// checked lengths and a non-empty `rstd`. Same contract.
    fn layer_norm_backward_rows_hook(xhat: &[Self], g: &[Self], rstd: &[Self], dx: &mut [Self]) {
        crate::rows::reference::layer_norm_backward_rows(xhat, g, rstd, dx)
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
    fn gemm_hook(
        shape: &GemmShape,
        alpha: Self,
        a: &[Self],
        b: &[Self],
        beta: Self,
        c: &mut [Self],
    ) {
        crate::gemm::gemm_f32(shape, alpha, a, b, beta, c)
    }
    fn unary_hook(op: Unary<Self>, x: &[Self], out: &mut [Self]) {
        crate::elementwise::unary_f32(op, x, out)
    }
    fn softmax_rows_hook(x: &[Self], cols: usize, out: &mut [Self]) {
        crate::rows::softmax_rows_f32(x, cols, out)
    }
    fn binary_hook(
        op: Binary,
        a: &[Self],
        b: &[Self],
        bcast: Broadcast,
        cols: usize,
        out: &mut [Self],
    ) {
        crate::elementwise::binary_f32(op, a, b, bcast, cols, out)
    }
    fn layer_norm_rows_hook(
        x: &[Self],
        cols: usize,
        eps: Self,
        affine: Option<(&[Self], &[Self])>,
        out: &mut [Self],
        stats: (&mut [Self], &mut [Self]),
    ) {
        crate::rows::layer_norm_rows_f32(x, cols, eps, affine, out, stats)
    }
    fn layer_norm_backward_rows_hook(xhat: &[Self], g: &[Self], rstd: &[Self], dx: &mut [Self]) {
        crate::rows::layer_norm_backward_rows_f32(xhat, g, rstd, dx)
    }
}

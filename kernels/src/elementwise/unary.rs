//! The unary elementwise kernel: `out[i] = op(x[i])` for one [`Unary`] function.
//!
//! The `f32` SIMD body evaluates the transcendental functions with this crate's own
//! vector implementations (`simd::math`), whose maximum errors are stated on each
//! [`Unary`] variant and checked by the tests (`tests/elementwise.rs`). The scalar
//! reference, [`Unary::apply`] one value at a time, is the only path for `f64`.

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::{LANES, Simd, map, math};

/// A unary elementwise function. Parameters are carried in the variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary<T> {
    /// `-x`
    Neg,
    /// `x²`
    Square,
    /// `√x` (NaN below 0)
    Sqrt,
    /// `1 / x`
    Recip,
    /// `eˣ`.
    ///
    /// `f32` SIMD error against the exact value: ≤ 1.5 ulp (measured max 0.87 ulp with
    /// AVX2, 1.20 ulp on the portable path without hardware FMA), subnormal results
    /// included (there the unit is `2⁻¹⁴⁹`); 0 below −104, `+inf` above 88.73, NaN
    /// for NaN.
    Exp,
    /// `ln x` (NaN below 0, `-inf` at ±0, `+inf` at `+inf`).
    ///
    /// `f32` SIMD error: ≤ 1 ulp (measured max 0.81 ulp), subnormal inputs included.
    Ln,
    /// `tanh x`.
    ///
    /// `f32` SIMD error: ≤ 1.5 ulp (measured max 1.18 ulp), relative, so also near 0
    /// (an odd polynomial below |x| = 0.625); ±1 for ±inf, NaN for NaN. (`libm`'s
    /// `tanhf`, the scalar path, measured 2.03 ulp.)
    Tanh,
    /// `1 / (1 + e⁻ˣ)`.
    ///
    /// `f32` SIMD error: ≤ 2.5 ulp (measured max 1.98 ulp with AVX2, 2.07 portable),
    /// relative, including the tiny results for `x ≪ 0` (computed as `eˣ/(1 + eˣ)`);
    /// 0 and 1 at ∓inf, NaN for NaN.
    Sigmoid,
    /// PyTorch's softplus with beta 1 and threshold 20: `x` above 20, else
    /// `max(x, 0) + ln(1 + e^(−|x|))`.
    ///
    /// `f32` SIMD error against the exact value of that definition: ≤ 2 ulp
    /// (measured max 1.40 ulp with AVX2, 1.55 portable), relative, including the tiny
    /// results `≈ eˣ` for `x ≪ 0`; 0 at −inf, `+inf` at `+inf`, NaN for NaN.
    Softplus,
    /// `x^p`
    Powf(T),
    /// `c·x`
    Scale(T),
    /// `x + c`
    AddScalar(T),
    /// `max(x, c)`; NaN stays NaN.
    ClampMin(T),
    /// The indicator `x ≥ c` as 1 or 0 (the derivative mask of [`Unary::ClampMin`]).
    StepGe(T),
    /// The Student-t kernel `(1 + x/τ)^(−(1+τ)/2)` of MemPooling, for `x ≥ 0`.
    ///
    /// `f32` SIMD error against the exact `(1 + x/τ)^p` with `p = −(1+τ)/2` rounded to
    /// `f32` as the kernel sees it: ≤ `2 + |p|` ulp for `0 ≤ x ≤ 1e30` (measured max
    /// over every 37th `f32` of that range, the same on both SIMD paths up to 0.3 ulp:
    /// 1.49 ulp for τ = 1, which is computed as `1/(1 + x)`; 1.85 for τ = 2; 2.61 for
    /// τ = 3.7; 5.42 for τ = 10; 9.90 for τ = 20; 22.7 for τ = 50 — the error grows by
    /// about 0.9 ulp per unit of `|p|`, which multiplies the logarithm's own error).
    /// (The bound stated before, `2 + |p|/2`, was exceeded for τ = 10 by inputs the
    /// `kernels_vs_scalar` fuzz target found, e.g. x = 2.894148: 5.31 ulp.) The exponent `p·ln(1 + x/τ)` is carried in two
    /// `f32`s, since `e^y` turns its absolute error into the result's relative error.
    /// Other inputs (`x < 0`, above 1e30, non-finite) and a τ that is not positive and
    /// finite go through the scalar definition. Note that `p` itself is rounded to
    /// `f32` before any kernel sees it, which alone moves the result by up to
    /// `|p·ln(1 + x/τ)|·2⁻²⁴` relative to the real-number formula.
    StudentT(T),
}

impl<T: Real> Unary<T> {
    /// Applies the function to one value: the scalar reference definition.
    pub fn apply(self, x: T) -> T {
        let half = T::from_f64(0.5);
        match self {
            Unary::Neg => -x,
            Unary::Square => x * x,
            Unary::Sqrt => x.sqrt(),
            Unary::Recip => T::ONE / x,
            Unary::Exp => x.exp(),
            Unary::Ln => x.ln(),
            Unary::Tanh => x.tanh(),
            Unary::Sigmoid => {
                if x >= T::ZERO {
                    T::ONE / (T::ONE + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (T::ONE + e)
                }
            }
            Unary::Softplus => {
                if x > T::from_f64(20.0) || x.is_nan() {
                    x
                } else {
                    let pos = if x > T::ZERO { x } else { T::ZERO };
                    pos + (-x.abs()).exp().ln_1p()
                }
            }
            Unary::Powf(p) => x.powf(p),
            Unary::Scale(c) => c * x,
            Unary::AddScalar(c) => x + c,
            Unary::ClampMin(c) => {
                if x.is_nan() || x >= c {
                    x
                } else {
                    c
                }
            }
            Unary::StepGe(c) => {
                if x >= c {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            Unary::StudentT(tau) => (T::ONE + x / tau).powf(-(T::ONE + tau) * half),
        }
    }
}

/// `out[i] = op(x[i])`.
///
/// # Panics
/// If `x` and `out` differ in length.
///
/// A long call is split over the rayon pool ([`crate::parallel`]); the result does
/// not depend on the split.
pub fn unary<T: Real>(op: Unary<T>, x: &[T], out: &mut [T]) {
    assert_eq!(x.len(), out.len(), "unary: x and out differ in length");
    crate::parallel::for_each_part(out, 1, |start, out| {
        let x = &x[start..start + out.len()];
        T::run_kernel::<UnaryKernel>(UnaryArgs::new(op, x, out))
    });
}

/// [`unary`] for `f32` on a given [`Path`] instead of the dispatched one (tests,
/// benchmarks).
///
/// # Panics
/// If `x` and `out` differ in length, or `path` is not available here.
pub fn unary_with(path: Path, op: Unary<f32>, x: &[f32], out: &mut [f32]) {
    dispatch::run::<UnaryKernel>(path, UnaryArgs::new(op, x, out))
}

/// `x[i] = op(x[i])` in place.
pub fn unary_inplace<T: Real>(op: Unary<T>, x: &mut [T]) {
    for v in x.iter_mut() {
        *v = op.apply(*v);
    }
}

/// The arguments of one [`unary`] call.
pub(crate) struct UnaryArgs<'a, T> {
    op: Unary<T>,
    x: &'a [T],
    out: &'a mut [T],
}

impl<'a, T> UnaryArgs<'a, T> {
    /// Checks the lengths.
    fn new(op: Unary<T>, x: &'a [T], out: &'a mut [T]) -> Self {
        assert_eq!(x.len(), out.len(), "unary: x and out differ in length");
        UnaryArgs { op, x, out }
    }
}

/// The unary elementwise kernel (see [`crate::dispatch`]).
pub(crate) struct UnaryKernel;

impl Kernel for UnaryKernel {
    type Args<'a, T: Real> = UnaryArgs<'a, T>;
    type Output = ();

    /// [`Unary::apply`], one value at a time.
    fn reference<T: Real>(UnaryArgs { op, x, out }: UnaryArgs<'_, T>) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = op.apply(v);
        }
    }

    /// 8 lanes at a time with the vector math functions; the exact operations
    /// (`neg`, `square`, `sqrt`, `recip`, `scale`, ...) are single IEEE operations, so
    /// bit-identical to the reference.
    #[inline(always)]
    fn run<S: Simd>(s: S, UnaryArgs { op, x, out }: UnaryArgs<'_, f32>) {
        let one = s.splat(1.0);
        match op {
            Unary::Neg => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| s.neg(v),
            ),
            Unary::Square => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| s.mul(v, v),
            ),
            Unary::Sqrt => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| s.sqrt(v),
            ),
            Unary::Recip => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| s.div(one, v),
            ),
            Unary::Exp => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| math::exp(s, v),
            ),
            Unary::Ln => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| math::ln(s, v),
            ),
            Unary::Tanh => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| math::tanh(s, v),
            ),
            Unary::Sigmoid => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| math::sigmoid(s, v),
            ),
            Unary::Softplus => map(
                s,
                x,
                out,
                #[inline(always)]
                |v| math::softplus(s, v),
            ),
            Unary::Scale(c) => {
                let c = s.splat(c);
                map(
                    s,
                    x,
                    out,
                    #[inline(always)]
                    |v| s.mul(c, v),
                )
            }
            Unary::AddScalar(c) => {
                let c = s.splat(c);
                map(
                    s,
                    x,
                    out,
                    #[inline(always)]
                    |v| s.add(v, c),
                )
            }
            Unary::ClampMin(c) => {
                let c = s.splat(c);
                map(
                    s,
                    x,
                    out,
                    #[inline(always)]
                    |v| s.select(s.or(s.is_nan(v), s.le(c, v)), v, c),
                )
            }
            Unary::StepGe(c) => {
                let c = s.splat(c);
                map(
                    s,
                    x,
                    out,
                    #[inline(always)]
                    |v| s.and(s.le(c, v), one),
                )
            }
            Unary::StudentT(tau) if tau > 0.0 && tau.is_finite() => {
                let p = -(1.0 + tau) * 0.5;
                let zero = s.zero();
                // Beyond 1e30, `x/τ` may overflow; the scalar code returns its limit.
                let big = s.splat(1e30);
                map_or_scalar(
                    s,
                    op,
                    x,
                    out,
                    #[inline(always)]
                    |v| s.or(s.or(s.lt(v, zero), s.is_nan(v)), s.lt(big, v)),
                    #[inline(always)]
                    |v| math::student_t(s, v, tau, p),
                )
            }
            // A non-positive or non-finite τ, and general powers (negative bases with
            // integer exponents, ...): the scalar definition handles every case.
            Unary::StudentT(_) | Unary::Powf(_) => Self::reference(UnaryArgs { op, x, out }),
        }
    }
}

/// Like [`map`], but a chunk with a lane outside the vector code's domain
/// (`outside` returns a mask) is computed with the scalar definition instead.
#[inline(always)]
fn map_or_scalar<S: Simd>(
    s: S,
    op: Unary<f32>,
    x: &[f32],
    out: &mut [f32],
    outside: impl Fn(S::V) -> S::V,
    f: impl Fn(S::V) -> S::V,
) {
    for (xi, oi) in x.chunks(LANES).zip(out.chunks_mut(LANES)) {
        let v = s.load_any(xi);
        if s.any(outside(v)) {
            UnaryKernel::reference(UnaryArgs { op, x: xi, out: oi });
        } else {
            s.store_any(oi, f(v));
        }
    }
}

//! Vector math functions, generic over [`Simd`]: `exp`, `ln`, `log1p`, `tanh`,
//! `sigmoid`, `softplus` and the Student-t power.
//!
//! All follow the same recipe: reduce the argument to a small interval with exact (or
//! error-free) steps, evaluate a short polynomial there, then undo the reduction. The
//! polynomials are either Taylor series truncated where the remainder is far below
//! `f32` rounding (exp, the `atanh` series of ln), or, for tanh near 0, a weighted
//! least-squares fit computed for this crate (coefficients rounded to `f32`; fit
//! error 1.8e-9 relative on `[0, 0.625]`).
//!
//! Non-finite inputs: every function ends by passing NaN lanes through unchanged, so
//! NaN in gives NaN out even though the clamping steps (`min` / `max`) would
//! otherwise swallow NaN. The measured error bounds are documented on the public
//! [`crate::elementwise::Unary`] variants and checked by the tests.

use super::Simd;

/// `log2(e)`.
const LOG2E: f32 = core::f32::consts::LOG2_E;
/// `ln 2` split in two: `LN2_HI` has 9 significant bits, so `n · LN2_HI` is exact for
/// every `|n| < 2^15`; `LN2_HI + LN2_LO = ln 2` to ~1e-12.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x`.
///
/// `x = n·ln2 + r` with `n = round(x·log2 e)` and `|r| ≤ 0.35` (Cody–Waite with two
/// FMAs); `e^r` by its Taylor series to degree 7 (remainder ≤ 7e-9 relative); then
/// `2^n` applied as `2^n1 · 2^n2` with `n1 + n2 = n`, so that results near the
/// overflow threshold and in the subnormal range come out right without a special
/// case. Inputs are clamped to `[-104, 89]` first: beyond, the result is 0 or +inf.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let y = exp_core::<S, false>(s, x, s.zero());
    s.select(s.is_nan(x), x, y)
}

/// `e^(x + tail)` for a small correction `tail` carried separately to extend `x`'s
/// precision: it is added after the exact argument reduction, where it is no longer
/// lost to rounding. NaN lanes are unspecified (callers patch them).
#[inline(always)]
fn exp_tail<S: Simd>(s: S, x: S::V, tail: S::V) -> S::V {
    exp_core::<S, true>(s, x, tail)
}

/// The body of [`exp`] without its NaN patch (for callers that patch NaN lanes
/// themselves), with an optional `tail` (`TAIL = false` ignores it at no cost).
#[inline(always)]
fn exp_core<S: Simd, const TAIL: bool>(s: S, x: S::V, tail: S::V) -> S::V {
    let xc = s.min(s.max(x, s.splat(-104.0)), s.splat(89.0));
    let n = s.round(s.mul(xc, s.splat(LOG2E)));
    let p = exp_reduced::<S, TAIL>(s, xc, n, tail);
    // n ∈ [-150, 129]: split so that both halves are valid exponents.
    let n1 = s.round(s.mul(n, s.splat(0.5)));
    let n2 = s.sub(n, n1);
    s.mul(s.mul(p, s.pow2i(n1)), s.pow2i(n2))
}

/// `e^(x − n·ln2 (+ tail))` for the integer `n` nearest to `x·log2 e`.
#[inline(always)]
fn exp_reduced<S: Simd, const TAIL: bool>(s: S, x: S::V, n: S::V, tail: S::V) -> S::V {
    let r = s.fma(s.neg(n), s.splat(LN2_HI), x);
    let mut r = s.fma(s.neg(n), s.splat(LN2_LO), r);
    if TAIL {
        r = s.add(r, tail);
    }
    // Taylor coefficients 1/k!, Horner form.
    let mut p = s.splat(1.0 / 5040.0);
    p = s.fma(p, r, s.splat(1.0 / 720.0));
    p = s.fma(p, r, s.splat(1.0 / 120.0));
    p = s.fma(p, r, s.splat(1.0 / 24.0));
    p = s.fma(p, r, s.splat(1.0 / 6.0));
    p = s.fma(p, r, s.splat(0.5));
    p = s.fma(p, r, s.splat(1.0));
    s.fma(p, r, s.splat(1.0))
}

/// `e^x` for `x ≥ 0` where only `1/(e^x + 1)` matters (tanh): one-step `2^n` scaling,
/// so results above `2^127` (`x > 88.03`) may come out as `+inf`, which changes
/// `1/(e^x + 1)` by less than `2^-127`. NaN lanes are unspecified.
#[inline(always)]
fn exp_nonneg_for_recip<S: Simd>(s: S, x: S::V) -> S::V {
    let xc = s.min(x, s.splat(89.0));
    let n = s.round(s.mul(xc, s.splat(LOG2E)));
    let p = exp_reduced::<S, false>(s, xc, n, s.zero());
    // n ∈ [0, 128]; 2^128 has the bit pattern of +inf, which is the right limit.
    s.mul(p, s.pow2i(n))
}

/// `ln(1 + f)` for `|f| ≤ 0.5`, `f` exact.
///
/// With `s = f / (2 + f)`, `ln(1 + f) = 2·atanh(s) = 2s + 2s³/3 + 2s⁵/5 + …`; the series
/// is summed as `f − (f²/2 − s·(f²/2 + R))` with `R = 2s²/3 + … + 2s¹⁰/11`, which keeps
/// the leading term `f` exact (the identity `2s = f − s·f` gives this form). For
/// `|s| ≤ 0.2` the dropped terms are below 3e-10 relative.
#[inline(always)]
fn ln1p_small<S: Simd>(s: S, f: S::V) -> S::V {
    let q = s.div(f, s.add(s.splat(2.0), f));
    let z = s.mul(q, q);
    let mut r = s.splat(2.0 / 11.0);
    r = s.fma(r, z, s.splat(2.0 / 9.0));
    r = s.fma(r, z, s.splat(2.0 / 7.0));
    r = s.fma(r, z, s.splat(2.0 / 5.0));
    r = s.fma(r, z, s.splat(2.0 / 3.0));
    r = s.mul(r, z);
    let hfsq = s.mul(s.splat(0.5), s.mul(f, f));
    s.sub(f, s.sub(hfsq, s.mul(q, s.add(hfsq, r))))
}

/// `ln x` for positive finite normal `x`: no special cases.
///
/// `x = m·2^e` with `m ∈ (√½, √2]`, so `f = m − 1` is exact (Sterbenz) and
/// `ln x = e·ln2 + ln(1 + f)`.
#[inline(always)]
fn ln_normal<S: Simd>(s: S, x: S::V) -> S::V {
    let (m, e) = s.frexp(x);
    let big = s.lt(s.splat(core::f32::consts::SQRT_2), m);
    let m = s.select(big, s.mul(m, s.splat(0.5)), m);
    let e = s.add(e, s.and(big, s.splat(1.0)));
    let l = ln1p_small(s, s.sub(m, s.splat(1.0)));
    s.fma(e, s.splat(LN2_HI), s.fma(e, s.splat(LN2_LO), l))
}

/// Natural logarithm: `ln 0 = -inf`, `ln x = NaN` for `x < 0`, `ln inf = inf`;
/// subnormal inputs are scaled by `2^23` first.
#[inline(always)]
pub(crate) fn ln<S: Simd>(s: S, x: S::V) -> S::V {
    let tiny = s.lt(x, s.splat(f32::MIN_POSITIVE));
    let xs = s.select(tiny, s.mul(x, s.splat(8_388_608.0)), x);
    let y = ln_normal(s, xs);
    let y = s.sub(y, s.and(tiny, s.splat(23.0 * core::f32::consts::LN_2)));
    let y = s.select(s.eq(x, s.splat(f32::INFINITY)), x, y);
    let y = s.select(s.eq(x, s.zero()), s.splat(f32::NEG_INFINITY), y);
    let bad = s.or(s.lt(x, s.zero()), s.is_nan(x));
    s.select(bad, s.splat(f32::NAN), y)
}

/// `ln(1 + y)` for `y ∈ [0, 1]`, accurate (relative) for tiny `y`.
///
/// For `y ≤ ½` this is [`ln1p_small`] directly; above, `1 + y = 2·(1 + f)` with
/// `f = (y − 1)/2 ∈ (−¼, 0]`, computed exactly (`y − 1` is exact by Sterbenz).
#[inline(always)]
pub(crate) fn ln1p_unit<S: Simd>(s: S, y: S::V) -> S::V {
    let big = s.lt(s.splat(0.5), y);
    let f = s.select(big, s.mul(s.sub(y, s.splat(1.0)), s.splat(0.5)), y);
    let l = ln1p_small(s, f);
    s.add(l, s.and(big, s.splat(core::f32::consts::LN_2)))
}

/// `ln(1 + y + y_lo)` for finite `y ≥ 0` and a tiny `y_lo` (the rounding error of
/// `y`), as an unevaluated sum `hi + lo`: `hi = e·LN2_HI` is exact and `lo` holds the
/// rest (`|lo| ≤ 0.35 + e·2.2e-4`), so the sum carries about 8 more bits than one
/// `f32` when `e ≠ 0`.
///
/// `u = 1 + y` rounded, plus the first-order correction `c/u` where
/// `c = (1 + y) − u` is computed exactly (Fast2Sum), then `y_lo` added to it.
#[inline(always)]
fn ln1p_pos_split<S: Simd>(s: S, y: S::V, y_lo: S::V) -> (S::V, S::V) {
    let one = s.splat(1.0);
    let u = s.add(one, y);
    let y_big = s.lt(one, y);
    // Fast2Sum needs the larger operand first.
    let c = s.select(y_big, s.sub(one, s.sub(u, y)), s.sub(y, s.sub(u, one)));
    let c = s.add(c, y_lo);
    let (m, e) = s.frexp(u);
    let big = s.lt(s.splat(core::f32::consts::SQRT_2), m);
    let m = s.select(big, s.mul(m, s.splat(0.5)), m);
    let e = s.add(e, s.and(big, s.splat(1.0)));
    let l = s.add(ln1p_small(s, s.sub(m, one)), s.div(c, u));
    (s.mul(e, s.splat(LN2_HI)), s.fma(e, s.splat(LN2_LO), l))
}

/// `tanh x`: an odd polynomial `x + x³·Q(x²)` for `|x| < 0.625` (relative accuracy near
/// 0, no cancellation), else `1 − 2/(e^{2|x|} + 1)` with the sign of `x`.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let a = s.abs(x);
    // Small branch.
    let z = s.mul(x, x);
    let mut q = s.splat(0.002_145_703_2);
    q = s.fma(q, z, s.splat(-0.008_180_629));
    q = s.fma(q, z, s.splat(0.021_702_131));
    q = s.fma(q, z, s.splat(-0.053_947_054));
    q = s.fma(q, z, s.splat(0.133_332_09));
    q = s.fma(q, z, s.splat(-0.333_333_3));
    let small = s.fma(s.mul(x, z), q, x);
    // Large branch (also correct for ±inf: e = inf gives 1).
    let e = exp_nonneg_for_recip(s, s.add(a, a));
    let t = s.sub(s.splat(1.0), s.div(s.splat(2.0), s.add(e, s.splat(1.0))));
    let t = s.select(s.lt(x, s.zero()), s.neg(t), t);
    let y = s.select(s.lt(a, s.splat(0.625)), small, t);
    s.select(s.is_nan(x), x, y)
}

/// `1 / (1 + e^{−x})` as `1/(1 + e^{−|x|})` for `x ≥ 0` and `e^{x}/(1 + e^{x})` below,
/// so the exponential never overflows and small results keep relative accuracy.
#[inline(always)]
pub(crate) fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    let e = exp_core::<S, false>(s, s.neg(s.abs(x)), s.zero());
    let one = s.splat(1.0);
    let num = s.select(s.le(s.zero(), x), one, e);
    let y = s.div(num, s.add(one, e));
    s.select(s.is_nan(x), x, y)
}

/// PyTorch's softplus (beta 1, threshold 20): `x` above 20, else
/// `max(x, 0) + ln(1 + e^{−|x|})`.
#[inline(always)]
pub(crate) fn softplus<S: Simd>(s: S, x: S::V) -> S::V {
    let e = exp_core::<S, false>(s, s.neg(s.abs(x)), s.zero());
    let y = s.add(s.max(x, s.zero()), ln1p_unit(s, e));
    let y = s.select(s.lt(s.splat(20.0), x), x, y);
    s.select(s.is_nan(x), x, y)
}

/// The Student-t kernel `(1 + x/τ)^p` with `p = −(1+τ)/2`, for finite `x ≥ 0`
/// (callers route other lanes to the scalar definition), given `inv_tau = 1/τ` and `p`.
///
/// Computed as `exp(p · ln(1 + x/τ))` with the exponent `y = p·ln(…)` carried in two
/// parts, because `e^y` turns an absolute error `δ` of `y` into a relative error `δ`
/// of the result, and `|y|` reaches ~100: the rounding errors of `x/τ` and of the
/// product by `p` are recovered exactly ([`Simd::two_prod`]) and `ln` is split as in
/// [`ln1p_pos_split`]. For `τ = 1` (PyG's default, `p = −1`) it is the plain
/// reciprocal `1/(1 + x)`.
#[inline(always)]
pub(crate) fn student_t<S: Simd>(s: S, x: S::V, tau: f32, p: f32) -> S::V {
    if tau == 1.0 {
        return s.div(s.splat(1.0), s.add(s.splat(1.0), x));
    }
    let vt = s.splat(tau);
    let q = s.div(x, vt);
    // x − q·τ exactly (q·τ is within a factor 2 of x, so the subtraction is exact).
    let (qt, qt_err) = s.two_prod(q, vt);
    let q_lo = s.div(s.sub(s.sub(x, qt), qt_err), vt);
    let (hi, lo) = ln1p_pos_split(s, q, q_lo);
    let vp = s.splat(p);
    let (yh, yh_err) = s.two_prod(vp, hi);
    let yl = s.fma(vp, lo, yh_err);
    // Renormalise so that the tail is small next to the head.
    let y = s.add(yh, yl);
    let tail = s.sub(yl, s.sub(y, yh));
    exp_tail(s, y, tail)
}

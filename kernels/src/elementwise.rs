//! Elementwise kernels: unary maps and broadcasting binary arithmetic.
//!
//! For `f32`, [`unary`] runs the dispatched SIMD path ([`crate::dispatch`]); the
//! transcendental functions there are this crate's own vector implementations,
//! whose maximum errors are stated on each [`Unary`] variant and checked by the
//! tests (`tests/elementwise.rs`). `f64` uses `libm` one value at a time.

mod fast;

use crate::Real;
use crate::dispatch::{self, Path};

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
pub fn unary<T: Real>(op: Unary<T>, x: &[T], out: &mut [T]) {
    assert_eq!(x.len(), out.len(), "unary: x and out differ in length");
    T::unary_hook(op, x, out)
}

/// [`unary`] for `f32` on a given [`Path`] instead of the dispatched one (tests,
/// benchmarks).
///
/// # Panics
/// If `x` and `out` differ in length, or `path` is not available here.
pub fn unary_with(path: Path, op: Unary<f32>, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "unary: x and out differ in length");
    dispatch::assert_available(path);
    fast::unary_on(path, op, x, out)
}

/// The `f32` fast path behind [`Real::unary_hook`].
pub(crate) fn unary_f32(op: Unary<f32>, x: &[f32], out: &mut [f32]) {
    fast::unary_on(dispatch::active(), op, x, out)
}

/// `x[i] = op(x[i])` in place.
pub fn unary_inplace<T: Real>(op: Unary<T>, x: &mut [T]) {
    for v in x.iter_mut() {
        *v = op.apply(*v);
    }
}

/// A binary arithmetic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
}

impl Binary {
    /// Applies the operation to two values.
    #[inline]
    pub fn apply<T: Real>(self, a: T, b: T) -> T {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
        }
    }
}

/// How the right operand `b` of a binary kernel is broadcast over `a`, seen as a
/// row-major `[rows, cols]` matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broadcast {
    /// `b` has `a`'s shape.
    Same,
    /// `b` is one value.
    Scalar,
    /// `b` has `cols` values, applied to every row.
    Row,
    /// `b` has `rows` values, one per row.
    Col,
}

impl Broadcast {
    /// The number of values `b` must hold for an `a` of `rows × cols`.
    pub fn b_len(self, rows: usize, cols: usize) -> usize {
        match self {
            Broadcast::Same => rows * cols,
            Broadcast::Scalar => 1,
            Broadcast::Row => cols,
            Broadcast::Col => rows,
        }
    }
}

/// `out = a ∘ b` with `b` broadcast as `bcast` says; `a` and `out` are `[rows, cols]`
/// with `rows = a.len() / cols`.
///
/// # Panics
/// If the lengths do not fit (`cols` must divide `a.len()` unless `a` is empty).
pub fn binary<T: Real>(op: Binary, a: &[T], b: &[T], bcast: Broadcast, cols: usize, out: &mut [T]) {
    check_binary(a, b, bcast, cols, out);
    if a.is_empty() {
        return;
    }
    T::binary_hook(op, a, b, bcast, cols, out)
}

/// [`binary`] for `f32` on a given [`Path`] instead of the dispatched one (tests,
/// benchmarks).
///
/// # Panics
/// As [`binary`], and if `path` is not available here.
pub fn binary_with(
    path: Path,
    op: Binary,
    a: &[f32],
    b: &[f32],
    bcast: Broadcast,
    cols: usize,
    out: &mut [f32],
) {
    dispatch::assert_available(path);
    check_binary(a, b, bcast, cols, out);
    if !a.is_empty() {
        fast::binary_on(
            path,
            fast::BinaryArgs {
                op,
                a,
                b,
                bcast,
                cols,
                out,
            },
        )
    }
}

/// The `f32` fast path behind [`Real::binary_hook`].
pub(crate) fn binary_f32(
    op: Binary,
    a: &[f32],
    b: &[f32],
    bcast: Broadcast,
    cols: usize,
    out: &mut [f32],
) {
    let args = fast::BinaryArgs {
        op,
        a,
        b,
        bcast,
        cols,
        out,
    };
    fast::binary_on(dispatch::active(), args)
}

/// The length checks of [`binary`].
fn check_binary<T: Real>(a: &[T], b: &[T], bcast: Broadcast, cols: usize, out: &[T]) {
    assert_eq!(a.len(), out.len(), "binary: a and out differ in length");
    if a.is_empty() {
        return;
    }
    assert!(
        cols > 0 && a.len().is_multiple_of(cols),
        "binary: cols {} does not divide {}",
        cols,
        a.len()
    );
    let rows = a.len() / cols;
    assert_eq!(
        b.len(),
        bcast.b_len(rows, cols),
        "binary: b has the wrong length for {bcast:?}"
    );
}

/// `y += alpha · x`.
///
/// # Panics
/// If `x` and `y` differ in length.
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "axpy: x and y differ in length");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Scalar reference implementations of the accelerated elementwise kernels.
pub mod reference {
    use super::{Binary, Broadcast, Unary};
    use crate::Real;

    /// `out[i] = op(x[i])`, one value at a time.
    pub fn unary<T: Real>(op: Unary<T>, x: &[T], out: &mut [T]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = op.apply(v);
        }
    }

    /// `out = a ∘ b` with `b` broadcast, one value at a time. Lengths already checked
    /// by [`super::binary`], `cols > 0`.
    pub fn binary<T: Real>(
        op: Binary,
        a: &[T],
        b: &[T],
        bcast: Broadcast,
        cols: usize,
        out: &mut [T],
    ) {
        match bcast {
            Broadcast::Same => {
                for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                    *o = op.apply(x, y);
                }
            }
            Broadcast::Scalar => {
                let y = b[0];
                for (o, &x) in out.iter_mut().zip(a) {
                    *o = op.apply(x, y);
                }
            }
            Broadcast::Row => {
                for (orow, arow) in out.chunks_exact_mut(cols).zip(a.chunks_exact(cols)) {
                    for ((o, &x), &y) in orow.iter_mut().zip(arow).zip(b) {
                        *o = op.apply(x, y);
                    }
                }
            }
            Broadcast::Col => {
                for ((orow, arow), &y) in
                    out.chunks_exact_mut(cols).zip(a.chunks_exact(cols)).zip(b)
                {
                    for (o, &x) in orow.iter_mut().zip(arow) {
                        *o = op.apply(x, y);
                    }
                }
            }
        }
    }
}

//! The `f32` SIMD implementation of [`super::unary`], generic over [`Simd`].

use super::{Binary, Broadcast, Unary, reference};
use crate::dispatch::Path;
use crate::simd::{LANES, Simd, math};

/// `out[i] = f(x[i])`, 8 lanes at a time, the tail through a masked vector.
#[inline(always)]
fn map<S: Simd>(s: S, x: &[f32], out: &mut [f32], f: impl Fn(S::V) -> S::V) {
    let mut xs = x.chunks_exact(LANES);
    let mut os = out.chunks_exact_mut(LANES);
    for (xi, oi) in (&mut xs).zip(&mut os) {
        s.store(oi, f(s.load(xi)));
    }
    let (xt, ot) = (xs.remainder(), os.into_remainder());
    if !xt.is_empty() {
        s.store_partial(ot, f(s.load_partial(xt)));
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
        let v = if xi.len() == LANES {
            s.load(xi)
        } else {
            s.load_partial(xi)
        };
        if s.any(outside(v)) {
            reference::unary(op, xi, oi);
        } else if xi.len() == LANES {
            s.store(oi, f(v));
        } else {
            s.store_partial(oi, f(v));
        }
    }
}

/// [`super::unary`] on the instruction set `s`. Slices have equal lengths.
#[inline(always)]
pub(super) fn unary<S: Simd>(s: S, op: Unary<f32>, x: &[f32], out: &mut [f32]) {
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
        Unary::StudentT(_) | Unary::Powf(_) => reference::unary(op, x, out),
    }
}

/// `out = a ∘ b` for one operation, 8 lanes at a time; every operation is a single
/// IEEE operation, so the result is bit-identical to the scalar code.
#[inline(always)]
fn zip_map<S: Simd>(s: S, op: Binary, a: &[f32], b: &[f32], out: &mut [f32]) {
    let mut xs = a.chunks_exact(LANES);
    let mut ys = b.chunks_exact(LANES);
    let mut os = out.chunks_exact_mut(LANES);
    for ((xi, yi), oi) in (&mut xs).zip(&mut ys).zip(&mut os) {
        s.store(oi, apply(s, op, s.load(xi), s.load(yi)));
    }
    let (xt, yt, ot) = (xs.remainder(), ys.remainder(), os.into_remainder());
    if !xt.is_empty() {
        s.store_partial(ot, apply(s, op, s.load_partial(xt), s.load_partial(yt)));
    }
}

/// One binary operation on vectors.
#[inline(always)]
fn apply<S: Simd>(s: S, op: Binary, x: S::V, y: S::V) -> S::V {
    match op {
        Binary::Add => s.add(x, y),
        Binary::Sub => s.sub(x, y),
        Binary::Mul => s.mul(x, y),
        Binary::Div => s.div(x, y),
    }
}

/// `out = a ∘ y` with one scalar `y`.
#[inline(always)]
fn scalar_map<S: Simd>(s: S, op: Binary, a: &[f32], y: f32, out: &mut [f32]) {
    let y = s.splat(y);
    match op {
        Binary::Add => map(
            s,
            a,
            out,
            #[inline(always)]
            |x| s.add(x, y),
        ),
        Binary::Sub => map(
            s,
            a,
            out,
            #[inline(always)]
            |x| s.sub(x, y),
        ),
        Binary::Mul => map(
            s,
            a,
            out,
            #[inline(always)]
            |x| s.mul(x, y),
        ),
        Binary::Div => map(
            s,
            a,
            out,
            #[inline(always)]
            |x| s.div(x, y),
        ),
    }
}

/// [`super::binary`] on the instruction set `s`; lengths already checked, `cols > 0`.
#[inline(always)]
pub(super) fn binary<S: Simd>(
    s: S,
    op: Binary,
    a: &[f32],
    b: &[f32],
    bcast: Broadcast,
    cols: usize,
    out: &mut [f32],
) {
    match bcast {
        Broadcast::Same => zip_map(s, op, a, b, out),
        Broadcast::Scalar => scalar_map(s, op, a, b[0], out),
        Broadcast::Row => {
            for (ar, or) in a.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
                zip_map(s, op, ar, b, or);
            }
        }
        Broadcast::Col => {
            let rows = a.chunks_exact(cols).zip(out.chunks_exact_mut(cols));
            for ((ar, or), &y) in rows.zip(b) {
                scalar_map(s, op, ar, y, or);
            }
        }
    }
}

/// Arguments of one [`binary`] call.
pub(super) struct BinaryArgs<'a> {
    pub op: Binary,
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub bcast: Broadcast,
    pub cols: usize,
    pub out: &'a mut [f32],
}

impl BinaryArgs<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        binary(s, self.op, self.a, self.b, self.bcast, self.cols, self.out)
    }
}

/// Runs [`binary`] on `path` (already checked to be available).
pub(super) fn binary_on(path: Path, args: BinaryArgs<'_>) {
    match path {
        Path::Scalar => {
            let BinaryArgs {
                op,
                a,
                b,
                bcast,
                cols,
                out,
            } = args;
            reference::binary(op, a, b, bcast, cols, out)
        }
        Path::Portable => args.run(crate::simd::portable::Portable),
        Path::Avx2 => {
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            if let Some(t) = crate::simd::avx2::Avx2::detect() {
                // SAFETY: `t` exists only if the CPU has AVX2 and FMA, the features
                // `binary_avx2` is compiled for.
                unsafe { binary_avx2(t, args) };
                return;
            }
            unreachable!("AVX2 path requested without AVX2 (checked by the caller)")
        }
    }
}

/// [`binary`] compiled for AVX2 + FMA.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "avx2,fma")]
fn binary_avx2(t: crate::simd::avx2::Avx2, args: BinaryArgs<'_>) {
    args.run(t)
}

/// Runs [`unary`] on `path` (already checked to be available).
pub(super) fn unary_on(path: Path, op: Unary<f32>, x: &[f32], out: &mut [f32]) {
    match path {
        Path::Scalar => reference::unary(op, x, out),
        Path::Portable => unary(crate::simd::portable::Portable, op, x, out),
        Path::Avx2 => {
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            if let Some(t) = crate::simd::avx2::Avx2::detect() {
                // SAFETY: `t` exists only if the CPU has AVX2 and FMA, the features
                // `unary_avx2` is compiled for.
                unsafe { unary_avx2(t, op, x, out) };
                return;
            }
            unreachable!("AVX2 path requested without AVX2 (checked by the caller)")
        }
    }
}

/// [`unary`] compiled for AVX2 + FMA.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "avx2,fma")]
fn unary_avx2(t: crate::simd::avx2::Avx2, op: Unary<f32>, x: &[f32], out: &mut [f32]) {
    unary(t, op, x, out)
}

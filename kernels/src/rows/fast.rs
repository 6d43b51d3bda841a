//! The `f32` SIMD implementations of the row kernels ([`super::softmax_rows`],
//! [`super::layer_norm_rows`], [`super::layer_norm_backward_rows`]), generic over
//! [`Simd`].

use super::reference;
use crate::dispatch::Path;
use crate::simd::{LANES, Simd, math};

/// Row softmax: vector max, then `e = exp(x − max)` stored and summed in one pass,
/// then a scale by `1/Σe`. NaN or `+inf` in a row make the whole row NaN, as in the
/// reference (through `exp(NaN) = NaN` and `inf − inf = NaN`).
#[inline(always)]
pub(super) fn softmax_rows<S: Simd>(s: S, x: &[f32], cols: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mut mv = s.splat(f32::NEG_INFINITY);
        let mut xs = xr.chunks_exact(LANES);
        for xi in &mut xs {
            mv = s.max(mv, s.load(xi));
        }
        let mut m = s.reduce_max(mv);
        for &v in xs.remainder() {
            if v > m {
                m = v;
            }
        }
        let vm = s.splat(m);

        let mut sv = s.zero();
        let mut xs = xr.chunks_exact(LANES);
        let mut os = or.chunks_exact_mut(LANES);
        for (xi, oi) in (&mut xs).zip(&mut os) {
            let e = math::exp(s, s.sub(s.load(xi), vm));
            s.store(oi, e);
            sv = s.add(sv, e);
        }
        let (xt, ot) = (xs.remainder(), os.into_remainder());
        let mut tail = 0.0;
        if !xt.is_empty() {
            s.store_partial(ot, math::exp(s, s.sub(s.load_partial(xt), vm)));
            tail = ot.iter().sum();
        }
        let inv = 1.0 / (s.reduce_add(sv) + tail);

        let vinv = s.splat(inv);
        let mut os = or.chunks_exact_mut(LANES);
        for oi in &mut os {
            s.store(oi, s.mul(s.load(oi), vinv));
        }
        for o in os.into_remainder() {
            *o *= inv;
        }
    }
}

/// Loads up to 8 values (a full vector, or a zero-padded partial one).
#[inline(always)]
fn load_any<S: Simd>(s: S, x: &[f32]) -> S::V {
    if x.len() >= LANES {
        s.load(x)
    } else {
        s.load_partial(x)
    }
}

/// Stores up to 8 lanes.
#[inline(always)]
fn store_any<S: Simd>(s: S, out: &mut [f32], v: S::V) {
    if out.len() >= LANES {
        s.store(out, v)
    } else {
        s.store_partial(out, v)
    }
}

/// Sum of a row (8 partial sums, then a fixed-order reduction).
#[inline(always)]
fn row_sum<S: Simd>(s: S, x: &[f32]) -> f32 {
    let mut acc = s.zero();
    for xi in x.chunks(LANES) {
        acc = s.add(acc, load_any(s, xi));
    }
    s.reduce_add(acc)
}

/// Layer norm forward, the same two passes as the reference (mean, then the centred
/// sum of squares, which is more accurate than `E[x²] − E[x]²`), vectorised.
#[inline(always)]
pub(super) fn layer_norm_rows<S: Simd>(
    s: S,
    x: &[f32],
    cols: usize,
    eps: f32,
    affine: Option<(&[f32], &[f32])>,
    out: &mut [f32],
    (mean, rstd): (&mut [f32], &mut [f32]),
) {
    let n = cols as f32;
    for (r, (xr, or)) in x
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .enumerate()
    {
        let mu = row_sum(s, xr) / n;
        let vmu = s.splat(mu);
        let mut acc = s.zero();
        let mut xs = xr.chunks_exact(LANES);
        for xi in &mut xs {
            let d = s.sub(s.load(xi), vmu);
            acc = s.fma(d, d, acc);
        }
        let mut ss = s.reduce_add(acc);
        // The tail in scalar code: zero-padded lanes would add mu² each.
        for &v in xs.remainder() {
            let d = v - mu;
            ss += d * d;
        }
        let rs = 1.0 / libm::sqrtf(ss / n + eps);
        mean[r] = mu;
        rstd[r] = rs;
        let vrs = s.splat(rs);
        match affine {
            Some((w, b)) => {
                let chunks = xr.chunks(LANES).zip(or.chunks_mut(LANES));
                for ((xi, oi), (wi, bi)) in chunks.zip(w.chunks(LANES).zip(b.chunks(LANES))) {
                    let xhat = s.mul(s.sub(load_any(s, xi), vmu), vrs);
                    store_any(s, oi, s.fma(xhat, load_any(s, wi), load_any(s, bi)));
                }
            }
            None => {
                for (xi, oi) in xr.chunks(LANES).zip(or.chunks_mut(LANES)) {
                    store_any(s, oi, s.mul(s.sub(load_any(s, xi), vmu), vrs));
                }
            }
        }
    }
}

/// Layer norm backward: `dx = rstd·(g − mean(g) − xhat·mean(g·xhat))`, both means in
/// one pass, then one pass to write `dx`.
#[inline(always)]
pub(super) fn layer_norm_backward_rows<S: Simd>(
    s: S,
    xhat: &[f32],
    g: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
) {
    let cols = xhat.len() / rstd.len();
    if cols == 0 {
        return;
    }
    let n = cols as f32;
    let rows = xhat.chunks_exact(cols).zip(g.chunks_exact(cols));
    for ((xr, gr), (dr, &rs)) in rows.zip(dx.chunks_exact_mut(cols).zip(rstd)) {
        let (mut sg, mut sgx) = (s.zero(), s.zero());
        for (xi, gi) in xr.chunks(LANES).zip(gr.chunks(LANES)) {
            let gv = load_any(s, gi);
            sg = s.add(sg, gv);
            sgx = s.fma(gv, load_any(s, xi), sgx);
        }
        let mg = s.splat(s.reduce_add(sg) / n);
        let mgx = s.splat(s.reduce_add(sgx) / n);
        let vrs = s.splat(rs);
        for ((xi, gi), di) in xr
            .chunks(LANES)
            .zip(gr.chunks(LANES))
            .zip(dr.chunks_mut(LANES))
        {
            let t = s.sub(s.sub(load_any(s, gi), mg), s.mul(load_any(s, xi), mgx));
            store_any(s, di, s.mul(vrs, t));
        }
    }
}

/// Runs [`softmax_rows`] on `path` (already checked to be available).
pub(super) fn softmax_rows_on(path: Path, x: &[f32], cols: usize, out: &mut [f32]) {
    match path {
        Path::Scalar => reference::softmax_rows(x, cols, out),
        Path::Portable => softmax_rows(crate::simd::portable::Portable, x, cols, out),
        Path::Avx2 => {
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            if let Some(t) = crate::simd::avx2::Avx2::detect() {
                // SAFETY: `t` exists only if the CPU has AVX2 and FMA, the features
                // `softmax_avx2` is compiled for.
                unsafe { softmax_avx2(t, x, cols, out) };
                return;
            }
            unreachable!("AVX2 path requested without AVX2 (checked by the caller)")
        }
    }
}

/// [`softmax_rows`] compiled for AVX2 + FMA.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "avx2,fma")]
fn softmax_avx2(t: crate::simd::avx2::Avx2, x: &[f32], cols: usize, out: &mut [f32]) {
    softmax_rows(t, x, cols, out)
}

/// Arguments of one layer norm forward call.
pub(super) struct LayerNormArgs<'a> {
    pub x: &'a [f32],
    pub cols: usize,
    pub eps: f32,
    pub affine: Option<(&'a [f32], &'a [f32])>,
    pub out: &'a mut [f32],
    pub mean: &'a mut [f32],
    pub rstd: &'a mut [f32],
}

impl LayerNormArgs<'_> {
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let stats = (self.mean, self.rstd);
        layer_norm_rows(s, self.x, self.cols, self.eps, self.affine, self.out, stats)
    }
}

/// Runs [`layer_norm_rows`] on `path` (already checked to be available; `cols > 0`).
pub(super) fn layer_norm_rows_on(path: Path, args: LayerNormArgs<'_>) {
    match path {
        Path::Scalar => reference::layer_norm_rows(
            args.x,
            args.cols,
            args.eps,
            args.affine,
            args.out,
            (args.mean, args.rstd),
        ),
        Path::Portable => args.run(crate::simd::portable::Portable),
        Path::Avx2 => {
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            if let Some(t) = crate::simd::avx2::Avx2::detect() {
                // SAFETY: `t` exists only if the CPU has AVX2 and FMA, the features
                // `layer_norm_avx2` is compiled for.
                unsafe { layer_norm_avx2(t, args) };
                return;
            }
            unreachable!("AVX2 path requested without AVX2 (checked by the caller)")
        }
    }
}

/// [`layer_norm_rows`] compiled for AVX2 + FMA.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "avx2,fma")]
fn layer_norm_avx2(t: crate::simd::avx2::Avx2, args: LayerNormArgs<'_>) {
    args.run(t)
}

/// Runs [`layer_norm_backward_rows`] on `path` (already checked to be available;
/// `rstd` not empty).
pub(super) fn layer_norm_backward_rows_on(
    path: Path,
    xhat: &[f32],
    g: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
) {
    match path {
        Path::Scalar => reference::layer_norm_backward_rows(xhat, g, rstd, dx),
        Path::Portable => {
            layer_norm_backward_rows(crate::simd::portable::Portable, xhat, g, rstd, dx)
        }
        Path::Avx2 => {
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            if let Some(t) = crate::simd::avx2::Avx2::detect() {
                // SAFETY: `t` exists only if the CPU has AVX2 and FMA, the features
                // `layer_norm_backward_avx2` is compiled for.
                unsafe { layer_norm_backward_avx2(t, xhat, g, rstd, dx) };
                return;
            }
            unreachable!("AVX2 path requested without AVX2 (checked by the caller)")
        }
    }
}

/// [`layer_norm_backward_rows`] compiled for AVX2 + FMA.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "avx2,fma")]
fn layer_norm_backward_avx2(
    t: crate::simd::avx2::Avx2,
    xhat: &[f32],
    g: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
) {
    layer_norm_backward_rows(t, xhat, g, rstd, dx)
}

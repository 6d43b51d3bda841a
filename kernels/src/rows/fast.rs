//! The `f32` SIMD implementation of [`super::softmax_rows`], generic over [`Simd`].

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

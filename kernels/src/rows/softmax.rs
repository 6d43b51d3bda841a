//! Row softmax: `out[r, c] = exp(x[r, c] − max_r) / Σ_c' exp(x[r, c'] − max_r)`.

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::{LANES, Simd, math};

/// Softmax of every row: `out[r, c] = exp(x[r, c] − max_r) / Σ_c' exp(x[r, c'] − max_r)`.
///
/// # Panics
/// If `x` and `out` differ in length or `cols` does not divide it.
pub fn softmax_rows<T: Real>(x: &[T], cols: usize, out: &mut [T]) {
    if let Some(call) = SoftmaxArgs::new(x, cols, out) {
        T::run_kernel::<SoftmaxKernel>(call)
    }
}

/// [`softmax_rows`] for `f32` on a given [`Path`] instead of the dispatched one
/// (tests, benchmarks).
///
/// # Panics
/// As [`softmax_rows`], and if `path` is not available here (unless `x` is empty).
pub fn softmax_rows_with(path: Path, x: &[f32], cols: usize, out: &mut [f32]) {
    if let Some(call) = SoftmaxArgs::new(x, cols, out) {
        dispatch::run::<SoftmaxKernel>(path, call)
    }
}

/// The arguments of one [`softmax_rows`] call: lengths checked, `cols > 0`.
pub(crate) struct SoftmaxArgs<'a, T> {
    x: &'a [T],
    cols: usize,
    out: &'a mut [T],
}

impl<'a, T> SoftmaxArgs<'a, T> {
    /// Checks the lengths; `None` when there is nothing to compute (`x` empty).
    fn new(x: &'a [T], cols: usize, out: &'a mut [T]) -> Option<Self> {
        assert_eq!(
            x.len(),
            out.len(),
            "softmax_rows: x and out differ in length"
        );
        if x.is_empty() {
            return None;
        }
        assert!(
            cols > 0 && x.len().is_multiple_of(cols),
            "softmax_rows: cols does not divide x.len()"
        );
        Some(SoftmaxArgs { x, cols, out })
    }
}

/// The row softmax kernel (see [`crate::dispatch`]).
pub(crate) struct SoftmaxKernel;

impl Kernel for SoftmaxKernel {
    type Args<'a, T: Real> = SoftmaxArgs<'a, T>;
    type Output = ();

    /// One row at a time, max-subtracted.
    fn reference<T: Real>(SoftmaxArgs { x, cols, out }: SoftmaxArgs<'_, T>) {
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let mut m = xr[0];
            for &v in xr {
                m = m.max_nan(v);
            }
            let mut s = T::ZERO;
            for (o, &v) in or.iter_mut().zip(xr) {
                *o = (v - m).exp();
                s += *o;
            }
            let inv = T::ONE / s;
            for o in or.iter_mut() {
                *o *= inv;
            }
        }
    }

    /// Vector max, then `e = exp(x − max)` stored and summed in one pass, then a
    /// scale by `1/Σe`. NaN or `+inf` in a row make the whole row NaN, as in the
    /// reference (through `exp(NaN) = NaN` and `inf − inf = NaN`).
    #[inline(always)]
    fn run<S: Simd>(s: S, SoftmaxArgs { x, cols, out }: SoftmaxArgs<'_, f32>) {
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
}

//! Backward of [`super::norm_tanh`]'s `t = tanh(LayerNorm(p)·γ + β)` with respect to
//! its input `p`, row by row, in one kernel call:
//! `q = dt·(1 − t²)·γ`, then `dp = rstd·(q − mean(q) − x̂·mean(q·x̂))`.
//!
//! As separate passes this is an elementwise `tanh'`-and-affine pass that writes `q`,
//! then the layer norm backward reading it twice. Here each row is read once to form
//! `q` (kept in `dp`) and both means, and once more to finish `dp`, in L1. The skip's
//! gradient (`dt` itself) and the affine parameters' gradients are not computed: the
//! inference engine needs neither.
//!
//! # Error bound (`f32` SIMD paths against the scalar reference)
//!
//! `q` differs by at most `3ε·|q|` (the SIMD paths may fuse `1 − t²`). The rest is
//! [`super::layer_norm`]'s backward with sums in another order: with
//! `τ = (2·cols + 8)·ε`, `|Δdp| ≤ (τ + 3ε)·rstd·(|q| + mean|q| + |x̂|·mean|q·x̂|)`. The
//! kernel tests check this bound on every path.

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::{LANES, Simd};

/// What the backward of [`super::norm_tanh_rows`] reads, saved by the forward:
/// `x̂` and `t` (`[rows, cols]`), `rstd` (`[rows]`), and the LayerNorm's weight `γ`
/// (`[cols]`).
#[derive(Clone, Copy, Debug)]
pub struct NormTanhSaved<'a, T> {
    /// `x̂ = (p − mean)·rstd`.
    pub xhat: &'a [T],
    /// `t = tanh(γ·x̂ + β)`.
    pub t: &'a [T],
    /// `1/√(var + eps)` per row.
    pub rstd: &'a [T],
    /// The LayerNorm's weight `γ`.
    pub weight: &'a [T],
}

/// `dp = ∂L/∂p` for `dt = ∂L/∂t` (`[rows, cols]`): `q = dt·(1 − t²)·γ`,
/// `dp = rstd·(q − mean(q) − x̂·mean(q·x̂))`. Replaces tanh's backward, the affine
/// part's and `layer_norm_backward_rows`. See the module documentation for the error
/// bound.
///
/// # Panics
/// If the lengths do not fit.
pub fn norm_tanh_backward_rows<T: Real>(saved: NormTanhSaved<'_, T>, dt: &[T], dp: &mut [T]) {
    if let Some(call) = NormTanhBackwardArgs::new(saved, dt, dp) {
        T::run_kernel::<NormTanhBackwardKernel>(call)
    }
}

/// [`norm_tanh_backward_rows`] for `f32` on a given [`Path`] (tests, benchmarks).
///
/// # Panics
/// As [`norm_tanh_backward_rows`], and if `path` is not available here (unless there
/// is nothing to compute).
pub fn norm_tanh_backward_rows_with(
    path: Path,
    saved: NormTanhSaved<'_, f32>,
    dt: &[f32],
    dp: &mut [f32],
) {
    if let Some(call) = NormTanhBackwardArgs::new(saved, dt, dp) {
        dispatch::run::<NormTanhBackwardKernel>(path, call)
    }
}

/// The arguments of one [`norm_tanh_backward_rows`] call: lengths checked, at least
/// one row, `cols > 0`.
pub(crate) struct NormTanhBackwardArgs<'a, T> {
    saved: NormTanhSaved<'a, T>,
    cols: usize,
    dt: &'a [T],
    dp: &'a mut [T],
}

impl<'a, T> NormTanhBackwardArgs<'a, T> {
    /// Checks the lengths; `None` when there is nothing to compute.
    fn new(saved: NormTanhSaved<'a, T>, dt: &'a [T], dp: &'a mut [T]) -> Option<Self> {
        let cols = saved.weight.len();
        let len = saved.rstd.len() * cols;
        for (name, l) in [
            ("xhat", saved.xhat.len()),
            ("t", saved.t.len()),
            ("dt", dt.len()),
            ("dp", dp.len()),
        ] {
            assert_eq!(
                l, len,
                "norm_tanh_backward_rows: {name} needs rstd.len() × weight.len() values"
            );
        }
        (len > 0).then_some(NormTanhBackwardArgs {
            saved,
            cols,
            dt,
            dp,
        })
    }
}

/// The fused tanh → LayerNorm backward kernel (see [`crate::dispatch`]).
pub(crate) struct NormTanhBackwardKernel;

impl Kernel for NormTanhBackwardKernel {
    type Args<'a, T: Real> = NormTanhBackwardArgs<'a, T>;
    type Output = ();

    /// Per row: `q` into `dp` with both sums, then `dp` in place.
    fn reference<T: Real>(call: NormTanhBackwardArgs<'_, T>) {
        let NormTanhBackwardArgs {
            saved,
            cols,
            dt,
            dp,
        } = call;
        let n = T::from_usize(cols);
        let rows = saved
            .xhat
            .chunks_exact(cols)
            .zip(saved.t.chunks_exact(cols))
            .zip(dt.chunks_exact(cols))
            .zip(dp.chunks_exact_mut(cols))
            .zip(saved.rstd);
        for ((((xr, tr), dr), pr), &rs) in rows {
            let (mut sq, mut sqx) = (T::ZERO, T::ZERO);
            for k in 0..cols {
                let q = dr[k] * (T::ONE - tr[k] * tr[k]) * saved.weight[k];
                pr[k] = q;
                sq += q;
                sqx += q * xr[k];
            }
            let (mq, mqx) = (sq / n, sqx / n);
            for (d, &xh) in pr.iter_mut().zip(xr) {
                *d = rs * (*d - mq - xh * mqx);
            }
        }
    }

    /// The reference's two passes, vectorised.
    #[inline(always)]
    fn run<S: Simd>(s: S, call: NormTanhBackwardArgs<'_, f32>) {
        let NormTanhBackwardArgs {
            saved,
            cols,
            dt,
            dp,
        } = call;
        let n = cols as f32;
        let one = s.splat(1.0);
        let rows = saved
            .xhat
            .chunks_exact(cols)
            .zip(saved.t.chunks_exact(cols))
            .zip(dt.chunks_exact(cols))
            .zip(dp.chunks_exact_mut(cols))
            .zip(saved.rstd);
        for ((((xr, tr), dr), pr), &rs) in rows {
            let (mut sq, mut sqx) = (s.zero(), s.zero());
            let ins = xr.chunks(LANES).zip(tr.chunks(LANES)).zip(dr.chunks(LANES));
            for (((xi, ti), di), (wi, qo)) in
                ins.zip(saved.weight.chunks(LANES).zip(pr.chunks_mut(LANES)))
            {
                let t = s.load_any(ti);
                let slope = s.sub(one, s.mul(t, t));
                // Zero-padded lanes give q = 0: they add nothing to the sums.
                let q = s.mul(s.mul(s.load_any(di), slope), s.load_any(wi));
                s.store_any(qo, q);
                sq = s.add(sq, q);
                sqx = s.fma(q, s.load_any(xi), sqx);
            }
            let mq = s.splat(s.reduce_add(sq) / n);
            let mqx = s.splat(s.reduce_add(sqx) / n);
            let vrs = s.splat(rs);
            for (xi, qi) in xr.chunks(LANES).zip(pr.chunks_mut(LANES)) {
                let d = s.sub(s.sub(s.load_any(qi), mq), s.mul(s.load_any(xi), mqx));
                s.store_any(qi, s.mul(vrs, d));
            }
        }
    }
}

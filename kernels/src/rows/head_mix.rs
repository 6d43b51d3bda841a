//! MemPooling's per-row mixing step: normalise each head's kernel values over the
//! clusters, mix the heads with their weights, softmax over the clusters.
//!
//! For one row `q [H·K]` (the Student-t kernel against `H` heads of `K` keys) and
//! head weights `w [H]`:
//!
//! ```text
//! Q_h  = Σ_j q_hj,   n_hj = q_hj / Q_h      (q is overwritten by n)
//! z_j  = Σ_h w_h · n_hj
//! s_j  = exp(z_j − max z) / Σ_l exp(z_l − max z)
//! ```
//!
//! Separately these are a row sum, a division, a small matmul and a softmax, each a
//! pass over the block with its own call per row of `K` values (`K` is 10 to 32 in
//! the workloads, so per-call overhead is most of their cost); here they are one pass
//! per row, with `n` kept (the training backward needs it) and `z` built in the
//! output row before the softmax turns it into `s` in place.
//!
//! # Error of the vector path
//!
//! The vector path sums `Q_h` in eight lanes then the tail (the reference: as
//! [`crate::reduce::sum_all`], eight lanes in another final order), so `Q_h`
//! differs by at most `K·ε` relative; the division is exact in both, so `n` differs by
//! at most `(K + 1)·ε` relative. `z_j` is a sum of `H` products computed in the same
//! order in both: `|Δz| ≤ (K + 2 + H)·ε·Σ_h |w_h·n_hj|`. Then softmax (as
//! `rows::softmax`: `exp` within 1.5 ulp, a sum in another order): `s` differs by at
//! most `(6 + 2·K)·ε + 2·max|Δz|` relative. The tests check those bounds.

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::{LANES, Simd, math};

/// Per row of `q [rows, H·K]` (`H = w.len()`): `q ← n` (each head's values divided by
/// their sum) and `s [rows, K] ← softmax_j(Σ_h w_h·n_hj)`.
///
/// # Panics
/// If `w` is empty, `k` is 0, `q` does not hold whole rows of `H·K` values, or `s` does
/// not hold `K` values per row of `q`.
pub fn head_mix_softmax_rows<T: Real>(q: &mut [T], w: &[T], k: usize, s: &mut [T]) {
    if let Some(call) = HeadMixArgs::new(q, w, k, s) {
        T::run_kernel::<HeadMixKernel>(call)
    }
}

/// [`head_mix_softmax_rows`] for `f32` on a given [`Path`] (tests, benchmarks).
///
/// # Panics
/// As [`head_mix_softmax_rows`], and if `path` is not available here.
pub fn head_mix_softmax_rows_with(path: Path, q: &mut [f32], w: &[f32], k: usize, s: &mut [f32]) {
    if let Some(call) = HeadMixArgs::new(q, w, k, s) {
        dispatch::run::<HeadMixKernel>(path, call)
    }
}

/// One call's arguments (lengths checked).
pub(crate) struct HeadMixArgs<'a, T> {
    q: &'a mut [T],
    w: &'a [T],
    k: usize,
    s: &'a mut [T],
}

impl<'a, T> HeadMixArgs<'a, T> {
    fn new(q: &'a mut [T], w: &'a [T], k: usize, s: &'a mut [T]) -> Option<Self> {
        assert!(
            !w.is_empty() && k > 0,
            "head_mix_softmax_rows: needs at least one head and one cluster"
        );
        let hk = w.len() * k;
        assert!(
            q.len().is_multiple_of(hk),
            "head_mix_softmax_rows: q does not hold whole rows of H·K values"
        );
        assert_eq!(
            s.len(),
            q.len() / hk * k,
            "head_mix_softmax_rows: s must hold K values per row of q"
        );
        if q.is_empty() {
            return None;
        }
        Some(HeadMixArgs { q, w, k, s })
    }
}

/// The kernel (see [`crate::dispatch`]).
pub(crate) struct HeadMixKernel;

impl Kernel for HeadMixKernel {
    type Args<'a, T: Real> = HeadMixArgs<'a, T>;
    type Output = ();

    fn reference<T: Real>(HeadMixArgs { q, w, k, s }: HeadMixArgs<'_, T>) {
        let hk = w.len() * k;
        for (qr, sr) in q.chunks_exact_mut(hk).zip(s.chunks_exact_mut(k)) {
            sr.fill(T::ZERO);
            for (qh, &wh) in qr.chunks_exact_mut(k).zip(w) {
                // In `sum_all`'s order, the one `sum_rows` (the tape's op) uses: the
                // loss on `S` downstream (`kl_loss`) cancels, so the reference keeps
                // the tape's rounding.
                let sum = crate::reduce::sum_all(qh);
                for (v, z) in qh.iter_mut().zip(sr.iter_mut()) {
                    *v /= sum;
                    *z += wh * *v;
                }
            }
            // Softmax in place, as `rows::softmax`'s reference.
            let mut m = sr[0];
            for &v in sr.iter() {
                m = m.max_nan(v);
            }
            let mut total = T::ZERO;
            for v in sr.iter_mut() {
                *v = (*v - m).exp();
                total += *v;
            }
            let inv = T::ONE / total;
            for v in sr.iter_mut() {
                *v *= inv;
            }
        }
    }

    #[inline(always)]
    fn run<S: Simd>(s: S, HeadMixArgs { q, w, k, s: out }: HeadMixArgs<'_, f32>) {
        let hk = w.len() * k;
        for (qr, zr) in q.chunks_exact_mut(hk).zip(out.chunks_exact_mut(k)) {
            zr.fill(0.0);
            for (qh, &wh) in qr.chunks_exact_mut(k).zip(w) {
                // Q_h in eight lanes, then the tail. The tails (K mod 8 values) are
                // scalar: partial vector loads and stores of the same short tail of `z`
                // head after head stall on store forwarding, and cost more than
                // the arithmetic (K = 10: a third slower than the separate passes).
                let mut acc = s.zero();
                let mut cs = qh.chunks_exact(LANES);
                for c in &mut cs {
                    acc = s.add(acc, s.load(c));
                }
                let mut sum = s.reduce_add(acc);
                for &v in cs.remainder() {
                    sum += v;
                }
                let vsum = s.splat(sum);
                let vw = s.splat(wh);
                // n = q / Q_h (stored over q), z += w_h·n.
                let mut qs = qh.chunks_exact_mut(LANES);
                let mut zs = zr.chunks_exact_mut(LANES);
                for (qc, zc) in (&mut qs).zip(&mut zs) {
                    let n = s.div(s.load(qc), vsum);
                    s.store(qc, n);
                    s.store(zc, s.add(s.load(zc), s.mul(vw, n)));
                }
                for (v, z) in qs.into_remainder().iter_mut().zip(zs.into_remainder()) {
                    *v /= sum;
                    *z += wh * *v;
                }
            }
            softmax_in_place(s, zr);
        }
    }
}

/// `row ← softmax(row)`, the vector code of `rows::softmax` on one row, in place.
#[inline(always)]
fn softmax_in_place<S: Simd>(s: S, row: &mut [f32]) {
    let mut mv = s.splat(f32::NEG_INFINITY);
    let mut cs = row.chunks_exact(LANES);
    for c in &mut cs {
        mv = s.max(mv, s.load(c));
    }
    let mut m = s.reduce_max(mv);
    for &v in cs.remainder() {
        // NaN propagates as in the reference (`max_nan`).
        if v > m || v.is_nan() {
            m = v;
        }
    }
    let vm = s.splat(m);
    let mut sv = s.zero();
    let mut cs = row.chunks_exact_mut(LANES);
    for c in &mut cs {
        let e = math::exp(s, s.sub(s.load(c), vm));
        s.store(c, e);
        sv = s.add(sv, e);
    }
    let tail_row = cs.into_remainder();
    let mut tail = 0.0;
    if !tail_row.is_empty() {
        s.store_partial(tail_row, math::exp(s, s.sub(s.load_partial(tail_row), vm)));
        tail = tail_row.iter().sum();
    }
    let inv = 1.0 / (s.reduce_add(sv) + tail);
    let vinv = s.splat(inv);
    let mut cs = row.chunks_exact_mut(LANES);
    for c in &mut cs {
        s.store(c, s.mul(s.load(c), vinv));
    }
    for v in cs.into_remainder() {
        *v *= inv;
    }
}

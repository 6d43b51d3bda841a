//! Layer normalisation of rows, PyTorch's definition, forward and backward.
//!
//! Both kernels make the same passes as their scalar references: the forward takes
//! the mean, then the centred sum of squares (more accurate than `E[x²] − E[x]²`) and
//! the residues' sum, whose mean corrects the residues for the rounded mean
//! ([`recentre`]);
//! the backward takes both of its means in one pass, then writes `dx`.

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::{LANES, Simd};

/// Layer normalisation of every row, PyTorch's definition (biased variance):
/// `out = (x − mean) / √(var + eps) · weight + bias`. Writes each row's mean and
/// `1/√(var + eps)` to `mean` and `rstd` (one value per row) for the backward pass.
/// `weight` and `bias`, when given, hold `cols` values.
///
/// # Panics
/// If the lengths do not fit.
pub fn layer_norm_rows<T: Real>(
    x: &[T],
    cols: usize,
    eps: T,
    affine: Option<(&[T], &[T])>,
    out: &mut [T],
    stats: (&mut [T], &mut [T]),
) {
    if let Some(call) = LayerNormArgs::new(x, cols, eps, affine, out, stats) {
        T::run_kernel::<LayerNormKernel>(call)
    }
}

/// [`layer_norm_rows`] for `f32` on a given [`Path`] instead of the dispatched one
/// (tests, benchmarks).
///
/// # Panics
/// As [`layer_norm_rows`], and if `path` is not available here (unless `cols = 0`).
pub fn layer_norm_rows_with(
    path: Path,
    x: &[f32],
    cols: usize,
    eps: f32,
    affine: Option<(&[f32], &[f32])>,
    out: &mut [f32],
    stats: (&mut [f32], &mut [f32]),
) {
    if let Some(call) = LayerNormArgs::new(x, cols, eps, affine, out, stats) {
        dispatch::run::<LayerNormKernel>(path, call)
    }
}

/// The arguments of one [`layer_norm_rows`] call: lengths checked, `cols > 0`.
pub(crate) struct LayerNormArgs<'a, T> {
    x: &'a [T],
    cols: usize,
    eps: T,
    affine: Option<(&'a [T], &'a [T])>,
    out: &'a mut [T],
    mean: &'a mut [T],
    rstd: &'a mut [T],
}

impl<'a, T> LayerNormArgs<'a, T> {
    /// Checks the lengths; `None` when there is nothing to compute (`cols = 0`).
    fn new(
        x: &'a [T],
        cols: usize,
        eps: T,
        affine: Option<(&'a [T], &'a [T])>,
        out: &'a mut [T],
        (mean, rstd): (&'a mut [T], &'a mut [T]),
    ) -> Option<Self> {
        assert_eq!(
            x.len(),
            out.len(),
            "layer_norm_rows: x and out differ in length"
        );
        assert_eq!(
            x.len(),
            mean.len() * cols,
            "layer_norm_rows: mean needs one value per row"
        );
        assert_eq!(
            mean.len(),
            rstd.len(),
            "layer_norm_rows: mean and rstd differ in length"
        );
        if let Some((w, b)) = affine {
            assert!(
                w.len() == cols && b.len() == cols,
                "layer_norm_rows: weight/bias need cols values"
            );
        }
        (cols > 0).then_some(LayerNormArgs {
            x,
            cols,
            eps,
            affine,
            out,
            mean,
            rstd,
        })
    }
}

/// The layer norm forward kernel (see [`crate::dispatch`]).
pub(crate) struct LayerNormKernel;

impl Kernel for LayerNormKernel {
    type Args<'a, T: Real> = LayerNormArgs<'a, T>;
    type Output = ();

    /// Two passes per row (mean, then centred sum of squares).
    fn reference<T: Real>(call: LayerNormArgs<'_, T>) {
        let (x, cols, eps, affine) = (call.x, call.cols, call.eps, call.affine);
        let (out, mean, rstd) = (call.out, call.mean, call.rstd);
        for (r, (xrow, orow)) in x
            .chunks_exact(cols)
            .zip(out.chunks_exact_mut(cols))
            .enumerate()
        {
            let RowStats { mu0, c, rstd: rs } = row_stats_ref(xrow, eps);
            mean[r] = mu0 + c;
            rstd[r] = rs;
            // x̂ = ((x − mu0) − c)·rstd: the correction is applied to the residue, where
            // it is representable (see `recentre`).
            match affine {
                Some((w, b)) => {
                    for (((o, &v), &wi), &bi) in orow.iter_mut().zip(xrow).zip(w).zip(b) {
                        *o = (v - mu0 - c) * rs * wi + bi;
                    }
                }
                None => {
                    for (o, &v) in orow.iter_mut().zip(xrow) {
                        *o = (v - mu0 - c) * rs;
                    }
                }
            }
        }
    }

    /// The reference's two passes, vectorised, the statistics 8 rows at a time.
    #[inline(always)]
    fn run<S: Simd>(s: S, call: LayerNormArgs<'_, f32>) {
        let (x, cols, eps, affine) = (call.x, call.cols, call.eps, call.affine);
        let (out, mean, rstd) = (call.out, call.mean, call.rstd);
        let rows = x.len() / cols;
        let mut stats = [RowStats::default(); 8];
        let mut r0 = 0;
        while r0 < rows {
            let done = next_row_stats(s, x, cols, eps, r0, &mut stats);
            for (r, &RowStats { mu0, c, rstd: rs }) in (r0..).zip(&stats[..done]) {
                let xr = &x[r * cols..(r + 1) * cols];
                let or = &mut out[r * cols..(r + 1) * cols];
                let vmu0 = s.splat(mu0);
                let vc = s.splat(c);
                mean[r] = mu0 + c;
                rstd[r] = rs;
                let vrs = s.splat(rs);
                match affine {
                    Some((w, b)) => {
                        let chunks = xr.chunks(LANES).zip(or.chunks_mut(LANES));
                        for ((xi, oi), (wi, bi)) in chunks.zip(w.chunks(LANES).zip(b.chunks(LANES)))
                        {
                            let d = s.sub(s.sub(s.load_any(xi), vmu0), vc);
                            let xhat = s.mul(d, vrs);
                            s.store_any(oi, s.fma(xhat, s.load_any(wi), s.load_any(bi)));
                        }
                    }
                    None => {
                        for (xi, oi) in xr.chunks(LANES).zip(or.chunks_mut(LANES)) {
                            let d = s.sub(s.sub(s.load_any(xi), vmu0), vc);
                            s.store_any(oi, s.mul(d, vrs));
                        }
                    }
                }
            }
            r0 += done;
        }
    }
}

/// The correction `c = Σd/n` of the rounded mean `mu0 = Σx/n`, from the residues
/// `d = x − mu0`, and the centred sum of squares about `mu0 + c`:
/// `Σ(x − mu0 − c)² = Σd² − c·Σd`.
///
/// Why: `mu0` is off by up to half an ulp of `|mu0|`. On a row whose spread is small
/// next to its mean (e.g. `[−4.2863, −4.2655]`) that error is a sizeable part of every
/// `x − mu0`, so `x̂` no longer sums to zero and the cancellations the backward pass
/// relies on (`Σ dx = 0`, scaled by `rstd`; second-order terms, by `rstd²`) fail: fuzz
/// findings O1 (the tape's backward) and O3 (this kernel, in the fused forward). The
/// callers subtract `c` from the residue, `x̂ = ((x − mu0) − c)·rstd`, never from the
/// mean: `mu0 + c` rounds back to a float with the same half-ulp error when `|c|` is
/// below an ulp of `|mu0|`, exactly the case that matters (this is why folding `c` into
/// the mean did not fix O3). `x − mu0` is exact there (Sterbenz), so `Σ x̂` is then
/// zero up to the rounding of `x̂` itself.
#[inline(always)]
fn recentre<T: Real>(ds: T, ss: T, n: T) -> (T, T) {
    let c = ds / n;
    let ss = ss - ds * c;
    (c, if ss > T::ZERO { ss } else { T::ZERO })
}

/// `(ds, ss)` plus the residues `d = v − mu0` of `x` and their squares, added one value
/// at a time in order (the scalar pass, and the SIMD passes' tails).
#[inline(always)]
fn add_residues<T: Real>(x: &[T], mu0: T, (mut ds, mut ss): (T, T)) -> (T, T) {
    for &v in x {
        let d = v - mu0;
        ds += d;
        ss += d * d;
    }
    (ds, ss)
}

/// Sum of a row (8 partial sums, then a fixed-order reduction).
#[inline(always)]
fn row_sum<S: Simd>(s: S, x: &[f32]) -> f32 {
    let mut acc = s.zero();
    for xi in x.chunks(LANES) {
        acc = s.add(acc, s.load_any(xi));
    }
    s.reduce_add(acc)
}

/// A row's normalisation: `x̂ = ((x − mu0) − c)·rstd` (see [`recentre`] for why the
/// mean is kept in two parts). Shared by every kernel that normalises rows.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RowStats<T> {
    /// The rounded mean `Σx/n`.
    pub(crate) mu0: T,
    /// Its correction, the residues' mean `Σ(x − mu0)/n`.
    pub(crate) c: T,
    /// `1/√(var + eps)`, the variance biased (PyTorch's).
    pub(crate) rstd: T,
}

/// [`RowStats`] of a non-empty row in scalar code: the mean, then the residues' sum
/// and sum of squares in a second pass.
#[inline(always)]
pub(crate) fn row_stats_ref<T: Real>(x: &[T], eps: T) -> RowStats<T> {
    let n = T::from_usize(x.len());
    let mut s = T::ZERO;
    for &v in x {
        s += v;
    }
    let mu0 = s / n;
    let (ds, ss) = add_residues(x, mu0, (T::ZERO, T::ZERO));
    let (c, ss) = recentre(ds, ss, n);
    RowStats {
        mu0,
        c,
        rstd: T::ONE / (ss / n + eps).sqrt(),
    }
}

/// [`row_stats_ref`] vectorised: the same two passes, each with 8 partial sums.
#[inline(always)]
pub(crate) fn row_stats<S: Simd>(s: S, x: &[f32], eps: f32) -> RowStats<f32> {
    let n = x.len() as f32;
    let mu0 = row_sum(s, x) / n;
    let vmu0 = s.splat(mu0);
    let (mut dacc, mut acc) = (s.zero(), s.zero());
    let mut xs = x.chunks_exact(LANES);
    for xi in &mut xs {
        let d = s.sub(s.load(xi), vmu0);
        dacc = s.add(dacc, d);
        acc = s.fma(d, d, acc);
    }
    // The tail in scalar code: zero-padded lanes would add mu0 and mu0² each.
    let sums = (s.reduce_add(dacc), s.reduce_add(acc));
    let (ds, ss) = add_residues(xs.remainder(), mu0, sums);
    let (c, ss) = recentre(ds, ss, n);
    RowStats {
        mu0,
        c,
        rstd: 1.0 / libm::sqrtf(ss / n + eps),
    }
}

/// [`row_stats`] of the 8 rows of `cols` values in `x`, with the same operations in
/// the same order (so the same bits), but the rows' horizontal sums, means and `1/√`
/// taken for all 8 at once ([`Simd::reduce_add_8`]): on rows of 32 or 64 values those
/// per-row reductions and the scalar `1/√` chain were most of a LayerNorm's time.
#[inline(always)]
pub(crate) fn row_stats_8<S: Simd>(s: S, x: &[f32], cols: usize, eps: f32) -> [RowStats<f32>; 8] {
    let n = s.splat(cols as f32);
    let row = |r: usize| &x[r * cols..(r + 1) * cols];
    let mut acc = [s.zero(); 8];
    for (r, a) in acc.iter_mut().enumerate() {
        for xi in row(r).chunks(LANES) {
            *a = s.add(*a, s.load_any(xi));
        }
    }
    let mut mu0 = [0.0f32; 8];
    s.store(&mut mu0, s.div(s.reduce_add_8(acc), n));
    let (mut dacc, mut acc) = ([s.zero(); 8], [s.zero(); 8]);
    for r in 0..8 {
        let vmu0 = s.splat(mu0[r]);
        for xi in row(r).chunks_exact(LANES) {
            let d = s.sub(s.load(xi), vmu0);
            dacc[r] = s.add(dacc[r], d);
            acc[r] = s.fma(d, d, acc[r]);
        }
    }
    let (mut ds, mut ss) = ([0.0f32; 8], [0.0f32; 8]);
    s.store(&mut ds, s.reduce_add_8(dacc));
    s.store(&mut ss, s.reduce_add_8(acc));
    for r in 0..8 {
        // The tails in scalar code, as in `row_stats`.
        let tail = row(r).chunks_exact(LANES).remainder();
        (ds[r], ss[r]) = add_residues(tail, mu0[r], (ds[r], ss[r]));
    }
    // `recentre` and `1/√(ss/n + eps)`, 8 rows at once; a NaN sum of squares gives 0
    // as there (`0 < NaN` is false).
    let (ds, ss) = (s.load(&ds), s.load(&ss));
    let c = s.div(ds, n);
    let centred = s.sub(ss, s.mul(ds, c));
    let centred = s.select(s.lt(s.zero(), centred), centred, s.zero());
    let rstd = s.div(s.splat(1.0), s.sqrt(s.add(s.div(centred, n), s.splat(eps))));
    let (mut cs, mut rs) = ([0.0f32; 8], [0.0f32; 8]);
    s.store(&mut cs, c);
    s.store(&mut rs, rstd);
    core::array::from_fn(|r| RowStats {
        mu0: mu0[r],
        c: cs[r],
        rstd: rs[r],
    })
}

/// The statistics of the rows of `x` (rows of `cols > 0` values) from row `r0` on,
/// into `stats`: 8 rows at once ([`row_stats_8`]) while 8 remain, else the next row
/// alone ([`row_stats`]). Returns how many rows it did. (A loop over this, not a
/// callback: a closure's body would not be compiled for the dispatched instruction
/// set, and every SIMD operation in it would become a call.)
#[inline(always)]
pub(crate) fn next_row_stats<S: Simd>(
    s: S,
    x: &[f32],
    cols: usize,
    eps: f32,
    r0: usize,
    stats: &mut [RowStats<f32>; 8],
) -> usize {
    let rest = &x[r0 * cols..];
    if rest.len() >= 8 * cols {
        *stats = row_stats_8(s, &rest[..8 * cols], cols, eps);
        8
    } else {
        stats[0] = row_stats(s, &rest[..cols], eps);
        1
    }
}

/// Backward of [`layer_norm_rows`] without its affine part: given `xhat = (x − mean)·rstd`
/// and `g = ∂L/∂xhat`, writes `∂L/∂x = rstd · (g − mean(g) − xhat · mean(g · xhat))`.
///
/// # Panics
/// If the lengths do not fit.
pub fn layer_norm_backward_rows<T: Real>(xhat: &[T], g: &[T], rstd: &[T], dx: &mut [T]) {
    if let Some(call) = LayerNormBackwardArgs::new(xhat, g, rstd, dx) {
        T::run_kernel::<LayerNormBackwardKernel>(call)
    }
}

/// [`layer_norm_backward_rows`] for `f32` on a given [`Path`] (tests, benchmarks).
///
/// # Panics
/// As [`layer_norm_backward_rows`], and if `path` is not available here (unless
/// `rstd` is empty).
pub fn layer_norm_backward_rows_with(
    path: Path,
    xhat: &[f32],
    g: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
) {
    if let Some(call) = LayerNormBackwardArgs::new(xhat, g, rstd, dx) {
        dispatch::run::<LayerNormBackwardKernel>(path, call)
    }
}

/// The arguments of one [`layer_norm_backward_rows`] call: lengths checked, `rstd`
/// not empty.
pub(crate) struct LayerNormBackwardArgs<'a, T> {
    xhat: &'a [T],
    g: &'a [T],
    rstd: &'a [T],
    dx: &'a mut [T],
}

impl<'a, T> LayerNormBackwardArgs<'a, T> {
    /// Checks the lengths; `None` when there is nothing to compute (no row).
    fn new(xhat: &'a [T], g: &'a [T], rstd: &'a [T], dx: &'a mut [T]) -> Option<Self> {
        assert_eq!(
            xhat.len(),
            g.len(),
            "layer_norm_backward_rows: xhat and g differ in length"
        );
        assert_eq!(
            xhat.len(),
            dx.len(),
            "layer_norm_backward_rows: xhat and dx differ in length"
        );
        (!rstd.is_empty()).then_some(LayerNormBackwardArgs { xhat, g, rstd, dx })
    }
}

/// The layer norm backward kernel (see [`crate::dispatch`]).
pub(crate) struct LayerNormBackwardKernel;

impl Kernel for LayerNormBackwardKernel {
    type Args<'a, T: Real> = LayerNormBackwardArgs<'a, T>;
    type Output = ();

    /// Both means in one pass per row, then `dx`.
    fn reference<T: Real>(call: LayerNormBackwardArgs<'_, T>) {
        let LayerNormBackwardArgs { xhat, g, rstd, dx } = call;
        let cols = xhat.len() / rstd.len();
        if cols == 0 {
            return;
        }
        let n = T::from_usize(cols);
        for (r, ((xr, gr), dr)) in xhat
            .chunks_exact(cols)
            .zip(g.chunks_exact(cols))
            .zip(dx.chunks_exact_mut(cols))
            .enumerate()
        {
            let mut sg = T::ZERO;
            let mut sgx = T::ZERO;
            for (&xh, &gi) in xr.iter().zip(gr) {
                sg += gi;
                sgx += gi * xh;
            }
            let (mg, mgx) = (sg / n, sgx / n);
            for ((d, &xh), &gi) in dr.iter_mut().zip(xr).zip(gr) {
                *d = rstd[r] * (gi - mg - xh * mgx);
            }
        }
    }

    /// The reference's two passes, vectorised.
    #[inline(always)]
    fn run<S: Simd>(s: S, call: LayerNormBackwardArgs<'_, f32>) {
        let LayerNormBackwardArgs { xhat, g, rstd, dx } = call;
        let cols = xhat.len() / rstd.len();
        if cols == 0 {
            return;
        }
        let n = cols as f32;
        let rows = xhat.chunks_exact(cols).zip(g.chunks_exact(cols));
        for ((xr, gr), (dr, &rs)) in rows.zip(dx.chunks_exact_mut(cols).zip(rstd)) {
            let (mut sg, mut sgx) = (s.zero(), s.zero());
            for (xi, gi) in xr.chunks(LANES).zip(gr.chunks(LANES)) {
                let gv = s.load_any(gi);
                sg = s.add(sg, gv);
                sgx = s.fma(gv, s.load_any(xi), sgx);
            }
            let mg = s.splat(s.reduce_add(sg) / n);
            let mgx = s.splat(s.reduce_add(sgx) / n);
            let vrs = s.splat(rs);
            for ((xi, gi), di) in xr
                .chunks(LANES)
                .zip(gr.chunks(LANES))
                .zip(dr.chunks_mut(LANES))
            {
                let t = s.sub(s.sub(s.load_any(gi), mg), s.mul(s.load_any(xi), mgx));
                s.store_any(di, s.mul(vrs, t));
            }
        }
    }
}

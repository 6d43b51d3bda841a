//! One residual block's activation, forward, row by row:
//! `z = tanh(LayerNorm(p)·γ + β) + skip`, keeping what the backward pass needs.
//!
//! This is the stage between two linears of a ResNet-style potential (PyG's
//! `ResNetPotential`: `Linear → LayerNorm → tanh`, plus a skip connection). As
//! separate passes it reads and writes every row four times (layer norm, affine part,
//! tanh, skip add); here each row is read once for its statistics and once more to
//! write `x̂`, `t` and `z`, while it is still in L1. Small blocks of rows then pay one
//! kernel call per stage instead of four.
//!
//! # Error bound (`f32` SIMD paths against the scalar reference)
//!
//! The statistics are [`super::layer_norm`]'s, summed in another order: with
//! `τ = (2·cols + 16)·ε` and `m` the row's mean magnitude, `|Δx̂| ≤ τ·(1 + |x̂| +
//! m·rstd)`. The affine part adds `|γ|·|Δx̂| + τ·|β|` to `u = γ·x̂ + β`; `tanh` is within
//! 1.5 ulp (SIMD) and 2.03 ulp (the reference's `libm`), so
//! `|Δt| ≤ (1 − t²)·|Δu| + 4ε·|t|`, and `|Δz| ≤ |Δt| + ε·|z|`. The kernel tests check
//! exactly this bound on every path.

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::{LANES, Simd, math};

use super::layer_norm::{RowStats, next_row_stats, row_stats_ref};

/// A residual input added to every output row: row `r` is
/// `values[r·stride .. r·stride + cols]` (a column range of a wider matrix; `stride = 0`
/// adds the same row to every row).
#[derive(Clone, Copy, Debug)]
pub struct Skip<'a, T> {
    /// The residual values.
    pub values: &'a [T],
    /// Distance between the starts of two consecutive rows.
    pub stride: usize,
}

/// What [`norm_tanh_rows`] writes, `[rows, cols]` except `rstd` (`[rows]`).
#[derive(Debug)]
pub struct NormTanhOut<'a, T> {
    /// `x̂ = (p − mean)·rstd`.
    pub xhat: &'a mut [T],
    /// `1/√(var + eps)` per row.
    pub rstd: &'a mut [T],
    /// `t = tanh(γ·x̂ + β)`.
    pub t: &'a mut [T],
    /// `z = t + skip`.
    pub z: &'a mut [T],
}

/// For every row of `p` (`[rows, cols]`): `x̂ = (p − mean)·rstd`,
/// `t = tanh(γ·x̂ + β)`, `z = t + skip`, PyTorch's LayerNorm (biased variance) with
/// `γ = weight`, `β = bias` (`cols` values each). Replaces `layer_norm_rows` with its
/// affine part, `unary(Tanh)` and the skip's add. See the module documentation for
/// the error bound.
///
/// # Panics
/// If the lengths do not fit.
pub fn norm_tanh_rows<T: Real>(
    p: &[T],
    cols: usize,
    eps: T,
    (weight, bias): (&[T], &[T]),
    skip: Skip<'_, T>,
    out: NormTanhOut<'_, T>,
) {
    if let Some(call) = NormTanhArgs::new(p, cols, eps, (weight, bias), skip, out) {
        T::run_kernel::<NormTanhKernel>(call)
    }
}

/// [`norm_tanh_rows`] for `f32` on a given [`Path`] (tests, benchmarks).
///
/// # Panics
/// As [`norm_tanh_rows`], and if `path` is not available here (unless there is no
/// row or `cols = 0`).
pub fn norm_tanh_rows_with(
    path: Path,
    p: &[f32],
    cols: usize,
    eps: f32,
    (weight, bias): (&[f32], &[f32]),
    skip: Skip<'_, f32>,
    out: NormTanhOut<'_, f32>,
) {
    if let Some(call) = NormTanhArgs::new(p, cols, eps, (weight, bias), skip, out) {
        dispatch::run::<NormTanhKernel>(path, call)
    }
}

/// The arguments of one [`norm_tanh_rows`] call: lengths checked, `cols > 0`, at least
/// one row.
pub(crate) struct NormTanhArgs<'a, T> {
    p: &'a [T],
    cols: usize,
    eps: T,
    weight: &'a [T],
    bias: &'a [T],
    skip: Skip<'a, T>,
    out: NormTanhOut<'a, T>,
}

impl<'a, T> NormTanhArgs<'a, T> {
    /// Checks the lengths; `None` when there is nothing to compute.
    fn new(
        p: &'a [T],
        cols: usize,
        eps: T,
        (weight, bias): (&'a [T], &'a [T]),
        skip: Skip<'a, T>,
        out: NormTanhOut<'a, T>,
    ) -> Option<Self> {
        let rows = out.rstd.len();
        assert_eq!(
            p.len(),
            rows * cols,
            "norm_tanh_rows: p needs rows × cols values (rows = rstd.len())"
        );
        for (name, len) in [
            ("xhat", out.xhat.len()),
            ("t", out.t.len()),
            ("z", out.z.len()),
        ] {
            assert_eq!(
                len,
                p.len(),
                "norm_tanh_rows: {name} differs from p in length"
            );
        }
        assert!(
            weight.len() == cols && bias.len() == cols,
            "norm_tanh_rows: weight/bias need cols values"
        );
        if rows == 0 || cols == 0 {
            return None;
        }
        assert!(
            skip.values.len() >= (rows - 1) * skip.stride + cols,
            "norm_tanh_rows: skip holds fewer than rows rows of cols values at its stride"
        );
        Some(NormTanhArgs {
            p,
            cols,
            eps,
            weight,
            bias,
            skip,
            out,
        })
    }
}

/// The fused LayerNorm → tanh → skip kernel (see [`crate::dispatch`]).
pub(crate) struct NormTanhKernel;

impl Kernel for NormTanhKernel {
    type Args<'a, T: Real> = NormTanhArgs<'a, T>;
    type Output = ();

    /// Per row: the statistics (two passes), then one pass writing `x̂`, `t`, `z`.
    fn reference<T: Real>(call: NormTanhArgs<'_, T>) {
        let NormTanhArgs {
            p,
            cols,
            eps,
            weight,
            bias,
            skip,
            out,
        } = call;
        let rows = p
            .chunks_exact(cols)
            .zip(out.xhat.chunks_exact_mut(cols))
            .zip(out.t.chunks_exact_mut(cols))
            .zip(out.z.chunks_exact_mut(cols))
            .zip(out.rstd.iter_mut());
        for (r, ((((pr, xr), tr), zr), rs_out)) in rows.enumerate() {
            let RowStats { mu0, c, rstd } = row_stats_ref(pr, eps);
            *rs_out = rstd;
            let sr = &skip.values[r * skip.stride..r * skip.stride + cols];
            for k in 0..cols {
                let xh = (pr[k] - mu0 - c) * rstd;
                xr[k] = xh;
                let t = (xh * weight[k] + bias[k]).tanh();
                tr[k] = t;
                zr[k] = t + sr[k];
            }
        }
    }

    /// The reference's passes, vectorised; the last pass 8 columns at a time.
    #[inline(always)]
    fn run<S: Simd>(s: S, call: NormTanhArgs<'_, f32>) {
        let NormTanhArgs {
            p,
            cols,
            eps,
            weight,
            bias,
            skip,
            out,
        } = call;
        let rows = p.len() / cols;
        let mut stats = [RowStats::default(); 8];
        let mut r0 = 0;
        while r0 < rows {
            let done = next_row_stats(s, p, cols, eps, r0, &mut stats);
            for (r, &RowStats { mu0, c, rstd }) in (r0..).zip(&stats[..done]) {
                let at = r * cols..(r + 1) * cols;
                let pr = &p[at.clone()];
                let (xr, tr, zr) = (
                    &mut out.xhat[at.clone()],
                    &mut out.t[at.clone()],
                    &mut out.z[at],
                );
                out.rstd[r] = rstd;
                let (vmu0, vc, vrs) = (s.splat(mu0), s.splat(c), s.splat(rstd));
                let sr = &skip.values[r * skip.stride..r * skip.stride + cols];
                let ins = pr.chunks(LANES).zip(sr.chunks(LANES));
                let params = weight.chunks(LANES).zip(bias.chunks(LANES));
                let outs = xr
                    .chunks_mut(LANES)
                    .zip(tr.chunks_mut(LANES))
                    .zip(zr.chunks_mut(LANES));
                for (((pi, si), (wi, bi)), ((xo, to), zo)) in ins.zip(params).zip(outs) {
                    let xh = s.mul(s.sub(s.sub(s.load_any(pi), vmu0), vc), vrs);
                    s.store_any(xo, xh);
                    let t = math::tanh(s, s.fma(xh, s.load_any(wi), s.load_any(bi)));
                    s.store_any(to, t);
                    s.store_any(zo, s.add(t, s.load_any(si)));
                }
            }
            r0 += done;
        }
    }
}

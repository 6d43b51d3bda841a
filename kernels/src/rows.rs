//! Row-wise kernels over a row-major `[rows, cols]` matrix: softmax, layer norm,
//! row dot products and squared euclidean distances.

mod fast;

use crate::Real;
use crate::dispatch::{self, Path};
use crate::gemm::{GemmShape, gemm};

/// Softmax of every row: `out[r, c] = exp(x[r, c] − max_r) / Σ_c' exp(x[r, c'] − max_r)`.
///
/// # Panics
/// If `x` and `out` differ in length or `cols` does not divide it.
pub fn softmax_rows<T: Real>(x: &[T], cols: usize, out: &mut [T]) {
    assert_eq!(
        x.len(),
        out.len(),
        "softmax_rows: x and out differ in length"
    );
    if x.is_empty() {
        return;
    }
    assert!(
        cols > 0 && x.len().is_multiple_of(cols),
        "softmax_rows: cols does not divide x.len()"
    );
    T::softmax_rows_hook(x, cols, out)
}

/// [`softmax_rows`] for `f32` on a given [`Path`] instead of the dispatched one
/// (tests, benchmarks).
///
/// # Panics
/// As [`softmax_rows`], and if `path` is not available here.
pub fn softmax_rows_with(path: Path, x: &[f32], cols: usize, out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "softmax_rows: x and out differ in length"
    );
    dispatch::assert_available(path);
    if x.is_empty() {
        return;
    }
    assert!(
        cols > 0 && x.len().is_multiple_of(cols),
        "softmax_rows: cols does not divide x.len()"
    );
    fast::softmax_rows_on(path, x, cols, out)
}

/// The `f32` fast path behind [`Real::softmax_rows_hook`].
pub(crate) fn softmax_rows_f32(x: &[f32], cols: usize, out: &mut [f32]) {
    fast::softmax_rows_on(dispatch::active(), x, cols, out)
}

/// [`layer_norm_rows`] for `f32` on a given [`Path`] instead of the dispatched one
/// (tests, benchmarks).
///
/// # Panics
/// As [`layer_norm_rows`], and if `path` is not available here.
pub fn layer_norm_rows_with(
    path: Path,
    x: &[f32],
    cols: usize,
    eps: f32,
    affine: Option<(&[f32], &[f32])>,
    out: &mut [f32],
    stats: (&mut [f32], &mut [f32]),
) {
    dispatch::assert_available(path);
    let (mean, rstd) = stats;
    check_layer_norm(x, cols, affine, out, mean, rstd);
    if cols > 0 {
        let args = fast::LayerNormArgs {
            x,
            cols,
            eps,
            affine,
            out,
            mean,
            rstd,
        };
        fast::layer_norm_rows_on(path, args)
    }
}

/// The `f32` fast path behind [`Real::layer_norm_rows_hook`].
pub(crate) fn layer_norm_rows_f32(
    x: &[f32],
    cols: usize,
    eps: f32,
    affine: Option<(&[f32], &[f32])>,
    out: &mut [f32],
    (mean, rstd): (&mut [f32], &mut [f32]),
) {
    let args = fast::LayerNormArgs {
        x,
        cols,
        eps,
        affine,
        out,
        mean,
        rstd,
    };
    fast::layer_norm_rows_on(dispatch::active(), args)
}

/// [`layer_norm_backward_rows`] for `f32` on a given [`Path`] (tests, benchmarks).
///
/// # Panics
/// As [`layer_norm_backward_rows`], and if `path` is not available here.
pub fn layer_norm_backward_rows_with(
    path: Path,
    xhat: &[f32],
    g: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
) {
    dispatch::assert_available(path);
    check_layer_norm_backward(xhat, g, dx);
    if !rstd.is_empty() {
        fast::layer_norm_backward_rows_on(path, xhat, g, rstd, dx)
    }
}

/// The `f32` fast path behind [`Real::layer_norm_backward_rows_hook`].
pub(crate) fn layer_norm_backward_rows_f32(xhat: &[f32], g: &[f32], rstd: &[f32], dx: &mut [f32]) {
    fast::layer_norm_backward_rows_on(dispatch::active(), xhat, g, rstd, dx)
}

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
    let (mean, rstd) = stats;
    check_layer_norm(x, cols, affine, out, mean, rstd);
    if cols == 0 {
        return;
    }
    T::layer_norm_rows_hook(x, cols, eps, affine, out, (mean, rstd))
}

/// The length checks of [`layer_norm_rows`].
fn check_layer_norm<T: Real>(
    x: &[T],
    cols: usize,
    affine: Option<(&[T], &[T])>,
    out: &[T],
    mean: &[T],
    rstd: &[T],
) {
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
}

/// Backward of [`layer_norm_rows`] without its affine part: given `xhat = (x − mean)·rstd`
/// and `g = ∂L/∂xhat`, writes `∂L/∂x = rstd · (g − mean(g) − xhat · mean(g · xhat))`.
///
/// # Panics
/// If the lengths do not fit.
pub fn layer_norm_backward_rows<T: Real>(xhat: &[T], g: &[T], rstd: &[T], dx: &mut [T]) {
    check_layer_norm_backward(xhat, g, dx);
    if rstd.is_empty() {
        return;
    }
    T::layer_norm_backward_rows_hook(xhat, g, rstd, dx)
}

/// The length checks of [`layer_norm_backward_rows`].
fn check_layer_norm_backward<T: Real>(xhat: &[T], g: &[T], dx: &[T]) {
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
}

/// `out[r] = Σ_c a[r, c] · b[r, c]`.
///
/// # Panics
/// If the lengths do not fit.
pub fn row_dot<T: Real>(a: &[T], b: &[T], cols: usize, out: &mut [T]) {
    assert_eq!(a.len(), b.len(), "row_dot: a and b differ in length");
    assert_eq!(
        a.len(),
        out.len() * cols,
        "row_dot: a does not hold out.len() rows"
    );
    if cols == 0 {
        out.fill(T::ZERO);
        return;
    }
    for ((o, ar), br) in out
        .iter_mut()
        .zip(a.chunks_exact(cols))
        .zip(b.chunks_exact(cols))
    {
        let mut s = T::ZERO;
        for (&x, &y) in ar.iter().zip(br) {
            s += x * y;
        }
        *o = s;
    }
}

/// Squared euclidean distances between the rows of `a [m, k]` and `b [n, k]`:
/// `out[i, j] = max(‖a_i‖² + ‖b_j‖² − 2·a_i·b_j, 0)`, the cross term through the GEMM.
/// `norms` is scratch space of at least `m + n` values (the kernels never allocate).
///
/// # Panics
/// If the lengths do not fit.
pub fn sq_dist<T: Real>(a: &[T], b: &[T], k: usize, out: &mut [T], norms: &mut [T]) {
    let (Some(m), Some(n)) = (a.len().checked_div(k), b.len().checked_div(k)) else {
        // k = 0: every row is the empty vector, all distances are 0.
        out.fill(T::ZERO);
        return;
    };
    assert_eq!(a.len(), m * k, "sq_dist: k does not divide a.len()");
    assert_eq!(b.len(), n * k, "sq_dist: k does not divide b.len()");
    assert_eq!(out.len(), m * n, "sq_dist: out must hold m·n values");
    assert!(norms.len() >= m + n, "sq_dist: norms needs m + n values");
    let (na, nb) = norms.split_at_mut(m);
    row_dot(a, a, k, na);
    row_dot(b, b, k, &mut nb[..n]);
    gemm(
        &GemmShape::with_trans(m, n, k, false, true),
        -T::from_f64(2.0),
        a,
        b,
        T::ZERO,
        out,
    );
    for (i, orow) in out.chunks_exact_mut(n.max(1)).enumerate() {
        for (j, o) in orow.iter_mut().enumerate() {
            let d = *o + na[i] + nb[j];
            *o = if d > T::ZERO || d.is_nan() {
                d
            } else {
                T::ZERO
            };
        }
    }
}

/// Scalar reference implementations of the accelerated row kernels.
pub mod reference {
    use crate::Real;

    /// Row softmax, one row at a time, max-subtracted.
    pub fn softmax_rows<T: Real>(x: &[T], cols: usize, out: &mut [T]) {
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

    /// Layer norm forward, two passes per row (mean, then centred sum of squares).
    /// Lengths already checked by [`super::layer_norm_rows`]; `cols > 0`.
    pub fn layer_norm_rows<T: Real>(
        x: &[T],
        cols: usize,
        eps: T,
        affine: Option<(&[T], &[T])>,
        out: &mut [T],
        stats: (&mut [T], &mut [T]),
    ) {
        let (mean, rstd) = stats;
        let n = T::from_usize(cols);
        for (r, (xrow, orow)) in x
            .chunks_exact(cols)
            .zip(out.chunks_exact_mut(cols))
            .enumerate()
        {
            let mut s = T::ZERO;
            for &v in xrow {
                s += v;
            }
            let mu = s / n;
            let mut ss = T::ZERO;
            for &v in xrow {
                let d = v - mu;
                ss += d * d;
            }
            let rs = T::ONE / (ss / n + eps).sqrt();
            mean[r] = mu;
            rstd[r] = rs;
            match affine {
                Some((w, b)) => {
                    for (((o, &v), &wi), &bi) in orow.iter_mut().zip(xrow).zip(w).zip(b) {
                        *o = (v - mu) * rs * wi + bi;
                    }
                }
                None => {
                    for (o, &v) in orow.iter_mut().zip(xrow) {
                        *o = (v - mu) * rs;
                    }
                }
            }
        }
    }

    /// Layer norm backward (no affine part). Lengths already checked by
    /// [`super::layer_norm_backward_rows`]; `rstd` is not empty.
    pub fn layer_norm_backward_rows<T: Real>(xhat: &[T], g: &[T], rstd: &[T], dx: &mut [T]) {
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
}

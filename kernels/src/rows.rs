//! Row-wise kernels over a row-major `[rows, cols]` matrix: softmax, layer norm,
//! MemPooling's head mix, the fused LayerNorm → tanh stage of a residual block (forward
//! and backward), row dot products and squared euclidean distances.

mod head_mix;
mod layer_norm;
mod norm_tanh;
mod norm_tanh_backward;
mod softmax;

pub use head_mix::{head_mix_softmax_rows, head_mix_softmax_rows_with};

pub use layer_norm::{
    layer_norm_backward_rows, layer_norm_backward_rows_with, layer_norm_rows, layer_norm_rows_with,
};
pub use norm_tanh::{NormTanhOut, Skip, norm_tanh_rows, norm_tanh_rows_with};
pub use norm_tanh_backward::{
    NormTanhSaved, norm_tanh_backward_rows, norm_tanh_backward_rows_with,
};
pub use softmax::{softmax_rows, softmax_rows_with};

use crate::Real;
use crate::gemm::{GemmShape, gemm};

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

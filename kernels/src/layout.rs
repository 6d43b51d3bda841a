//! Kernels that move values without arithmetic: transposes, permutations, and column
//! concatenation, slicing, padding and broadcasting.
//!
//! They are plain loops: the tape's layout ops are memory-bound and rare on the layers'
//! hot paths. Like every kernel, they take shapes from a caller that has validated them.

use crate::Real;
use crate::elementwise::Broadcast;

/// Swaps the last two axes of `batch` row-major `[m, n]` matrices: `out` is
/// `batch × [n, m]`.
///
/// # Panics
/// If `src` or `out` does not hold `batch·m·n` values.
pub fn transpose<T: Real>(src: &[T], batch: usize, m: usize, n: usize, out: &mut [T]) {
    let len = batch * m * n;
    assert!(
        src.len() == len && out.len() == len,
        "transpose: slices must hold batch·m·n values"
    );
    if m == 0 || n == 0 {
        return;
    }
    for (sb, ob) in src.chunks_exact(m * n).zip(out.chunks_exact_mut(m * n)) {
        for (i, row) in sb.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                ob[j * m + i] = v;
            }
        }
    }
}

/// Permutes the axes of a row-major rank-3 array of dimensions `dims`: output axis `i`
/// is input axis `perm[i]` (PyTorch's `permute`).
///
/// # Panics
/// If `perm` is not a permutation of `0, 1, 2` or the slices do not hold
/// `dims[0]·dims[1]·dims[2]` values.
pub fn permute3<T: Real>(src: &[T], dims: [usize; 3], perm: [usize; 3], out: &mut [T]) {
    let len = dims[0] * dims[1] * dims[2];
    assert!(
        src.len() == len && out.len() == len,
        "permute3: slices must hold the product of dims"
    );
    let mut seen = [false; 3];
    for &p in &perm {
        assert!(
            p < 3 && !seen[p],
            "permute3: perm must be a permutation of 0, 1, 2"
        );
        seen[p] = true;
    }
    let strides = [dims[1] * dims[2], dims[2], 1];
    let out_dims = [dims[perm[0]], dims[perm[1]], dims[perm[2]]];
    let in_strides = [strides[perm[0]], strides[perm[1]], strides[perm[2]]];
    let mut o = 0;
    for i in 0..out_dims[0] {
        for j in 0..out_dims[1] {
            let base = i * in_strides[0] + j * in_strides[1];
            for k in 0..out_dims[2] {
                out[o] = src[base + k * in_strides[2]];
                o += 1;
            }
        }
    }
}

/// `out[r] = [a[r], b[r]]` for `rows` rows of widths `ca` and `cb`.
///
/// # Panics
/// If the slices do not hold `rows` rows of their widths.
pub fn concat_cols<T: Real>(a: &[T], ca: usize, b: &[T], cb: usize, rows: usize, out: &mut [T]) {
    let w = ca + cb;
    assert!(
        a.len() == rows * ca && b.len() == rows * cb && out.len() == rows * w,
        "concat_cols: lengths do not fit"
    );
    for r in 0..rows {
        out[r * w..r * w + ca].copy_from_slice(&a[r * ca..(r + 1) * ca]);
        out[r * w + ca..(r + 1) * w].copy_from_slice(&b[r * cb..(r + 1) * cb]);
    }
}

/// Columns `start .. start + width` of each of the `rows` rows of `src` (rows of
/// `cols` values).
///
/// # Panics
/// If the range runs past `cols` or the slices do not hold `rows` rows.
pub fn slice_cols<T: Real>(
    src: &[T],
    rows: usize,
    cols: usize,
    start: usize,
    width: usize,
    out: &mut [T],
) {
    assert!(
        start + width <= cols,
        "slice_cols: columns {start}..{} past {cols}",
        start + width
    );
    assert!(
        src.len() == rows * cols && out.len() == rows * width,
        "slice_cols: lengths do not fit"
    );
    for r in 0..rows {
        out[r * width..(r + 1) * width]
            .copy_from_slice(&src[r * cols + start..r * cols + start + width]);
    }
}

/// Writes each of the `rows` rows of `src` (rows of `width` values) at columns
/// `start ..` of the corresponding row of `out` (rows of `total` values) and zeroes the
/// other columns.
///
/// # Panics
/// If `start + width > total` or the slices do not hold `rows` rows.
pub fn pad_cols<T: Real>(
    src: &[T],
    rows: usize,
    width: usize,
    start: usize,
    total: usize,
    out: &mut [T],
) {
    assert!(
        start + width <= total,
        "pad_cols: columns {start}..{} past {total}",
        start + width
    );
    assert!(
        src.len() == rows * width && out.len() == rows * total,
        "pad_cols: lengths do not fit"
    );
    out.fill(T::ZERO);
    for r in 0..rows {
        out[r * total + start..r * total + start + width]
            .copy_from_slice(&src[r * width..(r + 1) * width]);
    }
}

/// Broadcasts `src` over a row-major `out` of `rows × cols`: `src` holds one value
/// (`Scalar`), one value per column (`Row`), one value per row (`Col`), or as many as
/// `out` (`Same`).
///
/// # Panics
/// If `out` does not hold `rows·cols` values or `src` the number `bcast` needs.
pub fn expand<T: Real>(src: &[T], bcast: Broadcast, rows: usize, cols: usize, out: &mut [T]) {
    assert_eq!(
        out.len(),
        rows * cols,
        "expand: out must hold rows·cols values"
    );
    assert_eq!(
        src.len(),
        bcast.b_len(rows, cols),
        "expand: src has the wrong length"
    );
    if out.is_empty() {
        return;
    }
    // Long calls split over the rayon pool (`crate::parallel`), at row boundaries
    // when `src` goes by rows.
    let unit = match bcast {
        Broadcast::Same | Broadcast::Scalar => 1,
        Broadcast::Row | Broadcast::Col => cols,
    };
    crate::parallel::for_each_part(out, unit, |start, out| match bcast {
        Broadcast::Same => out.copy_from_slice(&src[start..start + out.len()]),
        Broadcast::Scalar => out.fill(src[0]),
        Broadcast::Row => {
            for row in out.chunks_exact_mut(cols) {
                row.copy_from_slice(src);
            }
        }
        Broadcast::Col => {
            for (row, &v) in out.chunks_exact_mut(cols).zip(&src[start / cols..]) {
                row.fill(v);
            }
        }
    });
}

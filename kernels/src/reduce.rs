//! Reductions over a row-major `[rows, cols]` matrix.

use crate::Real;

/// Values per partial sum of a long [`sum_all`].
const SUM_BLOCK: usize = 1 << 16;

/// Sum of all values. Accumulates in blocks of 8 lanes to keep rounding error low.
///
/// From [`crate::parallel::PARALLEL_MIN_VALUES`] values on, the sum is taken in
/// blocks of 65 536 values whose partial sums are added in order: the blocks run on
/// the rayon pool's threads, and the result has the same bits on any number of
/// threads (the blocks do not depend on it).
pub fn sum_all<T: Real>(x: &[T]) -> T {
    if x.len() < crate::parallel::PARALLEL_MIN_VALUES {
        return sum_block(x);
    }
    crate::parallel::sum_of_blocks(x, SUM_BLOCK, sum_block)
}

/// [`sum_all`] of one block: 8 lanes.
fn sum_block<T: Real>(x: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let mut tail = T::ZERO;
    for &v in chunks.remainder() {
        tail += v;
    }
    let (a, b) = lanes.split_at(4);
    let mut s = T::ZERO;
    for i in 0..4 {
        s += a[i] + b[i];
    }
    s + tail
}

/// `out[r] = Σ_c x[r, c]`; `out.len()` is the number of rows.
///
/// # Panics
/// If `x.len() != out.len() · cols`.
pub fn sum_rows<T: Real>(x: &[T], cols: usize, out: &mut [T]) {
    assert_eq!(
        x.len(),
        out.len() * cols,
        "sum_rows: x does not hold out.len() rows of cols"
    );
    if cols == 0 {
        out.fill(T::ZERO);
        return;
    }
    for (o, row) in out.iter_mut().zip(x.chunks_exact(cols)) {
        *o = sum_all(row);
    }
}

/// `out[c] = Σ_r x[r, c]`; `out.len()` is `cols`.
///
/// # Panics
/// If `out.len()` does not divide `x.len()`.
pub fn sum_cols<T: Real>(x: &[T], out: &mut [T]) {
    out.fill(T::ZERO);
    let cols = out.len();
    if cols == 0 {
        assert!(x.is_empty(), "sum_cols: zero columns but x is not empty");
        return;
    }
    assert_eq!(
        x.len() % cols,
        0,
        "sum_cols: out.len() does not divide x.len()"
    );
    for row in x.chunks_exact(cols) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

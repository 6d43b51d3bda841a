//! Row gather and segmented reductions: by CSR `ptr` and by an unsorted `index`.
//!
//! Indices are `usize` and already validated by the caller (the core checks every
//! index against its bound and returns a typed error before calling a kernel).

use crate::Real;

/// `out[i, :] = x[index[i], :]`.
///
/// # Panics
/// If an index is out of range or the lengths do not fit.
pub fn gather_rows<T: Real>(x: &[T], cols: usize, index: &[usize], out: &mut [T]) {
    assert_eq!(
        out.len(),
        index.len() * cols,
        "gather_rows: out does not hold index.len() rows"
    );
    if cols == 0 {
        return;
    }
    for (orow, &i) in out.chunks_exact_mut(cols).zip(index) {
        orow.copy_from_slice(&x[i * cols..(i + 1) * cols]);
    }
}

/// `out[index[i], :] += x[i, :]` (scatter-add; `out` is not cleared first).
///
/// # Panics
/// If an index is out of range or the lengths do not fit.
pub fn scatter_add_rows<T: Real>(x: &[T], cols: usize, index: &[usize], out: &mut [T]) {
    assert_eq!(
        x.len(),
        index.len() * cols,
        "scatter_add_rows: x does not hold index.len() rows"
    );
    if cols == 0 {
        return;
    }
    for (xrow, &i) in x.chunks_exact(cols).zip(index) {
        for (o, &v) in out[i * cols..(i + 1) * cols].iter_mut().zip(xrow) {
            *o += v;
        }
    }
}

/// `out[s, :] = Σ_{i ∈ ptr[s]..ptr[s+1]} x[i, :]` over CSR segments; `out` has
/// `ptr.len() − 1` rows and is overwritten (empty segments give zero rows).
///
/// # Panics
/// If `ptr` is empty, decreasing, or past the end of `x`.
pub fn segment_sum_ptr<T: Real>(x: &[T], cols: usize, ptr: &[usize], out: &mut [T]) {
    assert!(!ptr.is_empty(), "segment_sum_ptr: ptr is empty");
    assert_eq!(
        out.len(),
        (ptr.len() - 1) * cols,
        "segment_sum_ptr: out has the wrong length"
    );
    out.fill(T::ZERO);
    if cols == 0 {
        return;
    }
    for (s, orow) in out.chunks_exact_mut(cols).enumerate() {
        for xrow in x[ptr[s] * cols..ptr[s + 1] * cols].chunks_exact(cols) {
            for (o, &v) in orow.iter_mut().zip(xrow) {
                *o += v;
            }
        }
    }
}

/// `out[i, :] = x[s, :]` for every `i ∈ ptr[s]..ptr[s+1]`: the gather that undoes a
/// CSR segment sum (its adjoint).
///
/// # Panics
/// If the lengths do not fit `ptr`.
pub fn expand_ptr<T: Real>(x: &[T], cols: usize, ptr: &[usize], out: &mut [T]) {
    assert!(!ptr.is_empty(), "expand_ptr: ptr is empty");
    assert_eq!(
        x.len(),
        (ptr.len() - 1) * cols,
        "expand_ptr: x has the wrong length"
    );
    if cols == 0 {
        return;
    }
    for (s, xrow) in x.chunks_exact(cols).enumerate() {
        for orow in out[ptr[s] * cols..ptr[s + 1] * cols].chunks_exact_mut(cols) {
            orow.copy_from_slice(xrow);
        }
    }
}

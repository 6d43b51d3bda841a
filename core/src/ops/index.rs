//! Row gather and segmented sums over the first axis: by an unsorted `index`
//! (scatter) and by CSR `ptr` segments.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use readout_kernels::elementwise::{Binary, Broadcast};
use readout_kernels::segment::{expand_ptr, gather_rows, scatter_add_rows, segment_sum_ptr};

use crate::op::Op;
use crate::{CoreError, Real, Shape, Tape, Tensor, Var};

/// Rows (first axis) and the width of one row (all other axes) of a rank ≥ 1 tensor.
fn rows_of(op: &'static str, s: Shape) -> Result<(usize, usize), CoreError> {
    if s.rank() == 0 {
        return Err(CoreError::bad_rank(op, "x", s, "rank 1 to 3"));
    }
    Ok((s.first(), row_width(s)))
}

/// Values in one row along the first axis: the product of the other dimensions.
fn row_width(s: Shape) -> usize {
    s.dims().iter().skip(1).product()
}

/// Checks that every entry of `index` is below `bound`.
///
/// # Errors
/// [`CoreError::IndexOutOfRange`] naming `op`, `arg`, the first bad entry's position
/// and value, and `bound`.
pub fn check_index(
    op: &'static str,
    arg: &'static str,
    index: &[usize],
    bound: usize,
) -> Result<(), CoreError> {
    match index.iter().position(|&i| i >= bound) {
        Some(position) => Err(CoreError::IndexOutOfRange {
            op,
            arg,
            position,
            value: index[position],
            bound,
        }),
        None => Ok(()),
    }
}

/// Checks that `ptr` starts at 0, never decreases and ends at `n`.
///
/// # Errors
/// [`CoreError::BadPtr`] naming `op`, the position and value of the first offending
/// entry, and what is wrong with it (empty, not starting at 0, decreasing, or not
/// ending at `n`).
pub fn check_ptr(op: &'static str, ptr: &[usize], n: usize) -> Result<(), CoreError> {
    let Some(&first) = ptr.first() else {
        return Err(CoreError::BadPtr {
            op,
            position: 0,
            value: 0,
            why: "ptr is empty; it needs at least the entry 0",
        });
    };
    if first != 0 {
        return Err(CoreError::BadPtr {
            op,
            position: 0,
            value: first,
            why: "ptr must start at 0",
        });
    }
    if let Some(w) = ptr.windows(2).position(|w| w[1] < w[0]) {
        return Err(CoreError::BadPtr {
            op,
            position: w + 1,
            value: ptr[w + 1],
            why: "ptr must not decrease",
        });
    }
    let last = ptr[ptr.len() - 1];
    if last != n {
        return Err(CoreError::BadPtr {
            op,
            position: ptr.len() - 1,
            value: last,
            why: "ptr must end at the number of rows of x",
        });
    }
    Ok(())
}

impl<T: Real> Tape<T> {
    /// `out[i] = x[index[i]]` along the first axis.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar, [`CoreError::IndexOutOfRange`] for an entry
    /// not below `x`'s first dimension.
    pub fn gather_rows(&mut self, x: Var, index: &[usize]) -> Result<Var, CoreError> {
        let s = self.check("gather_rows", x)?.dims();
        let (n, _) = rows_of("gather_rows", s)?;
        check_index("gather_rows", "index", index, n)?;
        Ok(self.gather_shared(x, index.into()))
    }

    fn gather_shared(&mut self, x: Var, index: Arc<[usize]>) -> Var {
        let t = self.val(x);
        let s = t.dims();
        let w = row_width(s);
        let shape = s.with_first(index.len());
        let mut out = self.buffer(shape.numel());
        gather_rows(t.data(), w, &index, &mut out);
        self.push(Op::Gather(index), &[x], Tensor::raw(shape, out))
    }

    /// `out[index[i]] += x[i]` along the first axis, into `dim_size` zero rows; the index
    /// need not be sorted (PyTorch's `scatter_add` / PyG's `scatter(reduce='sum')`).
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar, [`CoreError::IndexLength`] when `index` does
    /// not have one entry per row of `x`, [`CoreError::IndexOutOfRange`] for an entry
    /// `≥ dim_size`, [`CoreError::TooLarge`] if `dim_size` rows cannot be allocated.
    pub fn scatter_add(
        &mut self,
        x: Var,
        index: &[usize],
        dim_size: usize,
    ) -> Result<Var, CoreError> {
        let s = self.check("scatter_add", x)?.dims();
        let (n, _) = rows_of("scatter_add", s)?;
        if index.len() != n {
            return Err(CoreError::IndexLength {
                op: "scatter_add",
                arg: "index",
                len: index.len(),
                expected: n,
            });
        }
        check_index("scatter_add", "index", index, dim_size)?;
        crate::tensor::check_alloc::<T>("scatter_add", s.with_first(dim_size))?;
        Ok(self.scatter_shared(x, index.into(), dim_size))
    }

    fn scatter_shared(&mut self, x: Var, index: Arc<[usize]>, dim_size: usize) -> Var {
        let t = self.val(x);
        let s = t.dims();
        let w = row_width(s);
        let shape = s.with_first(dim_size);
        let mut out = self.buffer(shape.numel());
        scatter_add_rows(t.data(), w, &index, &mut out);
        self.push(Op::ScatterAdd(index), &[x], Tensor::raw(shape, out))
    }

    /// Mean of the rows of `x` that `index` sends to each of `dim_size` segments; empty
    /// segments give zero rows (PyG's `scatter(reduce='mean')`).
    ///
    /// # Errors
    /// As [`Tape::scatter_add`].
    pub fn scatter_mean(
        &mut self,
        x: Var,
        index: &[usize],
        dim_size: usize,
    ) -> Result<Var, CoreError> {
        let sum = self.scatter_add(x, index, dim_size)?;
        let mut counts = vec![T::ZERO; dim_size];
        for &i in index {
            counts[i] += T::ONE;
        }
        self.scale_rows_by_inverse(sum, counts)
    }

    /// Sum of the rows of `x` over CSR segments `ptr[s] .. ptr[s+1]`: `ptr.len() − 1`
    /// output rows, zero for empty segments.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar, [`CoreError::BadPtr`] unless `ptr` starts
    /// at 0, never decreases and ends at `x`'s row count.
    pub fn segment_sum(&mut self, x: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        let s = self.check("segment_sum", x)?.dims();
        let (n, _) = rows_of("segment_sum", s)?;
        check_ptr("segment_sum", ptr, n)?;
        Ok(self.segment_shared(x, ptr.into()))
    }

    fn segment_shared(&mut self, x: Var, ptr: Arc<[usize]>) -> Var {
        let t = self.val(x);
        let s = t.dims();
        let w = row_width(s);
        let shape = s.with_first(ptr.len() - 1);
        let mut out = self.buffer(shape.numel());
        segment_sum_ptr(t.data(), w, &ptr, &mut out);
        self.push(Op::SegmentSum(ptr), &[x], Tensor::raw(shape, out))
    }

    /// Mean of the rows of `x` over CSR segments (zero rows for empty segments).
    ///
    /// # Errors
    /// As [`Tape::segment_sum`].
    pub fn segment_mean(&mut self, x: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        let sum = self.segment_sum(x, ptr)?;
        let counts: Vec<T> = ptr.windows(2).map(|w| T::from_usize(w[1] - w[0])).collect();
        self.scale_rows_by_inverse(sum, counts)
    }

    /// Repeats row `s` of `x` over CSR segment `s`: `out[i] = x[s]` for every
    /// `i ∈ ptr[s] .. ptr[s+1]` (the CSR form of `gather_rows`, and the adjoint of
    /// [`Tape::segment_sum`]). `x` has `ptr.len() − 1` rows; the output has `ptr`'s last
    /// entry rows.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar, [`CoreError::BadPtr`] unless `ptr` starts at
    /// 0 and never decreases, [`CoreError::IndexLength`] unless `x` has one row per
    /// segment, [`CoreError::TooLarge`] if `ptr`'s last entry rows cannot be allocated.
    pub fn repeat_segments(&mut self, x: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        let s = self.check("repeat_segments", x)?.dims();
        rows_of("repeat_segments", s)?;
        let n = ptr.last().copied().unwrap_or(0);
        check_ptr("repeat_segments", ptr, n)?;
        if s.first() != ptr.len() - 1 {
            return Err(CoreError::IndexLength {
                op: "repeat_segments",
                arg: "ptr",
                len: ptr.len(),
                expected: s.first().saturating_add(1),
            });
        }
        crate::tensor::check_alloc::<T>("repeat_segments", s.with_first(n))?;
        Ok(self.expand_ptr_shared(x, ptr.into()))
    }

    /// Repeats row `s` of `x` over CSR segment `s` (the adjoint of `segment_sum`).
    fn expand_ptr_shared(&mut self, x: Var, ptr: Arc<[usize]>) -> Var {
        let t = self.val(x);
        let s = t.dims();
        let w = row_width(s);
        let n = ptr[ptr.len() - 1];
        let shape = s.with_first(n);
        let mut out = self.buffer(shape.numel());
        expand_ptr(t.data(), w, &ptr, &mut out);
        self.push(Op::ExpandPtr(ptr), &[x], Tensor::raw(shape, out))
    }

    /// Divides row `s` of `x` by `counts[s]` (rows with count 0 stay as they are: zero).
    fn scale_rows_by_inverse(&mut self, x: Var, counts: Vec<T>) -> Result<Var, CoreError> {
        let inv: Vec<T> = counts
            .into_iter()
            .map(|c| if c > T::ZERO { T::ONE / c } else { T::ZERO })
            .collect();
        let s = self.val(x).dims();
        let inv = self.constant(Tensor::raw(Shape::d1(inv.len()), inv));
        if s.rank() == 1 {
            return Ok(self.binary_bc(Binary::Mul, Broadcast::Same, x, inv));
        }
        // View as [segments, width] so the inverse counts broadcast as a column.
        let w = row_width(s);
        let flat = self.reshape(x, &[s.first(), w])?;
        let scaled = self.binary_bc(Binary::Mul, Broadcast::Col, flat, inv);
        self.reshape(scaled, s.dims())
    }
}

/// Backward of the index ops: each one's adjoint.
pub(crate) fn backward<T: Real>(
    tape: &mut Tape<T>,
    op: &Op<T>,
    x: Var,
    g: Var,
) -> Result<Var, CoreError> {
    let n = tape.val(x).dims().first();
    Ok(match op {
        Op::Gather(index) => tape.scatter_shared(g, index.clone(), n),
        Op::ScatterAdd(index) => tape.gather_shared(g, index.clone()),
        Op::SegmentSum(ptr) => tape.expand_ptr_shared(g, ptr.clone()),
        Op::ExpandPtr(ptr) => tape.segment_shared(g, ptr.clone()),
        _ => unreachable!("index::backward called for {op:?}"),
    })
}

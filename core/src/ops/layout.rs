//! Ops that move values without arithmetic: reshape, transpose, permute, and
//! column concatenation / slicing / padding.

use readout_kernels::layout;

use crate::op::{Contributions, Op};
use crate::tape::Parents;
use crate::{CoreError, Real, Shape, Tape, Tensor, Var};

impl<T: Real> Tape<T> {
    /// The same values under another shape with as many elements.
    ///
    /// # Errors
    /// [`CoreError::RankTooHigh`] beyond rank 3, [`CoreError::DataLength`] when the
    /// element counts differ.
    pub fn reshape(&mut self, x: Var, dims: &[usize]) -> Result<Var, CoreError> {
        let t = self.check("reshape", x)?;
        let shape = Shape::new(dims).ok_or(CoreError::RankTooHigh {
            op: "reshape",
            rank: dims.len(),
        })?;
        if shape.numel() != t.numel() {
            return Err(CoreError::DataLength {
                op: "reshape",
                shape,
                len: t.numel(),
            });
        }
        if shape == t.dims() {
            return Ok(x);
        }
        let data = t.data().to_vec();
        Ok(self.push(Op::Reshape, &[x], Tensor::raw(shape, data)))
    }

    /// Swaps the last two axes: `[M, N] → [N, M]`, `[B, M, N] → [B, N, M]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] below rank 2.
    pub fn transpose(&mut self, x: Var) -> Result<Var, CoreError> {
        let t = self.check("transpose", x)?;
        let s = t.dims();
        let (b, m, n) = match *s.dims() {
            [m, n] => (1, m, n),
            [b, m, n] => (b, m, n),
            _ => {
                return Err(CoreError::bad_rank("transpose", "x", s, "rank 2 or 3"));
            }
        };
        let mut out = self.buffer_overwritten(t.numel());
        layout::transpose(t.data(), b, m, n, &mut out);
        let shape = if s.rank() == 3 {
            Shape::d3(b, n, m)
        } else {
            Shape::d2(n, m)
        };
        Ok(self.push(Op::Transpose, &[x], Tensor::raw(shape, out)))
    }

    /// Permutes the axes of a rank-3 tensor: output axis `i` is input axis `perm[i]`
    /// (PyTorch's `x.permute(perm)`).
    ///
    /// # Errors
    /// [`CoreError::BadRank`] unless `x` has rank 3, [`CoreError::InvalidValue`] if
    /// `perm` is not a permutation of `0, 1, 2`.
    pub fn permute(&mut self, x: Var, perm: [usize; 3]) -> Result<Var, CoreError> {
        let t = self.check("permute", x)?;
        let s = t.dims();
        let &[d0, d1, d2] = s.dims() else {
            return Err(CoreError::bad_rank("permute", "x", s, "rank 3"));
        };
        let mut seen = [false; 3];
        for &p in &perm {
            if p > 2 || seen[p] {
                return Err(CoreError::InvalidValue {
                    op: "permute",
                    arg: "perm",
                    value: p as f64,
                    why: "must be a permutation of 0, 1, 2",
                });
            }
            seen[p] = true;
        }
        let dims = [d0, d1, d2];
        let out_dims = [dims[perm[0]], dims[perm[1]], dims[perm[2]]];
        let mut out = self.buffer_overwritten(t.numel());
        layout::permute3(t.data(), dims, perm, &mut out);
        let shape = Shape::d3(out_dims[0], out_dims[1], out_dims[2]);
        Ok(self.push(Op::Permute(perm), &[x], Tensor::raw(shape, out)))
    }

    /// Columns of `a` followed by the columns of `b`: `[R, Ca], [R, Cb] → [R, Ca + Cb]`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] unless both are rank 2, [`CoreError::ShapeMismatch`] if
    /// their row counts differ.
    pub fn concat_cols(&mut self, a: Var, b: Var) -> Result<Var, CoreError> {
        let sa = self.check("concat_cols", a)?.dims();
        let sb = self.check("concat_cols", b)?.dims();
        for (arg, s) in [("a", sa), ("b", sb)] {
            if s.rank() != 2 {
                return Err(CoreError::bad_rank("concat_cols", arg, s, "rank 2"));
            }
        }
        if sa.rows() != sb.rows() {
            return Err(CoreError::ShapeMismatch {
                op: "concat_cols",
                arg: "b",
                got: sb,
                other: sa,
                why: "row counts differ",
            });
        }
        let (r, ca, cb) = (sa.rows(), sa.cols(), sb.cols());
        let (va, vb) = (self.val(a).data(), self.val(b).data());
        let mut out = self.buffer(r * (ca + cb));
        layout::concat_cols(va, ca, vb, cb, r, &mut out);
        Ok(self.push(
            Op::ConcatCols,
            &[a, b],
            Tensor::raw(Shape::d2(r, ca + cb), out),
        ))
    }

    /// Columns `start .. start + width` of a rank-2 `x`.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] unless `x` is rank 2, [`CoreError::InvalidValue`] if the
    /// range runs past the last column.
    pub fn slice_cols(&mut self, x: Var, start: usize, width: usize) -> Result<Var, CoreError> {
        let t = self.check("slice_cols", x)?;
        let s = t.dims();
        if s.rank() != 2 {
            return Err(CoreError::bad_rank("slice_cols", "x", s, "rank 2"));
        }
        let (r, c) = (s.rows(), s.cols());
        if start.checked_add(width).is_none_or(|end| end > c) {
            return Err(CoreError::InvalidValue {
                op: "slice_cols",
                arg: "start + width",
                value: start as f64 + width as f64,
                why: "must not exceed the column count",
            });
        }
        let mut out = self.buffer(r * width);
        layout::slice_cols(t.data(), r, c, start, width, &mut out);
        Ok(self.push(
            Op::SliceCols { start },
            &[x],
            Tensor::raw(Shape::d2(r, width), out),
        ))
    }

    /// Places a rank-2 `x` at columns `start ..` of a zero matrix with `total` columns
    /// (the adjoint of [`Tape::slice_cols`]); the caller guarantees it fits.
    fn pad_cols(&mut self, x: Var, start: usize, total: usize) -> Var {
        let t = self.val(x);
        let (r, w) = (t.dims().rows(), t.dims().cols());
        let mut out = self.buffer(r * total);
        layout::pad_cols(t.data(), r, w, start, total, &mut out);
        self.push(
            Op::PadCols { start },
            &[x],
            Tensor::raw(Shape::d2(r, total), out),
        )
    }
}

/// Backward of the one-parent layout ops.
pub(crate) fn unary_backward<T: Real>(
    tape: &mut Tape<T>,
    op: &Op<T>,
    x: Var,
    g: Var,
) -> Result<Var, CoreError> {
    let xs = tape.val(x).dims();
    match op {
        Op::Reshape => tape.reshape(g, xs.dims()),
        Op::Transpose => tape.transpose(g),
        Op::Permute(p) => {
            let mut inv = [0; 3];
            for (i, &pi) in p.iter().enumerate() {
                inv[pi] = i;
            }
            tape.permute(g, inv)
        }
        Op::SliceCols { start } => Ok(tape.pad_cols(g, *start, xs.cols())),
        Op::PadCols { start } => tape.slice_cols(g, *start, xs.cols()),
        _ => unreachable!("layout::unary_backward called for {op:?}"),
    }
}

/// Backward of `concat_cols`: each parent gets its slice of the gradient.
pub(crate) fn concat_backward<T: Real>(
    tape: &mut Tape<T>,
    ps: &Parents,
    g: Var,
) -> Result<Contributions, CoreError> {
    let ca = tape.val(ps.at(0)).dims().cols();
    let cb = tape.val(ps.at(1)).dims().cols();
    let da = tape.slice_cols(g, 0, ca)?;
    let db = tape.slice_cols(g, ca, cb)?;
    Ok([Some(da), Some(db), None])
}

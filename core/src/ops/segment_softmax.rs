//! Softmax over the rows of each CSR segment, per column (PyG's
//! `torch_geometric.utils.softmax` on sorted segments; the weights of attention
//! pooling).

use crate::ops::index::check_ptr;
use crate::{CoreError, Real, Tape, Tensor, Var};

impl<T: Real> Tape<T> {
    /// `out[i, c] = exp(x[i, c]) / Σ_{j in i's segment} exp(x[j, c])` for CSR segments
    /// `ptr[s] .. ptr[s+1]` of the first axis: the rows of every segment are a
    /// probability distribution in every column. Empty segments hold no rows and need
    /// nothing.
    ///
    /// Composed of tape ops (subtract, `exp`, [`Tape::segment_sum`],
    /// [`Tape::repeat_segments`], divide), so its backward rule is theirs and it can be
    /// differentiated twice. Each segment's maximum is subtracted first so large
    /// inputs do not overflow; it is taken as a constant, which is exact: the softmax
    /// does not change when a segment's inputs are shifted together, so its gradient
    /// with respect to the shift is zero.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar, [`CoreError::BadPtr`] unless `ptr` starts
    /// at 0, never decreases and ends at `x`'s row count.
    pub fn segment_softmax(&mut self, x: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        let t = self.check("segment_softmax", x)?;
        let s = t.dims();
        if s.rank() == 0 {
            return Err(CoreError::BadRank {
                op: "segment_softmax",
                arg: "x",
                got: s,
                expected: "rank 1 to 3",
            });
        }
        let n = s.first();
        check_ptr("segment_softmax", ptr, n)?;
        let width: usize = s.dims()[1..].iter().product();
        // Every row gets its segment's per-column maximum.
        let data = t.data();
        let mut shift = alloc::vec![T::ZERO; n * width];
        for w in ptr.windows(2) {
            for c in 0..width {
                let mut m: Option<T> = None;
                for r in w[0]..w[1] {
                    let v = data[r * width + c];
                    if m.is_none_or(|b| v > b) {
                        m = Some(v);
                    }
                }
                if let Some(m) = m {
                    for r in w[0]..w[1] {
                        shift[r * width + c] = m;
                    }
                }
            }
        }
        let dims = s.dims().to_vec();
        let flat = self.reshape(x, &[n, width])?;
        let shift = self.constant(Tensor::from_vec(&[n, width], shift)?);
        let z = self.sub(flat, shift)?;
        let e = self.exp(z)?;
        let total = self.segment_sum(e, ptr)?;
        let total = self.repeat_segments(total, ptr)?;
        let p = self.div(e, total)?;
        self.reshape(p, &dims)
    }
}

//! Maximum over CSR segments of the first axis, per column (PyG's
//! `scatter(reduce='max')` on sorted segments; DeepSets' max pooling).

use alloc::vec;
use alloc::vec::Vec;

use crate::ops::index::check_ptr;
use crate::{CoreError, Real, Tape, Tensor, Var};

impl<T: Real> Tape<T> {
    /// Maximum of the rows of `x` over CSR segments `ptr[s] .. ptr[s+1]`, separately
    /// for every column: `ptr.len() − 1` output rows, zero rows for empty segments (as
    /// PyG fills them). Ties go to the first row holding the maximum.
    ///
    /// The op is recorded as a gather of the winning entries, so its backward rule is
    /// the gather's (a scatter-add, written in tape ops): the gradient of an output
    /// entry flows to the one input entry that won, which is the subgradient PyTorch's
    /// `scatter_max` and `segment_max` use. The winners are chosen when the op is
    /// recorded; they are constants of the gradient, so it is exact away from ties.
    ///
    /// # Errors
    /// [`CoreError::BadRank`] for a scalar, [`CoreError::BadPtr`] unless `ptr` starts
    /// at 0, never decreases and ends at `x`'s row count.
    pub fn segment_max(&mut self, x: Var, ptr: &[usize]) -> Result<Var, CoreError> {
        let t = self.check("segment_max", x)?;
        let s = t.dims();
        if s.rank() == 0 {
            return Err(CoreError::BadRank {
                op: "segment_max",
                arg: "x",
                got: s,
                expected: "rank 1 to 3",
            });
        }
        let n = s.first();
        check_ptr("segment_max", ptr, n)?;
        let width: usize = s.dims()[1..].iter().product();
        let segments = ptr.len() - 1;
        let mut out_dims = s.dims().to_vec();
        out_dims[0] = segments;
        if n * width == 0 {
            // Every segment is empty (or rows are empty): the segment sum is the
            // required zeros, and it keeps the output connected to `x`.
            return self.segment_sum(x, ptr);
        }
        // The flat position of each segment's winner, column by column; empty
        // segments borrow entry 0 and are zeroed by the mask below.
        let data = t.data();
        let mut winners = Vec::with_capacity(segments * width);
        let mut keep = vec![T::ONE; segments * width];
        for (seg, w) in ptr.windows(2).enumerate() {
            for c in 0..width {
                let mut best: Option<usize> = None;
                for r in w[0]..w[1] {
                    let i = r * width + c;
                    if best.is_none_or(|b| data[i] > data[b]) {
                        best = Some(i);
                    }
                }
                match best {
                    Some(i) => winners.push(i),
                    None => {
                        winners.push(0);
                        keep[seg * width + c] = T::ZERO;
                    }
                }
            }
        }
        let has_empty = ptr.windows(2).any(|w| w[0] == w[1]);
        let flat = self.reshape(x, &[n * width])?;
        let picked = self.gather_rows(flat, &winners)?;
        let picked = self.reshape(picked, &out_dims)?;
        if has_empty {
            let mask = Tensor::from_vec(&out_dims, keep)?;
            return self.mask_mul(picked, mask);
        }
        Ok(picked)
    }
}

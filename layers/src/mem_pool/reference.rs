//! The reference path: `MemPooling`'s forward on the tape, PyG's equations in PyG's
//! order (squared distances in `torch.cdist`'s matrix form, the Student-t kernel
//! normalised per head, the 1×1 conv over heads, softmax, the mask, `Sᵀ·X`, `lin`),
//! on the padded rows as PyG computes it ([`PoolPath::Dense`](super::PoolPath::Dense))
//! or on the real rows only ([`PoolPath::Ragged`](super::PoolPath::Ragged)). Any order
//! of derivative goes through it; the fused engines are held to it by the tests.

use alloc::vec;
use alloc::vec::Vec;

use readout_core::{Real, Tape, Tensor, Var};

use super::MemPooling;
use super::args::Pooled;
use super::params::MemPoolParams;
use super::validate::Plan;
use crate::error::LayerError;

impl MemPooling {
    /// The soft assignment `softmax(conv(normalised Student-t kernel))` of every row of
    /// `rows [M, F]`: `[M, K]`. Row-wise, so it runs on whichever rows it is given.
    ///
    /// Every op on an `[M, H·K]` tensor costs an allocation and a pass forward and
    /// backward (a reshape too: it copies), so the small `[H·K, ·]` operands take the
    /// rearrangements instead: the `−2` goes on the keys, and the head mix is one
    /// product with `w ⊗ I_K` rather than a transpose of the kernel.
    fn assign<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &MemPoolParams<Var>,
        rows: Var,
    ) -> Result<Var, LayerError> {
        let (h, k, f) = (self.heads, self.num_clusters, self.in_channels);
        let m = tape.value(rows)?.shape()[0];
        let keys = tape.reshape(params.k, &[h * k, f])?;
        // ‖x‖² + ‖k‖² − 2·x·kᵀ, clamped at 0: torch.cdist's matrix form, squared.
        // x·(−2k)ᵀ is exactly −2·(x·kᵀ): scaling by a power of two commutes with rounding.
        let neg2k = tape.scale(keys, T::from_f64(-2.0))?;
        let cross = tape.matmul_with(rows, neg2k, false, true)?;
        let x2 = tape.square(rows)?;
        let x2 = tape.sum_rows(x2)?;
        let x2 = tape.reshape(x2, &[m, 1])?;
        let k2 = tape.square(keys)?;
        let k2 = tape.sum_rows(k2)?;
        let d = tape.add(cross, x2)?;
        let d = tape.add(d, k2)?;
        let d = tape.clamp_min(d, T::ZERO)?;
        // Student-t kernel, normalised over the clusters of each head.
        let q = tape.student_t(d, T::from_f64(self.tau))?;
        let q = tape.reshape(q, &[m * h, k])?;
        let qsum = tape.sum_rows(q)?;
        let qsum = tape.reshape(qsum, &[m * h, 1])?;
        let qn = tape.div(q, qsum)?;
        // 1×1 conv over heads: z[m, j] = Σ_h w_h · qn[m, h, j] = (qn [M, H·K]) · (w ⊗ I_K).
        let qn = tape.reshape(qn, &[m, h * k])?;
        let mix = self.head_mix_matrix(tape, params)?;
        let z = tape.matmul(qn, mix)?;
        Ok(tape.softmax(z)?)
    }

    /// `w ⊗ I_K`, `[H·K, K]`: row `h·K + j` is `w_h` at column `j`. Built on the tape
    /// as `w [H, 1] · vec(I_K) [1, K²]` so that gradients reach `w`.
    fn head_mix_matrix<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &MemPoolParams<Var>,
    ) -> Result<Var, LayerError> {
        let (h, k) = (self.heads, self.num_clusters);
        let w = tape.reshape(params.conv.weight, &[h, 1])?;
        let mut eye = vec![T::ZERO; k * k];
        for j in 0..k {
            eye[j * k + j] = T::ONE;
        }
        let eye = tape.constant(Tensor::from_vec(&[1, k * k], eye)?);
        let mix = tape.matmul(w, eye)?;
        Ok(tape.reshape(mix, &[h * k, k])?)
    }

    /// `lin(SX)` for `SX [B, K, F]`: `[B, K, F']`.
    fn lin<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &MemPoolParams<Var>,
        sx: Var,
        b: usize,
    ) -> Result<Var, LayerError> {
        let (k, f, o) = (self.num_clusters, self.in_channels, self.out_channels);
        let flat = tape.reshape(sx, &[b * k, f])?;
        let y = params.lin.forward(tape, flat)?;
        Ok(tape.reshape(y, &[b, k, o])?)
    }

    /// PyG's computation on the padded `[B·N_max, F]` rows.
    pub(crate) fn dense<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &MemPoolParams<Var>,
        x_rows: Var,
        plan: Plan,
    ) -> Result<Pooled, LayerError> {
        let (b, n, k, f) = (
            plan.batch_size,
            plan.max_nodes,
            self.num_clusters,
            self.in_channels,
        );
        let padded = if plan.dense_input {
            x_rows
        } else {
            // to_dense_batch: real rows into place, zero rows elsewhere.
            let kept = match &plan.kept {
                Some(kept) => tape.gather_rows(x_rows, kept)?,
                None => x_rows,
            };
            tape.scatter_add(kept, &plan.positions, plan.padded_rows())?
        };
        let s_all = self.assign(tape, params, padded)?;
        let mask: Vec<T> = plan
            .mask_values()
            .into_iter()
            .map(|v| if v { T::ONE } else { T::ZERO })
            .collect();
        let mask = Tensor::from_vec(&[plan.padded_rows(), 1], mask)?;
        let s_flat = tape.mask_mul(s_all, mask)?;
        let s = tape.reshape(s_flat, &[b, n, k])?;
        let x3 = tape.reshape(padded, &[b, n, f])?;
        let sx = tape.matmul_with(s, x3, true, false)?;
        let out = self.lin(tape, params, sx, b)?;
        Ok(Pooled {
            out,
            s: Some(s),
            s_rows: None,
            plan,
            num_clusters: k,
            fused: false,
        })
    }

    /// The same result on the real rows only, op by op ([`PoolPath::RaggedTape`]; the
    /// default [`PoolPath::Ragged`] records the fused nodes of `fused::backward`).
    pub(crate) fn ragged<T: Real>(
        &self,
        tape: &mut Tape<T>,
        params: &MemPoolParams<Var>,
        x_rows: Var,
        plan: Plan,
    ) -> Result<Pooled, LayerError> {
        let rows = plan.kept_rows(tape, x_rows)?;
        let s_rows = self.assign(tape, params, rows)?;
        let sx = tape.segment_matmul_tn(s_rows, rows, &plan.ptr)?;
        let out = self.lin(tape, params, sx, plan.batch_size)?;
        Ok(Pooled::ragged(out, s_rows, plan, self.num_clusters, false))
    }
}

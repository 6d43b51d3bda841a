//! `MemPooling.kl_loss` on a tape: on PyG's padded `S [B, N, K]`, and on the real rows
//! `[N_real, K]` of a ragged batch (the padded rows of PyG's sum contribute exactly 0:
//! there `P̃ = S̃ = 1e-15`, so `P̃·(ln P̃ − ln S̃) = 0`).

use alloc::format;
use alloc::vec::Vec;

use readout_core::{Real, Tape, Tensor, Var};

use super::{KL_EPS, MemPooling};
use crate::error::LayerError;

/// `x` where `x ≠ 0`, and `1` where `x = 0`, with no gradient through the replaced
/// entries (PyTorch's `torch.where(x == 0, 1, x)` / `x[x == 0] = 1`). `zero_of` gives
/// the values that decide which entries are replaced (`x` itself, or another tensor of
/// `x`'s shape).
fn ones_where_zero<T: Real>(tape: &mut Tape<T>, x: Var, zero_of: Var) -> Result<Var, LayerError> {
    let decide = tape.value(zero_of)?;
    let shape = decide.shape().to_vec();
    let is_zero: Vec<bool> = decide.data().iter().map(|&v| v == T::ZERO).collect();
    if !is_zero.iter().any(|&z| z) {
        return Ok(x);
    }
    let keep: Vec<T> = is_zero
        .iter()
        .map(|&z| if z { T::ZERO } else { T::ONE })
        .collect();
    let ones: Vec<T> = is_zero
        .iter()
        .map(|&z| if z { T::ONE } else { T::ZERO })
        .collect();
    let kept = tape.mask_mul(x, Tensor::from_vec(&shape, keep)?)?;
    let ones = tape.constant(Tensor::from_vec(&shape, ones)?);
    Ok(tape.add(kept, ones)?)
}

/// `(1/B) Σ P̃ (ln P̃ − ln S̃)` with `P` normalised over the last axis of `p_raw`, for
/// `s` and `p_raw` of the same shape `[.., K]`.
fn divergence<T: Real>(
    tape: &mut Tape<T>,
    s: Var,
    p_raw: Var,
    b: usize,
) -> Result<Var, LayerError> {
    let rows: usize = {
        let sh = tape.value(s)?.shape();
        sh[..sh.len() - 1].iter().product()
    };
    let dims = tape.value(s)?.shape().to_vec();
    // denom = Σ_k P, set to 1 where Σ_k S = 0.
    let denom = tape.sum_rows(p_raw)?;
    let s_sum = tape.sum_rows(s)?;
    let denom = ones_where_zero(tape, denom, s_sum)?;
    let flat_p = tape.reshape(p_raw, &[rows, dims[dims.len() - 1]])?;
    let denom = tape.reshape(denom, &[rows, 1])?;
    let p = tape.div(flat_p, denom)?;
    let p = tape.reshape(p, &dims)?;
    let eps = T::from_f64(KL_EPS);
    let pc = tape.clamp_min(p, eps)?;
    let sc = tape.clamp_min(s, eps)?;
    let lp = tape.ln(pc)?;
    let ls = tape.ln(sc)?;
    let diff = tape.sub(lp, ls)?;
    let terms = tape.mul(pc, diff)?;
    let total = tape.sum(terms)?;
    Ok(tape.scale(total, T::ONE / T::from_usize(b))?)
}

/// `kl_loss` of a padded `S [B, N, K]`.
pub(crate) fn dense<T: Real>(tape: &mut Tape<T>, s: Var) -> Result<Var, LayerError> {
    let dims = tape.value(s)?.shape().to_vec();
    let &[b, n, k] = dims.as_slice() else {
        return Err(LayerError::invalid_argument(
            "S",
            format!("of shape {dims:?}"),
            "must be [B, N, K], MemPooling's assignment matrix",
        ));
    };
    if b == 0 {
        return Err(LayerError::invalid_argument(
            "S",
            format!("shape [0, {n}, {k}]"),
            "kl_loss averages over the batch; it needs B ≥ 1",
        ));
    }
    // Column sums Σ_n S_bnk in the transposed layout [B, K, N], where they are rows.
    let st = tape.transpose(s)?;
    let col = tape.sum_rows(st)?;
    let col = ones_where_zero(tape, col, col)?;
    let col = tape.reshape(col, &[b, k, 1])?;
    let st2 = tape.square(st)?;
    let pt = tape.div(st2, col)?;
    let p_raw = tape.transpose(pt)?;
    divergence(tape, s, p_raw, b)
}

/// `kl_loss` of the real rows `s_rows [N_real, K]` of a batch laid out by CSR `ptr`
/// (`B + 1` entries): the same value as [`dense`] on the padded `S`.
pub(crate) fn ragged<T: Real>(
    tape: &mut Tape<T>,
    s_rows: Var,
    ptr: &[usize],
) -> Result<Var, LayerError> {
    let b = ptr.len().saturating_sub(1);
    if b == 0 {
        return Err(LayerError::invalid_argument(
            "ptr",
            format!("{ptr:?}"),
            "kl_loss averages over the batch; it needs B ≥ 1",
        ));
    }
    let col = tape.segment_sum(s_rows, ptr)?;
    let col = ones_where_zero(tape, col, col)?;
    let col = tape.repeat_segments(col, ptr)?;
    let s2 = tape.square(s_rows)?;
    let p_raw = tape.div(s2, col)?;
    divergence(tape, s_rows, p_raw, b)
}

/// PyG's `MemPooling.kl_loss`, the auxiliary loss of the cluster assignments.
impl MemPooling {
    /// PyG's `MemPooling.kl_loss(S)` for `S [B, N, K]`, on the inference path.
    ///
    /// # Errors
    /// See [`MemPooling::kl_loss_on`].
    pub fn kl_loss(s: &Tensor<f32>) -> Result<f32, LayerError> {
        let mut tape = Tape::<f32>::new();
        tape.set_recording(false);
        let sv = tape.constant(s.clone());
        let l = Self::kl_loss_on(&mut tape, sv)?;
        Ok(tape.value(l)?.item())
    }

    /// PyG's `MemPooling.kl_loss(S)` for `S [B, N, K]` on a tape, differentiable through
    /// both `S` and the target `P` (PyG does not detach `P`):
    ///
    /// ```text
    /// P_bnk = (S_bnk² / Σ_n S_bnk) / Σ_k (S_bnk² / Σ_n S_bnk)      (denominator 1 where Σ_k S_bnk = 0)
    /// loss  = (1/B) Σ_bnk P̃ (ln P̃ − ln S̃),   P̃ = max(P, 1e-15), S̃ = max(S, 1e-15)
    /// ```
    ///
    /// (`KLDivLoss(reduction='batchmean')` of `ln S̃` against `P̃`). Column sums
    /// `Σ_n S_bnk = 0` (a graph with no valid node) are replaced by 1, so that graph
    /// contributes 0; PyG 2.8.1 returns NaN there.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] unless `S` has rank 3 with `B ≥ 1`.
    pub fn kl_loss_on<T: Real>(tape: &mut Tape<T>, s: Var) -> Result<Var, LayerError> {
        dense(tape, s)
    }
}

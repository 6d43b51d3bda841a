//! PyG's padded `S [B, N_max, K]` from the ragged `S [N, K]`, written in one pass, and
//! on a tape as one custom-backward node.
//!
//! The padded `S` is mostly zeros when the graphs are of very uneven size (`mp_skewed`:
//! 10 520 real rows in 512 000 padded ones, 32 MB of `f32`). The tape builds it as
//! `scatter_add` into a zeroed `[B·N_max, K]` buffer, then `reshape` to
//! `[B, N_max, K]`, which copies it; its backward copies the incoming gradient back
//! through the reshape before gathering the real rows. Here the real rows are added
//! into a zeroed buffer recycled from the tape (zeroed on every thread of the pool when
//! it is long), with no copy for the reshape; the backward gathers the real rows
//! straight from the incoming gradient.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use readout_core::{CoreError, CustomBackward, Real, Tape, Tensor, Var};

use super::super::validate::Plan;

const NAME: &str = "MemPooling's fused padding of S (PoolPath::Ragged; for second-order \
     derivatives use PoolPath::RaggedTape, which records it op by op)";

/// Adds the rows `rows [N, K]` into the zeroed `[total, K]` buffer `out` at the flat
/// row positions `positions` (one per row; two rows at one position add up, as
/// `scatter_add` would).
///
/// Replaces: `scatter_add(rows, positions, total)`.
pub(crate) fn pad_rows<T: Real>(rows: &[T], k: usize, positions: &[usize], out: &mut [T]) {
    for (row, &at) in rows.chunks_exact(k).zip(positions) {
        for (o, &v) in out[at * k..(at + 1) * k].iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// The node's backward rule: the real rows of the incoming gradient.
struct Pad {
    k: usize,
    positions: Arc<[usize]>,
}

/// PyG's padded `S [B, N_max, K]` of the ragged `s_rows [N_kept, K]` laid out by
/// `plan`, as one node on `tape` (a constant when the tape does not record or `S`
/// wants no gradient).
///
/// Replaces: `scatter_add(s_rows, positions, B·N_max)`, `reshape` to `[B, N_max, K]`
/// (and, backwards, their rules: the reshape's copy and the gather).
///
/// # Errors
/// [`CoreError::UnknownVar`] for a handle not on `tape`; shape errors from building
/// the value.
pub(crate) fn record<T: Real>(
    tape: &mut Tape<T>,
    s_rows: Var,
    plan: &Plan,
    k: usize,
) -> Result<Var, CoreError> {
    let mut data = tape.recycled_zeros(plan.padded_rows() * k);
    pad_rows(tape.value(s_rows)?.data(), k, &plan.positions, &mut data);
    let value = Tensor::from_vec(&[plan.batch_size, plan.max_nodes, k], data)?;
    if !(tape.is_recording() && tape.requires_grad(s_rows)?) {
        return Ok(tape.constant(value));
    }
    let rule = Pad {
        k,
        positions: plan.positions.as_slice().into(),
    };
    tape.custom(&[s_rows], value, Box::new(rule))
}

impl<T: Real> CustomBackward<T> for Pad {
    fn name(&self) -> &'static str {
        NAME
    }

    /// `S̄_rows[i] = S̄_padded[positions[i]]` (scatter_add's rule, a gather; the
    /// reshape's rule is a no-op on the flat data).
    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>, CoreError> {
        let k = self.k;
        let g = grad.data();
        let mut out = Vec::with_capacity(self.positions.len() * k);
        for &at in self.positions.iter() {
            out.extend_from_slice(&g[at * k..(at + 1) * k]);
        }
        Ok(alloc::vec![Some(Tensor::from_vec(
            &[self.positions.len(), k],
            out
        )?)])
    }
}

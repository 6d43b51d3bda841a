//! `kl_loss` of the ragged `S [N, K]` as one custom-backward node: two passes over
//! `S` forward and two backward, where the tape ([`super::super::kl::ragged`], the
//! reference) runs about twenty `[N, K]` ops each way and keeps their results.
//!
//! # The derivative
//!
//! Per graph `g` (rows `i ∈ g`), cluster `j`, `ε = 10⁻¹⁵`, `B` graphs, the forward pass
//! in the tape's ops:
//!
//! ```text
//! c_gj = Σ_{i∈g} S_ij  (1 where 0)          column sums (segment_sum, ones_where_zero)
//! R_ij = S_ij² / c_gj                        (repeat_segments, square, div)
//! r_i  = Σ_j R_ij      (1 where Σ_j S_ij = 0) row sums (sum_rows, ones_where_zero)
//! P_ij = R_ij / r_i                          (div)
//! L    = (1/B)·Σ_ij P̃_ij·(ln P̃_ij − ln S̃_ij),  P̃ = max(P, ε), S̃ = max(S, ε)
//!                                            (clamp_min, ln, sub, mul, sum, scale)
//! ```
//!
//! A value replaced by 1 is a constant: no gradient flows through it. Backwards, with
//! `ḡ` the incoming gradient and `[·]` the clamps' pass-through (where the value is
//! `≥ ε`, as `clamp_min` lets it through):
//!
//! - `P̄_ij = (ḡ/B)·(ln P̃_ij − ln S̃_ij + 1)·[P_ij ≥ ε]` and the direct term
//!   `S̄_ij = −(ḡ/B)·(P̃_ij/S̃_ij)·[S_ij ≥ ε]`;
//! - the row normalisation: `R̄_ij = (P̄_ij − Σ_l P̄_il·P_il)/r_i` (without the sum
//!   where `r_i` was replaced);
//! - `R = S²/c`: `S̄_ij += 2·R̄_ij·S_ij/c_gj`, and `c̄_gj = −Σ_{i∈g} R̄_ij·R_ij/c_gj`
//!   (0 where `c_gj` was replaced);
//! - the column sums: `S̄_ij += c̄_gj`.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use readout_core::{CoreError, CustomBackward, Real, Tape, Tensor, Var};
use readout_kernels::elementwise::{Unary, unary};
use readout_kernels::reduce::sum_all;

use super::super::KL_EPS;

const NAME: &str = "MemPooling's fused kl_loss node (PoolPath::Ragged; for second-order \
     derivatives use PoolPath::RaggedTape, which records it op by op)";

/// `max(v, ε)` (NaN stays NaN), the tape's `clamp_min`.
fn clamp<T: Real>(v: T, eps: T) -> T {
    if v < eps { eps } else { v }
}

/// What the rule keeps: `S`, the graphs' boundaries, and `ln P̃ − ln S̃` of every
/// entry (computed by the forward pass, so the backward pass needs no logarithm).
struct KlLoss<T> {
    k: usize,
    s: Vec<T>,
    ptr: Vec<usize>,
    log_ratio: Vec<T>,
}

/// `kl_loss` of `s_rows [N, K]` (graphs by CSR `ptr`, `B + 1` entries, `B ≥ 1`) as
/// one node on `tape` (a constant when the tape does not record or `S` wants no
/// gradient).
///
/// # Errors
/// [`CoreError::UnknownVar`] for a handle not on `tape`.
pub(crate) fn record<T: Real>(
    tape: &mut Tape<T>,
    s_rows: Var,
    ptr: &[usize],
) -> Result<Var, CoreError> {
    let t = tape.value(s_rows)?;
    let k = t.shape().last().copied().unwrap_or(1).max(1);
    let mut rule = KlLoss {
        k,
        s: t.data().to_vec(),
        ptr: ptr.to_vec(),
        log_ratio: Vec::new(),
    };
    let value = Tensor::scalar(rule.loss());
    if !(tape.is_recording() && tape.requires_grad(s_rows)?) {
        return Ok(tape.constant(value));
    }
    tape.custom(&[s_rows], value, Box::new(rule))
}

impl<T: Real> KlLoss<T> {
    /// `c_g`, the column sums of graph `g` (1 where 0), into `c [K]`; `replaced[j]`
    /// tells where.
    fn columns(&self, g: usize, c: &mut [T], replaced: &mut [bool]) {
        let k = self.k;
        c.fill(T::ZERO);
        for row in self.s[self.ptr[g] * k..self.ptr[g + 1] * k].chunks_exact(k) {
            for (cj, &v) in c.iter_mut().zip(row) {
                *cj += v;
            }
        }
        for (cj, rj) in c.iter_mut().zip(replaced.iter_mut()) {
            *rj = *cj == T::ZERO;
            if *rj {
                *cj = T::ONE;
            }
        }
    }

    /// `R` of one row into `r_out [K]`, and `r_i` (1 where `Σ_j S_ij = 0`) with
    /// whether it was replaced.
    /// (Both sums as the tape's `sum_rows` adds: `kl_loss` cancels, so the fused node
    /// keeps the tape's order of every sum to stay within rounding of each term.)
    fn row(s: &[T], c: &[T], r_out: &mut [T]) -> (T, bool) {
        for ((r, &v), &cj) in r_out.iter_mut().zip(s).zip(c) {
            *r = v * v / cj;
        }
        if sum_all(s) == T::ZERO {
            (T::ONE, true)
        } else {
            (sum_all(r_out), false)
        }
    }

    /// The loss; fills `log_ratio`.
    fn loss(&mut self) -> T {
        let k = self.k;
        let b = self.ptr.len() - 1;
        let eps = T::from_f64(KL_EPS);
        let (mut c, mut r) = (vec![T::ZERO; k], vec![T::ZERO; k]);
        let mut replaced = vec![false; k];
        // P̃ and S̃ of every entry, then their logarithms in two vector passes.
        // Replaces: the tape's clamp_min (twice) and ln (twice), through the same `ln`
        // kernel as the tape's `ln` op.
        let mut pt = vec![T::ZERO; self.s.len()];
        for g in 0..b {
            self.columns(g, &mut c, &mut replaced);
            let (lo, hi) = (self.ptr[g] * k, self.ptr[g + 1] * k);
            for (srow, prow) in self.s[lo..hi]
                .chunks_exact(k)
                .zip(pt[lo..hi].chunks_exact_mut(k))
            {
                let (den, _) = Self::row(srow, &c, &mut r);
                for (p, &rv) in prow.iter_mut().zip(&r) {
                    *p = clamp(rv / den, eps);
                }
            }
        }
        let st: Vec<T> = self.s.iter().map(|&v| clamp(v, eps)).collect();
        let mut ln_p = vec![T::ZERO; pt.len()];
        unary(Unary::Ln, &pt, &mut ln_p);
        let mut ln_s = vec![T::ZERO; st.len()];
        unary(Unary::Ln, &st, &mut ln_s);
        // ln P̃ − ln S̃ (sub), kept for the backward pass; the terms P̃·(ln P̃ − ln S̃)
        // (mul) in S's layout, summed as the tape's `sum` sums them (a cancelling sum:
        // the same order keeps the two within rounding of each term).
        for (lp, &ls) in ln_p.iter_mut().zip(&ln_s) {
            *lp -= ls;
        }
        let mut terms = ln_s;
        for ((t, &p), &lr) in terms.iter_mut().zip(&pt).zip(&ln_p) {
            *t = p * lr;
        }
        self.log_ratio = ln_p;
        sum_all(&terms) * (T::ONE / T::from_usize(b))
    }
}

impl<T: Real> CustomBackward<T> for KlLoss<T> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>, CoreError> {
        let k = self.k;
        let b = self.ptr.len() - 1;
        let eps = T::from_f64(KL_EPS);
        let scale = grad.data().first().copied().unwrap_or(T::ZERO) / T::from_usize(b);
        let mut ds = vec![T::ZERO; self.s.len()];
        let (mut c, mut r, mut rbar) = (vec![T::ZERO; k], vec![T::ZERO; k], vec![T::ZERO; k]);
        let mut cbar = vec![T::ZERO; k];
        let mut replaced = vec![false; k];
        for g in 0..b {
            self.columns(g, &mut c, &mut replaced);
            let (lo, hi) = (self.ptr[g] * k, self.ptr[g + 1] * k);
            cbar.fill(T::ZERO);
            for ((srow, drow), lrow) in self.s[lo..hi]
                .chunks_exact(k)
                .zip(ds[lo..hi].chunks_exact_mut(k))
                .zip(self.log_ratio[lo..hi].chunks_exact(k))
            {
                let (den, den_replaced) = Self::row(srow, &c, &mut r);
                // P̄ (into rbar) and the direct term of S̄; Σ_l P̄_il·P_il.
                let mut dot = T::ZERO;
                for ((((pb, d), &rv), &sv), &lr) in rbar
                    .iter_mut()
                    .zip(drow.iter_mut())
                    .zip(&r)
                    .zip(srow)
                    .zip(lrow)
                {
                    let p = rv / den;
                    let (pt, st) = (clamp(p, eps), clamp(sv, eps));
                    *pb = if p >= eps {
                        scale * (lr + T::ONE)
                    } else {
                        T::ZERO
                    };
                    *d = if sv >= eps { -scale * pt / st } else { T::ZERO };
                    dot += *pb * p;
                }
                // R̄, then S̄ through S²/c, and c̄.
                for ((((pb, d), &rv), &sv), (&cj, cb)) in rbar
                    .iter_mut()
                    .zip(drow.iter_mut())
                    .zip(&r)
                    .zip(srow)
                    .zip(c.iter().zip(cbar.iter_mut()))
                {
                    let rb = if den_replaced { *pb } else { (*pb - dot) / den };
                    *d += T::from_f64(2.0) * rb * sv / cj;
                    *cb -= rb * rv / cj;
                }
            }
            // The column sums' gradient reaches every row of the graph (none where c
            // was replaced by 1).
            for (cb, &rj) in cbar.iter_mut().zip(&replaced) {
                if rj {
                    *cb = T::ZERO;
                }
            }
            for drow in ds[lo..hi].chunks_exact_mut(k) {
                for (d, &cb) in drow.iter_mut().zip(&cbar) {
                    *d += cb;
                }
            }
        }
        Ok(vec![Some(Tensor::from_vec(&[self.s.len() / k, k], ds)?)])
    }
}

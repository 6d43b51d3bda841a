//! The inference path's engine: `MemPooling`'s ragged forward with no tape.
//!
//! The tape computes the assignment in about twenty separate ops over the whole batch,
//! each allocating a fresh `[N, H·K]` or `[N, K]` tensor; at inference nothing needs
//! to be kept, so here the per-node part runs per block of [`BLOCK`] rows, in cache,
//! with scratch buffers reused across blocks:
//!
//! 1. `D = max(‖x‖² + ‖k‖² − 2·x·kᵀ, 0)` against all `H·K` keys at once (one GEMM);
//! 2. the Student-t kernel of `D`;
//! 3. per row and head, the normalisation over the `K` clusters, the head mix
//!    `z_j = Σ_h w_h · q_hj / Σ_k q_hk`, and softmax over the clusters written
//!    straight into the `S` rows (one kernel, one pass per row:
//!    [`readout_kernels::rows::head_mix_softmax_rows`]).
//!
//! Then `Sᵀ·X` per graph (one GEMM per non-empty graph) and the final linear (one GEMM
//! over all `B·K` pooled rows). The operations and their order are the tape path's
//! ([`super::MemPooling::forward_on`] on [`super::PoolPath::Ragged`]), so the two
//! agree up to rounding.

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;

use readout_core::Real;
use readout_kernels::elementwise::{Unary, unary};
use readout_kernels::gemm::{GemmShape, gemm};
use readout_kernels::rows::head_mix_softmax_rows;
use readout_kernels::segment::gather_rows;

use super::super::validate::Plan;

/// Rows per block of the per-node part: the block's `[BLOCK, H·K]` distances stay in
/// L2 for the layer sizes of the workloads (`H·K` up to a few hundred).
pub(super) const BLOCK: usize = 256;

/// The layer's sizes and weights, borrowed in the engine's layout.
pub(crate) struct Weights<'a, T> {
    /// `F`, the input width.
    pub(crate) f: usize,
    /// `F'`, the output width.
    pub(crate) o: usize,
    /// `H`, the number of heads.
    pub(crate) h: usize,
    /// `K`, the number of clusters.
    pub(crate) k: usize,
    /// `τ`, the Student-t temperature.
    pub(crate) tau: T,
    /// The keys `[H·K, F]` (PyG's `k [H, K, F]`, flattened).
    pub(crate) keys: &'a [T],
    /// The head weights `[H]`.
    pub(crate) conv: &'a [T],
    /// `lin.weight [F', F]`.
    pub(crate) lin: &'a [T],
}

/// What the engine returns.
pub(crate) struct Fused<T> {
    /// `out [B·K, F']`, row-major.
    pub(crate) out: Vec<T>,
    /// `S` on the kept rows `[N_kept, K]`, in the plan's kept order.
    pub(crate) s_rows: Vec<T>,
}

/// `out` and `S` (on the kept rows) of the row view `x_rows [plan.rows, F]`.
pub(crate) fn forward<T: Real>(w: &Weights<'_, T>, x_rows: &[T], plan: &Plan) -> Fused<T> {
    let rows = kept_rows(x_rows, w.f, plan);
    let n = rows.len() / w.f;
    let mut s_rows = vec![T::ZERO; n * w.k];
    assign(w, &rows, &mut s_rows);
    let sx = pool(w, &rows, &s_rows, plan);
    let out = project(w, &sx);
    Fused { out, s_rows }
}

/// `out = SX · linᵀ` over all `B·K` pooled rows `sx [B·K, F]` at once: `[B·K, F']`.
/// Replaces: `lin` in reference.rs (reshape, `Linear::forward`: matmul_with, reshape).
pub(super) fn project<T: Real>(w: &Weights<'_, T>, sx: &[T]) -> Vec<T> {
    let rows = sx.len() / w.f;
    let mut out = vec![T::ZERO; rows * w.o];
    gemm(
        &GemmShape::with_trans(rows, w.o, w.f, false, true),
        T::ONE,
        sx,
        w.lin,
        T::ZERO,
        &mut out,
    );
    out
}

/// Replaces: `gather_rows` of the kept rows in reference.rs.
///
/// The kept rows of `x_rows`: borrowed when every row is kept (the common case),
/// gathered otherwise (nodes dropped by `max_num_nodes`, masked dense rows).
fn kept_rows<'x, T: Real>(x_rows: &'x [T], f: usize, plan: &Plan) -> Cow<'x, [T]> {
    match &plan.kept {
        None => Cow::Borrowed(x_rows),
        Some(kept) => {
            let mut g = vec![T::ZERO; kept.len() * f];
            gather_rows(x_rows, f, kept, &mut g);
            Cow::Owned(g)
        }
    }
}

/// Scratch space of one block, allocated once per forward.
pub(super) struct Scratch<T> {
    /// Squared distances, `[BLOCK, H·K]`.
    pub(super) d: Vec<T>,
    /// The Student-t kernel of `d`, `[BLOCK, H·K]` (a second buffer: the SIMD kernel
    /// maps one slice into another; `unary_inplace` is the scalar loop).
    pub(super) q: Vec<T>,
    /// `‖x‖²` of the block's rows.
    xnorm: Vec<T>,
}

impl<T: Real> Scratch<T> {
    /// Buffers for blocks of up to [`BLOCK`] rows of a layer of `w`'s sizes.
    pub(super) fn new(w: &Weights<'_, T>) -> Self {
        let hk = w.h * w.k;
        Scratch {
            d: vec![T::ZERO; BLOCK * hk],
            q: vec![T::ZERO; BLOCK * hk],
            xnorm: vec![T::ZERO; BLOCK],
        }
    }
}

/// `S = softmax(conv(normalised Student-t kernel))` of every row of `rows [N, F]` into
/// `s [N, K]`, block by block.
pub(super) fn assign<T: Real>(w: &Weights<'_, T>, rows: &[T], s: &mut [T]) {
    let hk = w.h * w.k;
    // ‖k‖² of every key, once. Replaces: square(keys), sum_rows in `assign`.
    let mut knorm = vec![T::ZERO; hk];
    sq_norms(w.keys, w.f, &mut knorm);
    let scratch = || Scratch::new(w);
    // Blocks are independent (each writes its own rows of `S`), so with the `rayon`
    // feature they run in parallel, one scratch per worker, from four blocks on; every
    // row gets the same operations whatever the number of threads. (From two blocks,
    // `mp_proteins`' 846 rows split: `ab_threads mp_proteins` gave 0.80–0.82× the
    // 1-thread time in three runs at 04:35–04:40 UTC on 2026-12-02 and 1.02× in the
    // benchmark window at 05:25 (2-vCPU Xeon VM, AVX2 path, nothing else running). A
    // call of 0.17 ms gains too little to risk being slower on 2 threads than on 1.)
    #[cfg(feature = "rayon")]
    if rayon::current_num_threads() > 1 && rows.len() >= 4 * BLOCK * w.f {
        use rayon::prelude::*;
        rows.par_chunks(BLOCK * w.f)
            .zip(s.par_chunks_mut(BLOCK * w.k))
            .for_each_init(scratch, |sc, (xb, sb)| assign_block(w, &knorm, xb, sb, sc));
        return;
    }
    let mut sc = scratch();
    for (xb, sb) in rows.chunks(BLOCK * w.f).zip(s.chunks_mut(BLOCK * w.k)) {
        assign_block(w, &knorm, xb, sb, &mut sc);
    }
}

/// `out[r] = Σ_c x[r, c]²`, summed as the tape sums `square(x)` over rows
/// ([`readout_kernels::reduce::sum_all`]'s eight lanes), so both give the same bits.
pub(super) fn sq_norms<T: Real>(x: &[T], cols: usize, out: &mut [T]) {
    for (o, row) in out.iter_mut().zip(x.chunks_exact(cols)) {
        let mut lanes = [T::ZERO; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v * v;
            }
        }
        let mut tail = T::ZERO;
        for &v in chunks.remainder() {
            tail += v * v;
        }
        let (a, b) = lanes.split_at(4);
        let mut sum = T::ZERO;
        for i in 0..4 {
            sum += a[i] + b[i];
        }
        *o = sum + tail;
    }
}

/// [`assign`] on one block of at most [`BLOCK`] rows.
pub(super) fn assign_block<T: Real>(
    w: &Weights<'_, T>,
    knorm: &[T],
    xb: &[T],
    sb: &mut [T],
    sc: &mut Scratch<T>,
) {
    let m = xb.len() / w.f;
    let (h, k) = (w.h, w.k);
    let hk = h * k;
    let d = &mut sc.d[..m * hk];
    let xnorm = &mut sc.xnorm[..m];
    // Replaces: square(rows), sum_rows, reshape in `assign`.
    sq_norms(xb, w.f, xnorm);
    // torch.cdist's matrix form `(−2·x·kᵀ + ‖x‖²) + ‖k‖²`, clamped at 0 (NaN kept).
    // Replaces: scale(keys, −2), matmul_with, add, add, clamp_min in `assign`.
    gemm(
        &GemmShape::with_trans(m, hk, w.f, false, true),
        -T::from_f64(2.0),
        xb,
        w.keys,
        T::ZERO,
        d,
    );
    for (row, &xn) in d.chunks_exact_mut(hk).zip(xnorm.iter()) {
        for (v, &kn) in row.iter_mut().zip(knorm) {
            let e = *v + xn + kn;
            *v = if e > T::ZERO || e.is_nan() {
                e
            } else {
                T::ZERO
            };
        }
    }
    let q = &mut sc.q[..m * hk];
    // Replaces: student_t.
    unary(Unary::StudentT(w.tau), d, q);
    // Per row: Σ_k q over the clusters of each head, q / Σ (kept in `q` for the
    // backward), the 1×1 conv over heads z_j = Σ_h w_h · n_hj, and softmax over the
    // clusters into the `S` rows, in one pass per row.
    // Replaces: reshape, sum_rows, reshape, div, reshape, matmul(qn, w ⊗ I_K)
    // (`head_mix_matrix`), softmax.
    head_mix_softmax_rows(q, w.conv, k, sb);
}

/// `Sᵀ·X` per graph: `[B·K, F]`, zero blocks for empty graphs.
/// Replaces: segment_matmul_tn(S, rows, ptr) in `ragged`.
pub(super) fn pool<T: Real>(w: &Weights<'_, T>, rows: &[T], s: &[T], plan: &Plan) -> Vec<T> {
    let (k, f) = (w.k, w.f);
    let mut sx = vec![T::ZERO; plan.batch_size * k * f];
    let one = |(g, out): (usize, &mut [T])| {
        let (lo, hi) = (plan.ptr[g], plan.ptr[g + 1]);
        if lo < hi {
            gemm(
                &GemmShape::with_trans(k, f, hi - lo, true, false),
                T::ONE,
                &s[lo * k..hi * k],
                &rows[lo * f..hi * f],
                T::ZERO,
                out,
            );
        }
    };
    // One graph per task with the `rayon` feature (graphs write disjoint blocks),
    // when the products are worth a hand-over between threads.
    #[cfg(feature = "rayon")]
    if rayon::current_num_threads() > 1
        && plan.batch_size > 1
        && (2 * k * f * (rows.len() / f.max(1))) as u64 >= readout_kernels::gemm::PARALLEL_MIN_FLOPS
    {
        use rayon::prelude::*;
        sx.par_chunks_exact_mut(k * f).enumerate().for_each(one);
        return sx;
    }
    sx.chunks_exact_mut(k * f).enumerate().for_each(one);
    sx
}

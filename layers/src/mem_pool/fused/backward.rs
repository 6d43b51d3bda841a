//! The training path's engine: `MemPooling`'s soft assignment `S` as one custom-backward
//! node on the tape, whose backward pass recomputes what it needs block by block.
//!
//! On the tape, the assignment is about twenty ops, and every one of them keeps an
//! `[N, H·K]` tensor alive until the backward pass (the distances, the kernel, its
//! normalisation, …): on `mp_large` that is most of two gigabytes. This node keeps only
//! the node rows `X [N, F]` and the weights; its value is `S [N, K]`. Its backward rule
//! runs the forward engine's block code ([`super::assign_block`]) again on each block of
//! [`BLOCK`] rows, then the derivative below, in cache.
//!
//! # What the node covers, and why `Sᵀ·X`, `lin` and `kl_loss` stay on the tape
//!
//! A custom node has one output, and `S` must be one: `kl_loss` and any loss the user
//! builds on `S` (PyG returns it) need its gradient. So the node ends at `S`; the
//! per-graph product `Sᵀ·X` and `lin` stay on the tape
//! ([`readout_core::Tape::segment_matmul_tn`] and a matmul), whose backward needs only
//! `S`, `X` and the small `[B·K, F]` pooled rows, and the tape adds the gradients that
//! reach `S` from `out`, from `kl_loss` and from the user's loss before calling this
//! node's rule once with their sum. Fusing `Sᵀ·X` and `lin` into the node would mean
//! packing `out` and `S` into one output and slicing them apart, which copies more than
//! the one `[N, K]` add it saves; fusing `kl_loss` would compute it on every forward
//! whether asked for or not, and `S` would still have to be an output. `kl_loss` is
//! `O(N·K)` elementwise work, small next to the node's `O(N·H·K·F)`.
//!
//! # The derivative
//!
//! One row `x ∈ ℝ^F` (rows are independent), keys `k_hj` (head `h`, cluster `j`),
//! head weights `w_h`, `p = (1+τ)/2`. The forward pass, in the tape's ops:
//!
//! ```text
//! d_hj  = max(‖x‖² + ‖k_hj‖² − 2·x·k_hj, 0)          distances (matmul, square, sum_rows, add, clamp_min)
//! q_hj  = (1 + d_hj/τ)^(−p)                           Student-t kernel (student_t)
//! Q_h   = Σ_j q_hj,   n_hj = q_hj / Q_h               normalisation per head (sum_rows, div)
//! z_j   = Σ_h w_h·n_hj                                head mix, a 1×1 conv (matmul with w ⊗ I_K)
//! s_j   = exp(z_j) / Σ_l exp(z_l)                     softmax over clusters (softmax)
//! ```
//!
//! Given `g_j = ∂L/∂s_j` (the node's incoming gradient), backwards:
//!
//! - softmax: `∂s_j/∂z_l = s_j(δ_jl − s_l)`, so `ḡz_j = s_j·(g_j − Σ_l s_l·g_l)`.
//! - head mix: `z_j` is linear in `w` and in `n`: `w̄_h = Σ_j ḡz_j·n_hj` (summed over
//!   rows), and `n̄_hj = w_h·ḡz_j`.
//! - normalisation: `∂n_hj/∂q_hl = (δ_jl − n_hj)/Q_h`, so
//!   `q̄_hl = (n̄_hl − Σ_j n̄_hj·n_hj)/Q_h = w_h·(ḡz_l − c_h)/Q_h` with
//!   `c_h = Σ_j ḡz_j·n_hj` — the same sum as the row's share of `w̄_h`.
//! - Student-t: `dq/dd = −(p/τ)·(1 + d/τ)^(−p−1) = −(p/τ)·q/(1 + d/τ)`, written with
//!   the kernel's value as the tape writes it (no second power). With `q_hj = n_hj·Q_h`
//!   the `Q_h` cancels:
//!   `d̄_hj = −(p/τ)·w_h·(ḡz_j − c_h)·n_hj / (1 + d_hj/τ)`.
//! - distances: `∂d_hj/∂x = 2x − 2k_hj` and `∂d_hj/∂k_hj = 2k_hj − 2x`, so
//!   `x̄ = 2x·Σ_hj d̄_hj − 2·Σ_hj d̄_hj·k_hj` (one GEMM `D̄·K` per block) and
//!   `k̄_hj = 2k_hj·Σ_rows d̄_hj − 2·Σ_rows d̄_hj·x` (one GEMM `D̄ᵀ·X` per block).
//!
//! The clamp at 0 lets the gradient through everywhere here; the tape's `clamp_min`
//! stops it where rounding made the distance of a node lying on a key negative. There
//! `2x − 2k_hj` is zero up to rounding, so both give the gradient to rounding.
//!
//! # Order of the sums, threads
//!
//! `x̄` is row-wise: each block writes its own rows. `k̄` and `w̄` sum over rows: each
//! chunk of [`CHUNK_BLOCKS`] blocks adds its blocks in order into its own partial sums,
//! and the partial sums are added in chunk order. The chunks are fixed by the row count
//! alone, so the result does not depend on the number of threads; with the `rayon`
//! feature, up to [`WAVE`] chunks at a time run in parallel, when the work is large
//! enough to pay for the hand-over (see [`parallel`]).
//!
//! # Second-order derivatives
//!
//! The rule computes numbers, not tape ops, so a gradient through this node cannot be
//! differentiated again: a backward pass through it with `create_graph = true` returns
//! [`CoreError::NotRecordable`] naming this node and the path that can
//! ([`super::super::PoolPath::RaggedTape`], the same computation recorded op by op).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use readout_core::{CoreError, CustomBackward, Real, Tape, Tensor, Var};
use readout_kernels::gemm::{GemmShape, gemm};

use super::{BLOCK, Scratch, Weights, assign, assign_block, sq_norms};

/// The node's name in errors; it says what to use for second-order derivatives.
pub(crate) const NAME: &str = "MemPooling's fused assignment node (PoolPath::Ragged; \
     for second-order derivatives use PoolPath::RaggedTape, which records it op by op)";

/// Blocks per chunk of the reduction over rows: the unit of parallel work. Two blocks
/// (512 rows) give even small batches (`mp_proteins`: ~870 rows) two chunks, and cost
/// one extra `[H·K, F]` add per 512 rows.
const CHUNK_BLOCKS: usize = 2;

/// Chunks in flight at once: bounds the partial sums held to `WAVE · (H·K·F + H·K + H)`
/// values whatever the row count.
const WAVE: usize = 16;

/// The assignment's sizes (the node needs neither `F'` nor `lin`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes<T> {
    /// `F`, the input width.
    pub(crate) f: usize,
    /// `H`, the number of heads.
    pub(crate) h: usize,
    /// `K`, the number of clusters.
    pub(crate) k: usize,
    /// `τ`, the Student-t temperature.
    pub(crate) tau: T,
}

/// What the backward rule keeps: the rows and the weights, never an `[N, H·K]` tensor.
struct Assignment<T> {
    sizes: Sizes<T>,
    /// The keys `[H·K, F]`.
    keys: Vec<T>,
    /// The head weights `[H]`.
    conv: Vec<T>,
    /// The node rows `[N, F]`.
    rows: Vec<T>,
    /// The shapes of the three inputs, for their gradients.
    shapes: [Vec<usize>; 3],
    /// Whether the rows want a gradient (the `D̄·K` GEMM is skipped otherwise).
    rows_grad: bool,
}

impl<T: Real> Assignment<T> {
    /// The forward engine's view of the weights (it reads neither `o` nor `lin`).
    fn weights(&self) -> Weights<'_, T> {
        view(self.sizes, &self.keys, &self.conv)
    }
}

fn view<'a, T: Real>(s: Sizes<T>, keys: &'a [T], conv: &'a [T]) -> Weights<'a, T> {
    Weights {
        f: s.f,
        o: 0,
        h: s.h,
        k: s.k,
        tau: s.tau,
        keys,
        conv,
        lin: &[],
    }
}

/// `S [N, K]` of `rows [N, F]` with keys `keys` (`[H, K, F]`) and head weights `conv`
/// (`[H]`) on `tape`: computed by the forward engine, and recorded as one node whose
/// backward rule is [`Assignment`]'s when the tape records and an input wants a
/// gradient (a constant otherwise, as any op on a non-recording tape).
///
/// # Errors
/// [`CoreError::UnknownVar`] for a handle not on `tape`; shape errors from building
/// `S`.
pub(crate) fn record<T: Real>(
    tape: &mut Tape<T>,
    sizes: Sizes<T>,
    keys: Var,
    conv: Var,
    rows: Var,
) -> Result<Var, CoreError> {
    let x = tape.value(rows)?.data();
    let n = x.len() / sizes.f.max(1);
    let mut s = vec![T::ZERO; n * sizes.k];
    {
        let (kv, cv) = (tape.value(keys)?.data(), tape.value(conv)?.data());
        assign(&view(sizes, kv, cv), x, &mut s);
    }
    let value = Tensor::from_vec(&[n, sizes.k], s)?;
    let wants = |v: Var| tape.requires_grad(v);
    let rows_grad = wants(rows)?;
    if !(tape.is_recording() && (wants(keys)? || wants(conv)? || rows_grad)) {
        return Ok(tape.constant(value));
    }
    let owned = |v: Var| -> Result<(Vec<T>, Vec<usize>), CoreError> {
        let t = tape.value(v)?;
        Ok((t.data().to_vec(), t.shape().to_vec()))
    };
    let ((keys_v, ks), (conv_v, cs), (rows_v, rs)) = (owned(keys)?, owned(conv)?, owned(rows)?);
    let rule = Assignment {
        sizes,
        keys: keys_v,
        conv: conv_v,
        rows: rows_v,
        shapes: [ks, cs, rs],
        rows_grad,
    };
    tape.custom(&[keys, conv, rows], value, Box::new(rule))
}

impl<T: Real> CustomBackward<T> for Assignment<T> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>, CoreError> {
        let (dk, dw, dx) = self.reverse(grad.data());
        let [ks, cs, rs] = &self.shapes;
        Ok(vec![
            Some(Tensor::from_vec(ks, dk)?),
            Some(Tensor::from_vec(cs, dw)?),
            match dx {
                Some(dx) => Some(Tensor::from_vec(rs, dx)?),
                None => None,
            },
        ])
    }
}

/// One chunk's work: its rows, their incoming gradient, their `x̄` rows (when wanted)
/// and its partial sums `[k̄ part (H·K·F) | Σ_rows d̄ (H·K) | w̄ (H)]`.
type Task<'a, T> = (&'a [T], &'a [T], Option<&'a mut [T]>, &'a mut [T]);

impl<T: Real> Assignment<T> {
    /// `(k̄, w̄, x̄)` for `ds = ∂L/∂S`.
    fn reverse(&self, ds: &[T]) -> (Vec<T>, Vec<T>, Option<Vec<T>>) {
        let Sizes { f, h, k, .. } = self.sizes;
        let hk = h * k;
        let w = self.weights();
        let n = self.rows.len() / f.max(1);
        // ‖k‖², as the forward computed it.
        let mut knorm = vec![T::ZERO; hk];
        sq_norms(&self.keys, f, &mut knorm);
        let mut dx = self.rows_grad.then(|| vec![T::ZERO; n * f]);
        let part_len = hk * f + hk + h;
        let chunk_rows = BLOCK * CHUNK_BLOCKS;
        let chunks = n.div_ceil(chunk_rows);
        let mut total = vec![T::ZERO; part_len];
        let mut partials = vec![T::ZERO; WAVE.min(chunks) * part_len];
        let in_parallel = parallel(n, hk, f, chunks);
        let wave_rows = WAVE * chunk_rows;
        for (wave, lo) in (0..n).step_by(wave_rows).enumerate() {
            let hi = n.min(lo + wave_rows);
            let xs = &self.rows[lo * f..hi * f];
            let gs = &ds[lo * k..hi * k];
            let mut dxs: Vec<Option<&mut [T]>> = match dx.as_mut() {
                Some(dx) => dx[lo * f..hi * f]
                    .chunks_mut(chunk_rows * f)
                    .map(Some)
                    .collect(),
                None => (0..xs.len().div_ceil(chunk_rows * f))
                    .map(|_| None)
                    .collect(),
            };
            let in_wave = (hi - lo).div_ceil(chunk_rows);
            debug_assert!(wave * WAVE + in_wave <= chunks);
            let tasks: Vec<Task<'_, T>> = xs
                .chunks(chunk_rows * f)
                .zip(gs.chunks(chunk_rows * k))
                .zip(dxs.drain(..))
                .zip(partials[..in_wave * part_len].chunks_exact_mut(part_len))
                .map(|(((x, g), d), p)| (x, g, d, p))
                .collect();
            run_tasks(&w, &knorm, tasks, in_parallel);
            // The chunks' sums, in chunk order whatever ran them.
            for p in partials[..in_wave * part_len].chunks_exact(part_len) {
                for (t, &v) in total.iter_mut().zip(p) {
                    *t += v;
                }
            }
        }
        let (dk_cross, rest) = total.split_at(hk * f);
        let (dsum, dw) = rest.split_at(hk);
        // k̄_hj = −2·Σ d̄_hj·x + 2·k_hj·Σ d̄_hj: the product's part (matmul's backward
        // to the keys, through the scale by −2) and ‖k‖²'s (sum_rows', square's).
        let two = T::from_f64(2.0);
        let mut dk = dk_cross.to_vec();
        for ((row, key), &sum) in dk
            .chunks_exact_mut(f)
            .zip(self.keys.chunks_exact(f))
            .zip(dsum)
        {
            for (v, &kv) in row.iter_mut().zip(key) {
                *v += two * sum * kv;
            }
        }
        (dk, dw.to_vec(), dx)
    }
}

/// Whether the chunks run in parallel: with the `rayon` feature, more than one thread,
/// at least two chunks, and at least the GEMM kernel's own threshold of work per
/// chunk (the backward does about `6·H·K·F` FLOPs per row in its three GEMMs, and the
/// forward's recomputation of a block is one of them), so that a thread's share is
/// far above the cost of handing it over.
fn parallel(n: usize, hk: usize, f: usize, chunks: usize) -> bool {
    #[cfg(feature = "rayon")]
    {
        let per_chunk = 6 * (BLOCK * CHUNK_BLOCKS).min(n) * hk * f;
        rayon::current_num_threads() > 1
            && chunks >= 2
            && per_chunk as u64 >= readout_kernels::gemm::PARALLEL_MIN_FLOPS
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = (n, hk, f, chunks);
        false
    }
}

/// Runs every chunk of a wave, one scratch per worker.
fn run_tasks<T: Real>(w: &Weights<'_, T>, knorm: &[T], tasks: Vec<Task<'_, T>>, par: bool) {
    let scratch = || BackScratch::new(w);
    #[cfg(feature = "rayon")]
    if par {
        use rayon::prelude::*;
        tasks
            .into_par_iter()
            .for_each_init(scratch, |sc, t| chunk(w, knorm, t, sc));
        return;
    }
    let _ = par;
    let mut sc = scratch();
    for t in tasks {
        chunk(w, knorm, t, &mut sc);
    }
}

/// Scratch of one worker: the forward engine's, and the block's `S` and `ḡz`.
struct BackScratch<T> {
    fwd: Scratch<T>,
    /// `S` of the block, recomputed, `[BLOCK, K]`.
    s: Vec<T>,
    /// `ḡz`, `[BLOCK, K]`.
    dz: Vec<T>,
    /// `Σ_hj d̄_hj` per row, `[BLOCK]`.
    drow: Vec<T>,
}

impl<T: Real> BackScratch<T> {
    fn new(w: &Weights<'_, T>) -> Self {
        BackScratch {
            fwd: Scratch::new(w),
            s: vec![T::ZERO; BLOCK * w.k],
            dz: vec![T::ZERO; BLOCK * w.k],
            drow: vec![T::ZERO; BLOCK],
        }
    }
}

/// One chunk: its blocks in order, each recomputed and differentiated; `x̄` rows written,
/// the row sums added into the chunk's partial sums.
fn chunk<T: Real>(w: &Weights<'_, T>, knorm: &[T], task: Task<'_, T>, sc: &mut BackScratch<T>) {
    let (xs, gs, mut dxs, part) = task;
    let (f, h, k) = (w.f, w.h, w.k);
    let hk = h * k;
    part.fill(T::ZERO);
    let (dk_cross, rest) = part.split_at_mut(hk * f);
    let (dsum, dw) = rest.split_at_mut(hk);
    let two = T::from_f64(2.0);
    let p = (T::ONE + w.tau) * T::from_f64(0.5);
    let inv_tau = T::ONE / w.tau;
    for (b, (xb, gb)) in xs.chunks(BLOCK * f).zip(gs.chunks(BLOCK * k)).enumerate() {
        let m = xb.len() / f;
        // Recompute (replaces keeping the tape's matmul, square, sum_rows, add,
        // clamp_min, student_t, sum_rows, div, matmul and softmax outputs): after this
        // `fwd.d` holds the clamped distances, `fwd.q` the normalised kernel `n`.
        let s = &mut sc.s[..m * k];
        assign_block(w, knorm, xb, s, &mut sc.fwd);
        // Softmax's backward (replaces the tape's softmax rule):
        // ḡz_j = s_j·(g_j − Σ_l s_l·g_l).
        let dz = &mut sc.dz[..m * k];
        for ((dzr, sr), gr) in dz
            .chunks_exact_mut(k)
            .zip(s.chunks_exact(k))
            .zip(gb.chunks_exact(k))
        {
            let dot = sr.iter().zip(gr).fold(T::ZERO, |a, (&sv, &gv)| a + sv * gv);
            for ((o, &sv), &gv) in dzr.iter_mut().zip(sr).zip(gr) {
                *o = sv * (gv - dot);
            }
        }
        // Head mix, normalisation and Student-t backward in one pass, written over the
        // distances (replaces the rules of matmul with w ⊗ I_K and of the matmul that
        // built it, of div and sum_rows, and of student_t):
        // c_h = Σ_j ḡz_j·n_hj, w̄_h += c_h, d̄_hj = −(p/τ)·w_h·(ḡz_j − c_h)·n_hj/(1 + d_hj/τ).
        let d = &mut sc.fwd.d[..m * hk];
        let n_all = &sc.fwd.q[..m * hk];
        for ((drow, nrow), dzr) in d
            .chunks_exact_mut(hk)
            .zip(n_all.chunks_exact(hk))
            .zip(dz.chunks_exact(k))
        {
            for (((dh, nh), &wh), dwh) in drow
                .chunks_exact_mut(k)
                .zip(nrow.chunks_exact(k))
                .zip(w.conv)
                .zip(dw.iter_mut())
            {
                let c = dzr.iter().zip(nh).fold(T::ZERO, |a, (&g, &nv)| a + g * nv);
                *dwh += c;
                let a = -(p * inv_tau) * wh;
                for ((dv, &nv), &g) in dh.iter_mut().zip(nh).zip(dzr) {
                    *dv = a * (g - c) * nv / (T::ONE + *dv * inv_tau);
                }
            }
        }
        // Distances' backward (replaces the rules of add, clamp_min, and the matmul,
        // scale, square and sum_rows that built ‖x‖², ‖k‖² and −2·x·kᵀ):
        // Σ_rows d̄ for ‖k‖²'s part of k̄; k̄ += −2·D̄ᵀ·X.
        let drows = &mut sc.drow[..m];
        for (r, drow) in drows.iter_mut().zip(d.chunks_exact(hk)) {
            let mut acc = T::ZERO;
            for (sum, &v) in dsum.iter_mut().zip(drow) {
                *sum += v;
                acc += v;
            }
            *r = acc;
        }
        gemm(
            &GemmShape::with_trans(hk, f, m, true, false),
            -two,
            d,
            xb,
            T::ONE,
            dk_cross,
        );
        // x̄ = −2·D̄·K + 2·x·Σ_hj d̄_hj, rows of this block only.
        if let Some(dx) = dxs.as_deref_mut() {
            let dxb = &mut dx[b * BLOCK * f..b * BLOCK * f + m * f];
            gemm(
                &GemmShape::with_trans(m, f, hk, false, false),
                -two,
                d,
                &w.keys[..hk * f],
                T::ZERO,
                dxb,
            );
            for ((o, x), &r) in dxb
                .chunks_exact_mut(f)
                .zip(xb.chunks_exact(f))
                .zip(drows.iter())
            {
                for (ov, &xv) in o.iter_mut().zip(x) {
                    *ov += two * r * xv;
                }
            }
        }
    }
}

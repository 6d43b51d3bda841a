//! The fused Hessian-vector-product engine of the adjoint pass.
//!
//! # What it computes
//!
//! The adjoint pass (`adjoint.rs`) reverses the inner steps `y_{t+1} = y_t + m_t`,
//! `m_t = μ·m_{t−1} − η·∇_y E(y_t)`. Each reverse step needs, for a vector `v`
//! (`[S, out_channels]`, one row per set), the gradient of
//!
//! ```text
//! φ(y, θ, x) = ⟨∇_y E_F(y), v⟩,      E_F(y) = Σ_i c_i · F(x_i, y_{s(i)}),   c_i = 1/|s(i)|
//! ```
//!
//! with respect to `y`, every parameter `θ` of the potential and every `x_i` (the
//! regulariser's part of `E` is closed form and stays in `adjoint.rs`). On a tape this
//! is: record `F`, differentiate with `create_graph`, take `⟨·, v⟩`, differentiate
//! again — about fifteen passes over `[rows, width]` per LayerNorm, each allocating.
//! Here it is written out by hand, one block of elements at a time.
//!
//! # The derivation: reverse over forward
//!
//! `φ` is the directional derivative of `E_F` along `v` in `y`:
//! `φ = Σ_i c_i · Ḟ_i`, where `Ḟ` is the *tangent* of `F` when `y` moves along `v`
//! (`x` and `θ` held). So `φ` is itself a computation — the forward pass of `F`
//! carried with a tangent (forward mode) — and `∇φ` is the reverse pass of that
//! computation. Every variable `w` of the forward pass gets a tangent `ẇ`; in the
//! reverse pass every variable gets two adjoints: `w̄` for the primal `w` and `ẇ̄` for
//! its tangent.
//!
//! The potential, for one element, with `A = [x, y]·W_inᵀ + b_in` the pre-activations
//! of every map that reads the raw input (the first block's linear `a` and the
//! `res_trans` maps `r_j`), hidden sizes `h_1 .. h_L`:
//!
//! ```text
//! p_1 = a,   p_i = W_i·z_{i−1} + b_i                      (Linear)
//! x̂_i = (p_i − mean p_i)·σ_i,  σ_i = (var p_i + ε)^−½     (LayerNorm, normalisation)
//! u_i = γ_i ⊙ x̂_i + β_i                                   (LayerNorm, affine)
//! t_i = tanh(u_i)
//! z_i = t_i + r_{i−1}                                     (res_trans skip)
//! F   = w_f·z_L + b_f + r_L        (L = 0: F = a + r_0)
//! ```
//!
//! **Forward (primal and tangent).** Only the `y` columns move, so
//! `Ȧ = (v·W_yᵀ)[s(i)]`: one GEMM on set rows, spread to elements. Then, differentiating
//! each line (`n = h_i`; means are over a row):
//!
//! ```text
//! ṗ_1 = ȧ,   ṗ_i = W_i·ż_{i−1}                  (no bias: it does not move)
//! α   = mean(x̂ ⊙ ṗ)
//! x̂̇   = σ·(ṗ − mean ṗ − x̂·α)                    (σ̇ = −σ²·α folded in)
//! u̇   = γ ⊙ x̂̇
//! ṫ   = (1 − t²) ⊙ u̇
//! ż   = ṫ + ṙ
//! Ḟ   = w_f·ż_L + ṙ_L
//! ```
//!
//! The `x̂̇` line: `var` moves by `2·mean((p − μ)·ṗ) = 2α/σ`, so `σ̇ = −½σ³·2α/σ = −σ²α`
//! and `x̂̇ = (ṗ − mean ṗ)·σ + (p − μ)·σ̇`. Its operator `ṗ ↦ x̂̇` is the LayerNorm
//! Jacobian `J = σ(I − 11ᵀ/n − x̂x̂ᵀ/n)`, which is symmetric.
//!
//! **Reverse, tangent adjoints.** `Ḟ` is linear in the tangents with the same
//! Jacobians as `F`, so the tangents' adjoints run exactly the first-order backward
//! pass from `Ḟ̄ = c`: `ż̄_L = c·w_f`, `ū̇̄ = (1 − t²)⊙ż̄`, `q := x̂̇̄ = γ⊙ū̇̄`,
//! `ṗ̄ = J·q` (`J` symmetric), `ż̄_{i−1} = W_iᵀ·ṗ̄`, `ṙ̄ = ż̄`. At the input they
//! give `δ := Ǡ = ∂(c·F)/∂A`, which does not depend on `v`.
//!
//! **Reverse, primal adjoints: the second-order terms.** `φ` depends on `F` only
//! through `Ḟ`, so `z̄_L = 0` and every primal adjoint comes from a primal value
//! that a tangent line reads:
//!
//! ```text
//! ṫ = (1 − t²)⊙u̇            →  t̄ = z̄ − 2·t⊙u̇⊙ż̄           (z̄ from the layer above)
//! t = tanh u                 →  ū = (1 − t²)⊙t̄
//! u̇ = γ⊙x̂̇, u = γ⊙x̂ + β     →  γ̄ += x̂⊙ū + x̂̇⊙ū̇̄,  β̄ += ū
//! x̂̇ = σ(ṗ − mean ṗ − x̂α)    →  x̂̄ = γ⊙ū − σα·q − σ·mean(q⊙x̂)·ṗ,   σ̄ = ⟨q, x̂̇⟩/σ
//! x̂, σ from p               →  p̄ = σ·(x̂̄ − mean x̂̄ − x̂·(mean(x̂⊙x̂̄) + σ̄σ/n))
//! p_i = W_i z + b_i         →  z̄_{i−1} = W_iᵀ p̄,  b̄_i += p̄
//! ṗ_i = W_i ż                →  W̄_i += p̄·zᵀ + ṗ̄·żᵀ
//! z_i = t + r, F            →  r̄_{i−1} = z̄_i,  r̄_L = 0;   w̄_f += c·ż_L
//! ```
//!
//! (`x̂̄`: `∂/∂x̂_j Σ_k q_k x̂̇_k = −σαq_j − σṗ_j⟨q, x̂⟩/n`. `p̄`: the LayerNorm
//! backward for `x̂̄`, plus `σ̄·∂σ/∂p = −σ̄σ²x̂/n`, folded into the same row pass.)
//! At the input they give `Ā := ∂φ/∂A` per element. Then, with `A = x·W_xᵀ + b_in +
//! (y·W_yᵀ)[s]` and `Ȧ = (v·W_yᵀ)[s]`:
//!
//! ```text
//! x̄_i = Ā_i·W_x,    W̄_x += Āᵀ·x,    b̄_in += Σ_i Ā_i
//! ȳ_s += (Σ_{i∈s} Ā_i)·W_y,   W̄_y += (Σ_{i∈s} Ā_i)ᵀ·y_s + (Σ_{i∈s} δ_i)ᵀ·v_s
//! ```
//!
//! # How it runs
//!
//! Elements are sorted by set. `x·W_xᵀ + b_in` for every input map is computed once
//! (the maps stacked, width `H`); per reverse step, `[y; v]·W_yᵀ` is one GEMM on set
//! rows. Blocks of [`BLOCK_ROWS`] elements then run the forward (primal and tangent
//! stacked as `2·rows` GEMM rows, so each linear is one GEMM), and the reverse (again
//! one GEMM per linear for `[p̄; ṗ̄]`, one for `W̄_i`). Each LayerNorm/tanh stage is
//! one row sweep before the tanh kernel and one after it, forward and reverse; a row
//! stays in L1 during its sweep.
//!
//! Blocks are grouped by [`GROUP_BLOCKS`]. The blocks of a group may run on several
//! threads (when the work pays for it, see [`super::threads_for`]); each writes its
//! `Ā`, `δ` rows and its own partial parameter gradients. The group is then reduced
//! on the calling thread in block and element order, so the result does not depend on
//! the number of threads. The `x` GEMMs run per group.

use alloc::vec;
use alloc::vec::Vec;

use readout_core::Real;
use readout_kernels::elementwise::{Unary, unary};
use readout_kernels::gemm::{GemmShape, gemm};

use super::super::workspace::Workspace;
use super::net::{NormRef, PotentialNet};
use crate::module::LAYER_NORM_EPS;

/// Elements per block. With `2·rows` GEMM rows, a block's linear stays under the
/// GEMM's own threading threshold up to widths of about 180, so blocks that run in
/// parallel do not split their GEMMs again.
const BLOCK_ROWS: usize = 64;
/// Blocks per group: the unit of parallel work between two reductions.
const GROUP_BLOCKS: usize = 16;

/// Gradients in the shape of PyG's `ResNetPotential`: `(weight, bias)` per module:
/// `linears` are the blocks' linears then the final one, `norms` the blocks' norms.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PotentialGrads<T> {
    pub(crate) linears: Vec<(Vec<T>, Vec<T>)>,
    pub(crate) norms: Vec<(Vec<T>, Vec<T>)>,
    pub(crate) res_trans: Vec<(Vec<T>, Vec<T>)>,
}

/// `Σ a` with eight independent partial sums (vectorisable, and no long chain of
/// dependent adds).
fn sum<T: Real>(a: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let mut chunks = a.chunks_exact(8);
    for c in &mut chunks {
        for (s, &v) in acc.iter_mut().zip(c) {
            *s += v;
        }
    }
    let tail = chunks.remainder().iter().fold(T::ZERO, |s, &v| s + v);
    acc.iter().fold(tail, |s, &v| s + v)
}

/// `⟨a, b⟩`, summed like [`sum`].
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &u), &w) in acc.iter_mut().zip(x).zip(y) {
            *s += u * w;
        }
    }
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::ZERO, |s, (&u, &w)| s + u * w);
    acc.iter().fold(tail, |s, &v| s + v)
}

fn add_to<T: Real>(acc: &mut [T], x: &[T]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Where the hidden blocks' parameter gradients sit in one flat partial-gradient
/// vector (each block of elements fills its own; they are added in block order).
#[derive(Clone, Debug)]
struct HiddenLayout {
    /// Offsets of `W_i` (`[h_i, h_{i−1}]`) and `b_i`, for `i ≥ 1` (index 0 unused).
    lin: Vec<(usize, usize)>,
    /// Offsets of `γ_i`, `β_i`.
    norm: Vec<(usize, usize)>,
    /// Offset of the last linear's weight `w_f` (`[h_L]`).
    w_final: usize,
    len: usize,
}

impl HiddenLayout {
    fn new(hidden: &[usize]) -> Self {
        let mut at = 0;
        let mut take = |n: usize| {
            let o = at;
            at += n;
            o
        };
        let mut lin = vec![(0, 0)];
        let mut norm = Vec::new();
        for (i, &h) in hidden.iter().enumerate() {
            if i > 0 {
                lin.push((take(h * hidden[i - 1]), take(h)));
            }
            norm.push((take(h), take(h)));
        }
        let w_final = take(hidden.last().copied().unwrap_or(0));
        HiddenLayout {
            lin,
            norm,
            w_final,
            len: at,
        }
    }
}

/// One block's buffers (per thread), sized for [`BLOCK_ROWS`] rows.
struct Scratch<T> {
    /// `A = x·W_xᵀ + b_in + (y·W_yᵀ)[s]` and its tangent `Ȧ`, `[rows, H]` each.
    a: Vec<T>,
    a_dot: Vec<T>,
    /// Per hidden block `i`: `[p; ṗ]` (`[2·rows, h_i]`), `x̂`, `x̂̇`, `t`, and per row
    /// `σ` and `α = mean(x̂ ⊙ ṗ)`.
    pre: Vec<Vec<T>>,
    xhat: Vec<Vec<T>>,
    xhat_dot: Vec<Vec<T>>,
    t: Vec<Vec<T>>,
    rstd: Vec<Vec<T>>,
    alpha: Vec<Vec<T>>,
    /// `[z_i; ż_i]` (`[2·rows, h_i]`) at index `i + 1`: the input of block `i + 1`,
    /// or of the last linear (index 0 unused).
    zz: Vec<Vec<T>>,
    /// The reverse pass's `[z̄; ż̄]` and `[p̄; ṗ̄]`, `[2·rows, max h]`.
    zbar: Vec<T>,
    pbar: Vec<T>,
    /// One row of scratch, and the pre-tanh values of a block.
    row_a: Vec<T>,
    row_b: Vec<T>,
    u: Vec<T>,
}

impl<T: Real> Scratch<T> {
    /// How many values [`Scratch::new`] allocates (the cost of one more thread).
    fn len(width: usize, hidden: &[usize], rows: usize) -> usize {
        let hmax = hidden.iter().copied().max().unwrap_or(0);
        let per_block: usize = hidden.iter().map(|&h| 7 * rows * h + 2 * rows).sum();
        2 * rows * width + per_block + 5 * rows * hmax + 2 * hmax
    }

    fn new(width: usize, hidden: &[usize], rows: usize, ws: &mut Workspace<T>) -> Self {
        let hmax = hidden.iter().copied().max().unwrap_or(0);
        let mut per = |f: usize| hidden.iter().map(|&h| ws.zeros(f * h)).collect();
        let (pre, xhat, xhat_dot, t) = (per(2 * rows), per(rows), per(rows), per(rows));
        let mut zz = vec![Vec::new()];
        zz.extend(hidden.iter().map(|&h| ws.zeros(2 * rows * h)));
        Scratch {
            a: ws.zeros(rows * width),
            a_dot: ws.zeros(rows * width),
            pre,
            xhat,
            xhat_dot,
            t,
            rstd: hidden.iter().map(|_| ws.zeros(rows)).collect(),
            alpha: hidden.iter().map(|_| ws.zeros(rows)).collect(),
            zz,
            zbar: ws.zeros(2 * rows * hmax),
            pbar: ws.zeros(2 * rows * hmax),
            row_a: ws.zeros(hmax),
            row_b: ws.zeros(hmax),
            u: ws.zeros(rows * hmax),
        }
    }

    /// Gives every buffer back to `ws`.
    fn put_back(self, ws: &mut Workspace<T>) {
        let lists = [
            self.pre,
            self.xhat,
            self.xhat_dot,
            self.t,
            self.rstd,
            self.alpha,
            self.zz,
        ];
        let singles = [
            self.a, self.a_dot, self.zbar, self.pbar, self.row_a, self.row_b, self.u,
        ];
        for v in lists.into_iter().flatten().chain(singles) {
            ws.put(v);
        }
    }
}

/// What one block writes: `Ā` and `δ` of its rows (`[rows, H]` each) and its partial
/// hidden-parameter gradients (flat, [`HiddenLayout`]).
struct BlockOut<'o, T> {
    abar: &'o mut [T],
    delta: &'o mut [T],
    hidden: &'o mut [T],
}

/// The read-only part of the engine: the weights laid out for blocks, the sorted
/// elements and the `x` part of the input maps.
struct Net<'a, T> {
    /// The potential's weights (the input maps stacked, width `H`).
    w: PotentialNet<'a, T>,
    layout: HiddenLayout,
    /// Elements sorted by set: `x` rows, each one's set, and `1/|set|` per set.
    x: &'a [T],
    set_of: &'a [usize],
    inv_count: Vec<T>,
    /// `x·W_xᵀ + b_in`, `[N, H]`.
    xw: Vec<T>,
}

/// Gradients accumulated over the reverse steps, in the engine's layout.
struct Accumulated<T> {
    wx: Vec<T>,
    wy: Vec<T>,
    b_in: Vec<T>,
    hidden: Vec<T>,
    /// `x̄` of the sorted elements, `[N, cin]`.
    x: Vec<T>,
}

/// Buffers reused by every reverse step.
struct Buffers<T> {
    /// `y·W_yᵀ` then `v·W_yᵀ`, `[S, H]` each.
    yw: Vec<T>,
    vw: Vec<T>,
    /// `Σ_{i∈s} Ā_i` and `Σ_{i∈s} δ_i` per set, `[S, H]`.
    abar_sets: Vec<T>,
    delta_sets: Vec<T>,
    /// `Ā`, `δ` of a group's elements, and one partial gradient per block.
    abar: Vec<T>,
    delta: Vec<T>,
    partials: Vec<Vec<T>>,
    /// One per thread.
    scratch: Vec<Scratch<T>>,
    scratch_rows: usize,
}

/// The fused Hessian-vector-product engine (see the module documentation). Built once
/// per reverse pass; [`HvpEngine::add_hvp`] once per reverse step; then
/// [`HvpEngine::finish`].
pub(crate) struct HvpEngine<'a, T> {
    net: Net<'a, T>,
    acc: Accumulated<T>,
    buf: Buffers<T>,
    /// Where the buffers come from and go back to (the layer's, kept across calls).
    ws: &'a mut Workspace<T>,
}

impl<'a, T: Real> HvpEngine<'a, T> {
    /// An engine for the potential `w` on elements sorted by set: `x` (`[N, cin]`),
    /// `set_of[i]` (non-decreasing) and the sets' boundaries `ptr` (`S + 1` entries),
    /// with its buffers from `ws`.
    pub(crate) fn new(
        w: PotentialNet<'a, T>,
        x: &'a [T],
        set_of: &'a [usize],
        ptr: &[usize],
        ws: &'a mut Workspace<T>,
    ) -> Self {
        let (cin, cout, width) = (w.cin, w.cout, w.width);
        let n = set_of.len();
        let sets = ptr.len() - 1;
        // x·W_xᵀ + b_in, once for every reverse step.
        let mut xw = ws.zeros(n * width);
        for row in xw.chunks_exact_mut(width) {
            row.copy_from_slice(&w.b_in);
        }
        gemm(
            &GemmShape::with_trans(n, width, cin, false, true),
            T::ONE,
            x,
            &w.wx,
            T::ONE,
            &mut xw,
        );
        let inv_count = ptr
            .windows(2)
            .map(|s| match s[1] - s[0] {
                0 => T::ZERO,
                k => T::ONE / T::from_usize(k),
            })
            .collect();
        let layout = HiddenLayout::new(&w.hidden);
        let group_rows = n.min(GROUP_BLOCKS * BLOCK_ROWS);
        let blocks = group_rows.div_ceil(BLOCK_ROWS);
        let acc = Accumulated {
            wx: vec![T::ZERO; width * cin],
            wy: vec![T::ZERO; width * cout],
            b_in: vec![T::ZERO; width],
            hidden: vec![T::ZERO; layout.len],
            x: ws.zeros(n * cin),
        };
        let buf = Buffers {
            yw: ws.zeros(sets * width),
            vw: ws.zeros(sets * width),
            abar_sets: ws.zeros(sets * width),
            delta_sets: ws.zeros(sets * width),
            abar: ws.zeros(group_rows * width),
            delta: ws.zeros(group_rows * width),
            partials: (0..blocks).map(|_| ws.zeros(layout.len)).collect(),
            scratch: Vec::new(),
            scratch_rows: n.min(BLOCK_ROWS),
        };
        let net = Net {
            w,
            layout,
            x,
            set_of,
            inv_count,
            xw,
        };
        HvpEngine { net, acc, buf, ws }
    }

    /// Adds `∇_{θ,x} ⟨∇_y E_F(y), v⟩` to the engine's gradients and its `∇_y` to
    /// `y_bar`, for `y`, `v` and `y_bar` of `[S, out_channels]`.
    pub(crate) fn add_hvp(&mut self, y: &[T], v: &[T], y_bar: &mut [T]) {
        let net = &self.net;
        let (h, cout) = (net.w.width, net.w.cout);
        let sets = self.buf.yw.len() / h;
        let to_sets = GemmShape::with_trans(sets, h, cout, false, true);
        gemm(&to_sets, T::ONE, y, &net.w.wy, T::ZERO, &mut self.buf.yw);
        gemm(&to_sets, T::ONE, v, &net.w.wy, T::ZERO, &mut self.buf.vw);
        self.buf.abar_sets.fill(T::ZERO);
        self.buf.delta_sets.fill(T::ZERO);
        let n = net.set_of.len();
        let mut g0 = 0;
        while g0 < n {
            let g1 = (g0 + GROUP_BLOCKS * BLOCK_ROWS).min(n);
            run_group(net, &mut self.buf, self.ws, g0, g1);
            reduce_group(net, &mut self.buf, &mut self.acc, g0, g1);
            g0 = g1;
        }
        let buf = &self.buf;
        // ȳ += (Σ_s Ā)·W_y
        gemm(
            &GemmShape::new(sets, cout, h),
            T::ONE,
            &buf.abar_sets,
            &net.w.wy,
            T::ONE,
            y_bar,
        );
        // W̄_y += (Σ_s Ā)ᵀ·y + (Σ_s δ)ᵀ·v
        let to_weights = GemmShape::with_trans(h, cout, sets, true, false);
        gemm(
            &to_weights,
            T::ONE,
            &buf.abar_sets,
            y,
            T::ONE,
            &mut self.acc.wy,
        );
        gemm(
            &to_weights,
            T::ONE,
            &buf.delta_sets,
            v,
            T::ONE,
            &mut self.acc.wy,
        );
    }

    /// The accumulated gradients, in [`PotentialGrads`]' shape, and `x̄` of the sorted
    /// elements (`[N, cin]`, to give back to the workspace when read). The engine's
    /// buffers go back to its workspace.
    pub(crate) fn finish(self) -> (PotentialGrads<T>, Vec<T>) {
        let (net, acc) = (&self.net, &self.acc);
        let (cin, cout) = (net.w.cin, net.w.cout);
        let l = net.w.hidden.len();
        // Map `j` of the stacked input maps: rows `off .. off + rows`.
        let unstack = |off: usize, rows: usize| {
            let mut weight = Vec::with_capacity(rows * (cin + cout));
            for r in off..off + rows {
                weight.extend_from_slice(&acc.wx[r * cin..(r + 1) * cin]);
                weight.extend_from_slice(&acc.wy[r * cout..(r + 1) * cout]);
            }
            (weight, acc.b_in[off..off + rows].to_vec())
        };
        let map_rows = |j: usize| net.w.hidden.get(j).copied().unwrap_or(1);
        let flat = |o: usize, len: usize| acc.hidden[o..o + len].to_vec();
        let mut linears = vec![unstack(0, map_rows(0))];
        for i in 1..l {
            let (w, b) = net.layout.lin[i];
            let (hi, hp) = (net.w.hidden[i], net.w.hidden[i - 1]);
            linears.push((flat(w, hi * hp), flat(b, hi)));
        }
        if l > 0 {
            // F's bias does not move ∇_y F: no gradient.
            linears.push((flat(net.layout.w_final, net.w.hidden[l - 1]), vec![T::ZERO]));
        }
        let norms = (0..l)
            .map(|i| {
                let (g, b) = net.layout.norm[i];
                (flat(g, net.w.hidden[i]), flat(b, net.w.hidden[i]))
            })
            .collect();
        let res_trans = (0..=l)
            .map(|j| unstack(net.w.res_off[j], map_rows(j)))
            .collect();
        let grads = PotentialGrads {
            linears,
            norms,
            res_trans,
        };
        let HvpEngine { net, acc, buf, ws } = self;
        let Buffers {
            yw,
            vw,
            abar_sets,
            delta_sets,
            abar,
            delta,
            partials,
            scratch,
            ..
        } = buf;
        for sc in scratch {
            sc.put_back(ws);
        }
        let buffers = [yw, vw, abar_sets, delta_sets, abar, delta, net.xw];
        for v in partials.into_iter().chain(buffers) {
            ws.put(v);
        }
        (grads, acc.x)
    }
}

impl<T: Real> Net<'_, T> {
    /// An estimate of the floating-point operations per element and reverse step (the
    /// hidden GEMMs: forward, `[z̄; ż̄]` and `W̄`, on primal and tangent rows; the row
    /// sweeps; the `x` GEMMs and sums of the group).
    fn flops_per_row(&self) -> usize {
        let pairs: usize = self.w.hidden.windows(2).map(|w| w[0] * w[1]).sum();
        let rows: usize = self.w.hidden.iter().sum();
        12 * pairs + 50 * rows + 4 * self.w.width * (self.w.cin + 2)
    }
}

/// Consecutive blocks of a group that one thread runs, with its buffers.
struct Piece<'p, T> {
    /// The sorted element its first block starts at.
    first_row: usize,
    abar: &'p mut [T],
    delta: &'p mut [T],
    partials: &'p mut [Vec<T>],
    scratch: &'p mut Scratch<T>,
}

/// Runs the blocks of sorted elements `g0 .. g1` (one group), on several threads when
/// the work pays for it: each block writes its own rows of `Ā` and `δ` and its own
/// partial gradient, so the split does not change the result.
fn run_group<T: Real>(
    net: &Net<T>,
    buf: &mut Buffers<T>,
    ws: &mut Workspace<T>,
    g0: usize,
    g1: usize,
) {
    let h = net.w.width;
    let rows = g1 - g0;
    let blocks = rows.div_ceil(BLOCK_ROWS);
    // Blocks of equal size (at most BLOCK_ROWS), so that a group of 100 rows is 50 + 50
    // rather than 64 + 36 and its two threads finish together. The sizes depend on
    // `rows` only: the partial gradients, summed per block, do not change with the
    // number of threads.
    let block_rows = rows.div_ceil(blocks.max(1)).max(1);
    // A thread's first block also pays for its scratch (zeroed) if it has none yet.
    let new_scratch = if buf.scratch.len() < 2 {
        super::CLEARING_FLOPS_PER_VALUE * Scratch::<T>::len(h, &net.w.hidden, buf.scratch_rows)
    } else {
        0
    };
    let threads = super::threads_for(rows * net.flops_per_row(), blocks, new_scratch);
    while buf.scratch.len() < threads {
        buf.scratch
            .push(Scratch::new(h, &net.w.hidden, buf.scratch_rows, ws));
    }
    let per = blocks.div_ceil(threads);
    let (yw, vw) = (&buf.yw[..], &buf.vw[..]);
    let pieces = buf.abar[..rows * h]
        .chunks_mut(per * block_rows * h)
        .zip(buf.delta[..rows * h].chunks_mut(per * block_rows * h))
        .zip(buf.partials[..blocks].chunks_mut(per))
        .zip(buf.scratch.iter_mut())
        .enumerate()
        .map(|(k, (((abar, delta), partials), scratch))| Piece {
            first_row: g0 + k * per * block_rows,
            abar,
            delta,
            partials,
            scratch,
        });
    let run_piece = |piece: Piece<T>| {
        let blocks = piece
            .abar
            .chunks_mut(block_rows * h)
            .zip(piece.delta.chunks_mut(block_rows * h))
            .zip(piece.partials.iter_mut());
        for (j, ((abar, delta), hidden)) in blocks.enumerate() {
            let out = BlockOut {
                abar,
                delta,
                hidden,
            };
            let r0 = piece.first_row + j * block_rows;
            net.block(piece.scratch, yw, vw, r0, out);
        }
    };
    super::run_pieces(pieces, threads > 1, run_piece);
}

/// Adds a group's results to the gradients, on the calling thread, in element and
/// block order: `x̄ = Ā·W_x`, `W̄_x += Āᵀ·x`, `b̄_in += Σ Ā`, the per-set sums of `Ā`
/// and `δ`, and the blocks' partial gradients.
fn reduce_group<T: Real>(
    net: &Net<T>,
    buf: &mut Buffers<T>,
    acc: &mut Accumulated<T>,
    g0: usize,
    g1: usize,
) {
    let (h, cin) = (net.w.width, net.w.cin);
    let rows = g1 - g0;
    let abar = &buf.abar[..rows * h];
    let delta = &buf.delta[..rows * h];
    gemm(
        &GemmShape::new(rows, cin, h),
        T::ONE,
        abar,
        &net.w.wx,
        T::ONE,
        &mut acc.x[g0 * cin..g1 * cin],
    );
    gemm(
        &GemmShape::with_trans(h, cin, rows, true, false),
        T::ONE,
        abar,
        &net.x[g0 * cin..g1 * cin],
        T::ONE,
        &mut acc.wx,
    );
    for ((arow, drow), &s) in abar
        .chunks_exact(h)
        .zip(delta.chunks_exact(h))
        .zip(&net.set_of[g0..g1])
    {
        add_to(&mut acc.b_in, arow);
        add_to(&mut buf.abar_sets[s * h..(s + 1) * h], arow);
        add_to(&mut buf.delta_sets[s * h..(s + 1) * h], drow);
    }
    for p in &buf.partials[..rows.div_ceil(BLOCK_ROWS)] {
        add_to(&mut acc.hidden, p);
    }
}

impl<T: Real> Net<'_, T> {
    /// One block of sorted elements `r0 ..` (as many as `out.abar` has rows): the
    /// forward pass with tangents, then the reverse pass of both (module doc).
    fn block(&self, sc: &mut Scratch<T>, yw: &[T], vw: &[T], r0: usize, out: BlockOut<T>) {
        let h = self.w.width;
        let rows = out.abar.len() / h;
        let l = self.w.hidden.len();
        let eps = T::from_f64(LAYER_NORM_EPS);
        let two = T::from_f64(2.0);
        let set_of = &self.set_of[r0..r0 + rows];
        let Scratch {
            a,
            a_dot,
            pre,
            xhat,
            xhat_dot,
            t,
            rstd,
            alpha,
            zz,
            zbar,
            pbar,
            row_a,
            row_b,
            u,
        } = sc;
        let a = &mut a[..rows * h];
        let a_dot = &mut a_dot[..rows * h];
        // A = x·W_xᵀ + b_in + (y·W_yᵀ)[s],  Ȧ = (v·W_yᵀ)[s]      (replaces: the tape's
        // matmul, gather_rows and add of `InputLinear::apply`, and their tangents)
        let xw = &self.xw[r0 * h..(r0 + rows) * h];
        for (((arow, adrow), xrow), &s) in a
            .chunks_exact_mut(h)
            .zip(a_dot.chunks_exact_mut(h))
            .zip(xw.chunks_exact(h))
            .zip(set_of)
        {
            for ((av, &xv), &yv) in arow.iter_mut().zip(xrow).zip(&yw[s * h..(s + 1) * h]) {
                *av = xv + yv;
            }
            adrow.copy_from_slice(&vw[s * h..(s + 1) * h]);
        }
        let (a, a_dot) = (&*a, &*a_dot);

        // Forward, primal and tangent.
        for i in 0..l {
            let hi = self.w.hidden[i];
            let n = T::from_usize(hi);
            let pre_i = &mut pre[i][..2 * rows * hi];
            if i == 0 {
                for (r, (arow, adrow)) in a.chunks_exact(h).zip(a_dot.chunks_exact(h)).enumerate() {
                    pre_i[r * hi..(r + 1) * hi].copy_from_slice(&arow[..hi]);
                    pre_i[(rows + r) * hi..(rows + r + 1) * hi].copy_from_slice(&adrow[..hi]);
                }
            } else {
                // [p; ṗ] = [z; ż]·W_iᵀ (+ b_i on p)          (replaces: matmul, add)
                let hp = self.w.hidden[i - 1];
                let lin = self.w.lin[i];
                gemm(
                    &GemmShape::with_trans(2 * rows, hi, hp, false, true),
                    T::ONE,
                    &zz[i][..2 * rows * hp],
                    lin.weight,
                    T::ZERO,
                    pre_i,
                );
                for prow in pre_i[..rows * hi].chunks_exact_mut(hi) {
                    add_to(prow, lin.bias);
                }
            }
            let (p, p_dot) = pre_i.split_at(rows * hi);
            let NormRef {
                weight: gamma,
                bias: beta,
            } = self.w.norms[i];
            // Sweep 1: x̂ = (p − mean p)·σ, u = γ⊙x̂ + β        (replaces: layer_norm)
            // (The fused kernel `rows::norm_tanh_rows` computes x̂, σ, t and z in one
            // call, as the inference engine does, but made eq_small's training ~15 %
            // slower here, measured 2026-12-02 and not yet understood: this sweep and
            // the block-wide tanh stay until it is.)
            let centred = &mut row_a[..hi];
            let u = &mut u[..rows * hi];
            for r in 0..rows {
                let prow = &p[r * hi..(r + 1) * hi];
                let mean = sum(prow) / n;
                for (cv, &pv) in centred.iter_mut().zip(prow) {
                    *cv = pv - mean;
                }
                // Re-centred with the residues' mean: `mean` is rounded by up to half
                // an ulp of itself, which on a row of small spread leaves Σ x̂ ≠ 0 and
                // breaks the cancellations of the sweeps below (fuzz finding O3; the
                // correction goes on the residue, where it is representable).
                let c = sum(centred) / n;
                for cv in centred.iter_mut() {
                    *cv -= c;
                }
                let s = T::ONE / (dot(centred, centred) / n + eps).sqrt();
                rstd[i][r] = s;
                let xrow = &mut xhat[i][r * hi..(r + 1) * hi];
                let urow = &mut u[r * hi..(r + 1) * hi];
                for ((((xv, uv), &cv), &g), &b) in xrow
                    .iter_mut()
                    .zip(urow)
                    .zip(&*centred)
                    .zip(gamma)
                    .zip(beta)
                {
                    *xv = cv * s;
                    *uv = *xv * g + b;
                }
            }
            // t = tanh u                                          (replaces: tanh)
            unary(Unary::Tanh, u, &mut t[i][..rows * hi]);
            // Sweep 2, tangents: x̂̇ = σ(ṗ − mean ṗ − x̂α), ż = (1 − t²)⊙γ⊙x̂̇ + ṙ, and
            // z = t + r                 (replaces: the recorded backward of layer_norm,
            // tanh and add, differentiated again)
            let off = self.w.res_off[i];
            let (z, z_dot) = zz[i + 1][..2 * rows * hi].split_at_mut(rows * hi);
            for r in 0..rows {
                let span = r * hi..(r + 1) * hi;
                let (pd, xr, tr) = (
                    &p_dot[span.clone()],
                    &xhat[i][span.clone()],
                    &t[i][span.clone()],
                );
                let s = rstd[i][r];
                let mean_pd = sum(pd) / n;
                let al = dot(xr, pd) / n;
                alpha[i][r] = al;
                let res = &a[r * h + off..r * h + off + hi];
                let res_dot = &a_dot[r * h + off..r * h + off + hi];
                let xd = &mut xhat_dot[i][span.clone()];
                let (zr, zdr) = (&mut z[span.clone()], &mut z_dot[span]);
                for k in 0..hi {
                    let x_dot = s * (pd[k] - mean_pd - xr[k] * al);
                    xd[k] = x_dot;
                    zr[k] = tr[k] + res[k];
                    zdr[k] = (T::ONE - tr[k] * tr[k]) * gamma[k] * x_dot + res_dot[k];
                }
            }
        }

        // Reverse. The last linear: ż̄_L = c·w_f, z̄_L = 0, w̄_f += c·ż_L.
        let BlockOut {
            abar,
            delta,
            hidden: part,
        } = out;
        part.fill(T::ZERO);
        if l > 0 {
            let hl = self.w.hidden[l - 1];
            let z_dot = &zz[l][rows * hl..2 * rows * hl];
            let (zb, zdb) = zbar[..2 * rows * hl].split_at_mut(rows * hl);
            zb.fill(T::ZERO);
            let wf_bar = &mut part[self.layout.w_final..self.layout.w_final + hl];
            for ((zdrow, zdbrow), &s) in z_dot
                .chunks_exact(hl)
                .zip(zdb.chunks_exact_mut(hl))
                .zip(set_of)
            {
                let c = self.inv_count[s];
                for ((wb, zb), (&zd, &wf)) in wf_bar
                    .iter_mut()
                    .zip(zdbrow)
                    .zip(zdrow.iter().zip(self.w.w_final))
                {
                    *wb += c * zd;
                    *zb = c * wf;
                }
            }
        }
        for i in (0..l).rev() {
            let hi = self.w.hidden[i];
            let n = T::from_usize(hi);
            let off = self.w.res_off[i];
            let gamma = self.w.norms[i].weight;
            let (zb, zdb) = zbar[..2 * rows * hi].split_at(rows * hi);
            let (pb, pdb) = pbar[..2 * rows * hi].split_at_mut(rows * hi);
            let (g_off, _) = self.layout.norm[i];
            let (gamma_bar, beta_bar) = part[g_off..g_off + 2 * hi].split_at_mut(hi);
            let p_dot = &pre[i][rows * hi..2 * rows * hi];
            for r in 0..rows {
                let span = r * hi..(r + 1) * hi;
                let (zbr, zdbr) = (&zb[span.clone()], &zdb[span.clone()]);
                // The skip: r̄ = z̄, ṙ̄ = ż̄                    (replaces: add's backward)
                abar[r * h + off..r * h + off + hi].copy_from_slice(zbr);
                delta[r * h + off..r * h + off + hi].copy_from_slice(zdbr);
                let (tr, xr, xdr) = (
                    &t[i][span.clone()],
                    &xhat[i][span.clone()],
                    &xhat_dot[i][span.clone()],
                );
                let (s, al) = (rstd[i][r], alpha[i][r]);
                // Sweep 1: q = x̂̇̄ = γ⊙(1 − t²)⊙ż̄, t̄ = z̄ − 2t⊙u̇⊙ż̄, ū = (1 − t²)⊙t̄,
                // γ̄, β̄                (replaces: tanh's and the affine part's
                // recorded backward, and their backward)
                let q = &mut row_a[..hi];
                let ub = &mut row_b[..hi];
                for k in 0..hi {
                    let tk = tr[k];
                    let slope = T::ONE - tk * tk;
                    let ud_bar = slope * zdbr[k];
                    q[k] = gamma[k] * ud_bar;
                    let t_bar = zbr[k] - two * tk * gamma[k] * xdr[k] * zdbr[k];
                    let u_bar = slope * t_bar;
                    ub[k] = u_bar;
                    gamma_bar[k] += xr[k] * u_bar + xdr[k] * ud_bar;
                    beta_bar[k] += u_bar;
                }
                let mean_q = sum(q) / n;
                let mean_qx = dot(q, xr) / n;
                let q_xd = dot(q, xdr);
                // Sweep 2: ṗ̄ = σ(q − mean q − x̂·mean(q⊙x̂)) (the LayerNorm backward),
                // x̂̄ = γ⊙ū − σα·q − σ·mean(q⊙x̂)·ṗ (left in `ub`)
                let pd = &p_dot[span.clone()];
                let pdbr = &mut pdb[span.clone()];
                for k in 0..hi {
                    pdbr[k] = s * (q[k] - mean_q - xr[k] * mean_qx);
                    ub[k] = gamma[k] * ub[k] - s * al * q[k] - s * mean_qx * pd[k];
                }
                // Sweep 3: p̄ = σ(x̂̄ − mean x̂̄ − x̂·(mean(x̂⊙x̂̄) + σ̄σ/n)), σ̄σ = ⟨q, x̂̇⟩
                let mean_xb = sum(ub) / n;
                let k_coef = (dot(xr, ub) + q_xd) / n;
                for ((pv, &xb), &xv) in pb[span].iter_mut().zip(&*ub).zip(xr) {
                    *pv = s * (xb - mean_xb - xv * k_coef);
                }
            }
            if i > 0 {
                // W̄_i += [p̄; ṗ̄]ᵀ·[z; ż], b̄_i += Σ p̄, [z̄; ż̄] = [p̄; ṗ̄]·W_i
                // (replaces: matmul's backward, twice over)
                let hp = self.w.hidden[i - 1];
                let (w_off, b_off) = self.layout.lin[i];
                gemm(
                    &GemmShape::with_trans(hi, hp, 2 * rows, true, false),
                    T::ONE,
                    &pbar[..2 * rows * hi],
                    &zz[i][..2 * rows * hp],
                    T::ONE,
                    &mut part[w_off..w_off + hi * hp],
                );
                for prow in pbar[..rows * hi].chunks_exact(hi) {
                    add_to(&mut part[b_off..b_off + hi], prow);
                }
                gemm(
                    &GemmShape::new(2 * rows, hp, hi),
                    T::ONE,
                    &pbar[..2 * rows * hi],
                    self.w.lin[i].weight,
                    T::ZERO,
                    &mut zbar[..2 * rows * hp],
                );
            } else {
                for r in 0..rows {
                    abar[r * h..r * h + hi].copy_from_slice(&pbar[r * hi..(r + 1) * hi]);
                    delta[r * h..r * h + hi]
                        .copy_from_slice(&pbar[(rows + r) * hi..(rows + r + 1) * hi]);
                }
            }
        }
        // F's own input maps: Ḟ̄ = c reaches res_trans[L] (and, without hidden blocks,
        // the first linear) as δ; F itself is not in φ, so Ā = 0 there.
        let last = self.w.res_off[l];
        for ((arow, drow), &s) in abar
            .chunks_exact_mut(h)
            .zip(delta.chunks_exact_mut(h))
            .zip(set_of)
        {
            let c = self.inv_count[s];
            arow[last] = T::ZERO;
            drow[last] = c;
            if l == 0 {
                arow[0] = T::ZERO;
                drow[0] = c;
            }
        }
    }
}

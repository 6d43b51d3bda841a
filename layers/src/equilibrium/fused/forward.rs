//! The inference path's engine: the inner loop with eager gradients, fused and
//! row-blocked, with no tape.
//!
//! Each inner step needs only `g = ∂E/∂y`. Per step it computes:
//!
//! 1. `YW = y·W_yᵀ` for every linear map that reads the raw input `[x, y[index]]`.
//!    Their `x` part `XW = x·W_xᵀ + b` was computed once per forward. Both are
//!    `[·, H]`, where `H` is the total width of those maps (the first block plus
//!    every `res_trans`).
//! 2. For each block of [`CHUNK`] elements, in cache: `A = XW + YW[set]`, the
//!    potential's forward pass, and its backward pass from `∂E/∂F = 1/|set|`, which
//!    gives `∂E/∂A` per element.
//! 3. `∂E/∂YW` per set: the sum of `∂E/∂A` over the set's elements. The block's
//!    partial sums are added in block order, so the result does not depend on the
//!    thread count.
//! 4. `g = (∂E/∂YW)·W_y + 2·softplus(λ)/S · y`, then the momentum update.
//!
//! Elements are first sorted by set (a stable permutation). That makes any `index`
//! a CSR layout, so each block touches a contiguous range of sets.
//!
//! The weights come from the typed modules ([`EquilibriumParams`]) by field. Each step
//! below names the tape op(s) of the reference path (`reference.rs`, `potential.rs`)
//! it replaces.

use alloc::vec;
use alloc::vec::Vec;

use readout_core::Real;
use readout_kernels::elementwise::Unary;
use readout_kernels::gemm::{GemmShape, gemm};
use readout_kernels::rows::{
    NormTanhOut, NormTanhSaved, Skip, norm_tanh_backward_rows, norm_tanh_rows,
};

use super::super::params::{EquilibriumParams, Sizes};
use super::super::workspace::Workspace;
use super::net::{LinearRef, PotentialNet as Net};
use crate::error::LayerError;
use crate::module::LAYER_NORM_EPS;
use crate::param::Bound;
use crate::segments::Layout;

/// Elements per block: small enough that a block's activations stay in L2.
const CHUNK: usize = 128;
/// The fewest elements a block split off for another thread may have: below that,
/// the GEMMs on its rows run too far under their speed.
const MIN_SPLIT_ROWS: usize = 16;
/// Blocks per group: the unit of parallel work between two sequential sums into the
/// sets (its `∂E/∂A` buffer is `GROUP · CHUNK · H` values).
const GROUP: usize = 16;

/// The values of bound parameters, read from the tape, in their modules.
pub(crate) fn bound_values<T: Real>(
    tape: &readout_core::Tape<T>,
    sizes: &Sizes,
    params: &Bound,
) -> Result<EquilibriumParams<Vec<T>>, LayerError> {
    let mut out = Vec::with_capacity(params.vars().len());
    for &v in params.vars() {
        out.push(tape.value(v)?.data().to_vec());
    }
    EquilibriumParams::from_list(sizes, out)
}

/// The first value of a `[1]` parameter.
fn scalar<T: Real, V: AsRef<[T]>>(p: &V) -> T {
    p.as_ref().first().copied().unwrap_or(T::ZERO)
}

/// An estimate of the floating-point operations per element and inner step: the
/// hidden GEMMs forward and backward, and the LayerNorm/tanh row passes.
fn flops_per_row<T>(net: &Net<T>) -> usize {
    let pairs: usize = net.hidden.windows(2).map(|w| w[0] * w[1]).sum();
    let rows: usize = net.hidden.iter().sum();
    4 * pairs + 30 * rows + 4 * net.width
}

/// Per-block buffers, allocated once per forward (per thread).
struct Scratch<T> {
    a: Vec<T>,
    xhat: Vec<Vec<T>>,
    rstd: Vec<Vec<T>>,
    t: Vec<Vec<T>>,
    z: Vec<T>,
    dz: Vec<T>,
    dpre: Vec<T>,
    da: Vec<T>,
}

impl<T: Real> Scratch<T> {
    /// How many values [`Scratch::new`] takes (the cost of one more thread).
    fn len(net: &Net<T>, rows: usize) -> usize {
        let hmax = net.hidden.iter().copied().max().unwrap_or(1);
        let per_layer: usize = net.hidden.iter().map(|&h| 2 * rows * h + rows).sum();
        2 * rows * net.width + per_layer + 3 * rows * hmax
    }

    /// Buffers for blocks of up to `rows ≤ CHUNK` elements (fewer than `CHUNK` when
    /// the input is smaller: no point clearing pages that will not be used).
    fn new(net: &Net<T>, rows: usize, ws: &mut Workspace<T>) -> Self {
        let hmax = net.hidden.iter().copied().max().unwrap_or(1);
        let per_layer = |ws: &mut Workspace<T>| -> Vec<Vec<T>> {
            net.hidden.iter().map(|&h| ws.zeros(rows * h)).collect()
        };
        Scratch {
            a: ws.zeros(rows * net.width),
            xhat: per_layer(ws),
            rstd: net.hidden.iter().map(|_| ws.zeros(rows)).collect(),
            t: per_layer(ws),
            z: ws.zeros(rows * hmax),
            dz: ws.zeros(rows * hmax),
            dpre: ws.zeros(rows * hmax),
            da: ws.zeros(rows * net.width),
        }
    }

    /// Gives every buffer back to `ws`.
    fn put_back(self, ws: &mut Workspace<T>) {
        let per_layer = self.xhat.into_iter().chain(self.rstd).chain(self.t);
        let single = [self.a, self.z, self.dz, self.dpre, self.da];
        for v in per_layer.chain(single) {
            ws.put(v);
        }
    }
}

/// Elements sorted by set, with CSR boundaries.
pub(crate) struct Sorted<T> {
    /// `x` rows in set order, `[N, cin]`.
    pub(crate) x: Vec<T>,
    /// `order[k]` is the original row of sorted element `k`.
    pub(crate) order: Vec<usize>,
    /// Set boundaries, `S + 1` entries.
    pub(crate) ptr: Vec<usize>,
    /// Set of each (sorted) element.
    pub(crate) set_of: Vec<usize>,
}

/// What the adjoint pass needs from the forward: `y_t` for `t = 0 .. T` (the last is
/// the output), and `m_t`, `g_t` for `t = 0 .. T − 1`.
pub(crate) struct Trajectory<T> {
    pub(crate) ys: Vec<Vec<T>>,
    pub(crate) ms: Vec<Vec<T>>,
    pub(crate) gs: Vec<Vec<T>>,
}

pub(crate) fn sort_by_set<T: Real>(x: &[T], cin: usize, layout: &Layout) -> Sorted<T> {
    let (order, ptr): (Vec<usize>, Vec<usize>) = match layout {
        Layout::Ptr { ptr } => ((0..*ptr.last().unwrap_or(&0)).collect(), ptr.clone()),
        Layout::Index { index, dim_size } => {
            let mut counts = vec![0usize; dim_size + 1];
            for &s in index {
                counts[s + 1] += 1;
            }
            for s in 0..*dim_size {
                counts[s + 1] += counts[s];
            }
            let mut next = counts.clone();
            let mut order = vec![0usize; index.len()];
            for (i, &s) in index.iter().enumerate() {
                order[next[s]] = i;
                next[s] += 1;
            }
            (order, counts)
        }
    };
    let mut xs = Vec::with_capacity(order.len() * cin);
    for &i in &order {
        xs.extend_from_slice(&x[i * cin..(i + 1) * cin]);
    }
    let mut set_of = vec![0usize; order.len()];
    for s in 0..ptr.len() - 1 {
        set_of[ptr[s]..ptr[s + 1]].fill(s);
    }
    Sorted {
        x: xs,
        order,
        ptr,
        set_of,
    }
}

/// Runs the inner optimisation with eager gradients and returns `y`, `[S, cout]`.
pub(crate) fn solve<T: Real, V: AsRef<[T]>>(
    sizes: &Sizes,
    p: &EquilibriumParams<V>,
    grad_iter: usize,
    x: &[T],
    layout: &Layout,
    ws: &mut Workspace<T>,
) -> Vec<T> {
    let sorted = sort_by_set(x, sizes.cin, layout);
    let mut traj = solve_sorted(sizes, p, grad_iter, &sorted, false, ws);
    traj.ys.pop().unwrap_or_default()
}

/// The inner optimisation on elements already sorted by set. Keeps every `y_t`, `m_t`
/// and `g_t` when `keep` is set, else only the final `y`.
pub(crate) fn solve_sorted<T: Real, V: AsRef<[T]>>(
    sizes: &Sizes,
    p: &EquilibriumParams<V>,
    grad_iter: usize,
    sorted: &Sorted<T>,
    keep: bool,
    ws: &mut Workspace<T>,
) -> Trajectory<T> {
    let net = Net::new(sizes, &p.potential);
    let n = sorted.set_of.len();
    let sets = sorted.ptr.len() - 1;
    let (h, cout) = (net.width, net.cout);
    let lr = scalar(&p.optimizer.lr);
    let mom = scalar(&p.optimizer.mom);
    let lamb = scalar(&p.lamb);
    let (lr, mom, reg) = (
        Unary::Softplus.apply(lr),
        Unary::Sigmoid.apply(mom),
        Unary::Softplus.apply(lamb),
    );
    let reg_coef = if sets > 0 {
        T::from_f64(2.0) * reg / T::from_usize(sets)
    } else {
        T::ZERO
    };

    // x·W_xᵀ + b for every input map, once.
    // Replaces: `InputLinear::hoist` (slice_cols, matmul_with, add) in potential.rs.
    let mut xw = ws.zeros(n * h);
    gemm(
        &GemmShape::with_trans(n, h, net.cin, false, true),
        T::ONE,
        &sorted.x,
        &net.wx,
        T::ZERO,
        &mut xw,
    );
    for row in xw.chunks_exact_mut(h.max(1)) {
        for (v, &b) in row.iter_mut().zip(&net.b_in) {
            *v += b;
        }
    }
    let inv_count: Vec<T> = sorted
        .ptr
        .windows(2)
        .map(|w| {
            if w[1] > w[0] {
                T::ONE / T::from_usize(w[1] - w[0])
            } else {
                T::ZERO
            }
        })
        .collect();

    let mut y = vec![T::ZERO; sets * cout];
    let mut m = vec![T::ZERO; sets * cout];
    let mut yw = ws.zeros(sets * h);
    let mut dyw = ws.zeros(sets * h);
    let mut g = vec![T::ZERO; sets * cout];
    // One scratch per thread that runs blocks; more are made when a group is split.
    let mut scratch = vec![Scratch::new(&net, n.min(CHUNK), ws)];
    let mut group_da = ws.zeros(n.min(GROUP * CHUNK) * h);
    let mut traj = Trajectory {
        ys: Vec::new(),
        ms: Vec::new(),
        gs: Vec::new(),
    };
    for step in 0..grad_iter {
        if keep {
            traj.ys.push(y.clone());
        }
        // YW = y·W_yᵀ. Replaces: matmul_with(y, W_yᵀ) in `InputLinear::apply`.
        gemm(
            &GemmShape::with_trans(sets, h, cout, false, true),
            T::ONE,
            &y,
            &net.wy,
            T::ZERO,
            &mut yw,
        );
        dyw.fill(T::ZERO);
        let mut g0 = 0;
        while g0 < n {
            let g1 = (g0 + GROUP * CHUNK).min(n);
            // A thread without a scratch yet pays for clearing one, once per call:
            // spread over the steps.
            let new_scratch = if scratch.len() < 2 {
                super::CLEARING_FLOPS_PER_VALUE * Scratch::len(&net, CHUNK.min(n))
                    / grad_iter.max(1)
            } else {
                0
            };
            let rows = g1 - g0;
            let threads = super::threads_for(
                rows * flops_per_row(&net),
                rows.div_ceil(MIN_SPLIT_ROWS),
                new_scratch,
            );
            while scratch.len() < threads {
                scratch.push(Scratch::new(&net, CHUNK.min(n), ws));
            }
            // Blocks of equal size, at most CHUNK, and at least one per thread: a group
            // of 100 elements on 2 threads is 50 + 50, one join per step, rather than
            // one block whose GEMMs each split (and whose row sweeps do not). A row's
            // ∂E/∂A does not depend on the other rows of its block, so the split does
            // not change the result.
            let chunk = rows.div_ceil(rows.div_ceil(CHUNK).max(threads));
            let blocks = Blocks {
                chunk,
                net: &net,
                xw: &xw[g0 * h..g1 * h],
                yw: &yw,
                set_of: &sorted.set_of[g0..g1],
                inv_count: &inv_count,
            };
            blocks.run(&mut scratch[..threads], &mut group_da[..(g1 - g0) * h]);
            // Replaces: the backward of `layout.spread` (a scatter-add into the sets).
            // Sum ∂E/∂A into the sets, in element order (the same order whatever the
            // number of threads, so the result does not depend on it).
            for (r, da) in (g0..g1).zip(group_da.chunks_exact(h)) {
                let s = sorted.set_of[r];
                for (acc, &v) in dyw[s * h..(s + 1) * h].iter_mut().zip(da) {
                    *acc += v;
                }
            }
            g0 = g1;
        }
        // g = ∂E/∂YW · W_y + 2·softplus(λ)/S · y
        // Replaces: `tape.grad(e, y)` ending in the backward of matmul_with(y, W_yᵀ) and
        // of `reg` (square, sum_rows, mean, mul) in reference.rs.
        g.copy_from_slice(&y);
        gemm(
            &GemmShape::new(sets, cout, h),
            T::ONE,
            &dyw,
            &net.wy,
            reg_coef,
            &mut g,
        );
        // Replaces: mul(g, lr), mul(m, mom), sub (neg at step 0), add in
        // `EquilibriumParams::record` (reference.rs).
        for ((yi, mi), &gi) in y.iter_mut().zip(m.iter_mut()).zip(&g) {
            let delta = lr * gi;
            *mi = if step == 0 { -delta } else { mom * *mi - delta };
            *yi += *mi;
        }
        if keep {
            traj.ms.push(m.clone());
            traj.gs.push(g.clone());
        }
    }
    traj.ys.push(y);
    for s in scratch {
        s.put_back(ws);
    }
    for v in [xw, yw, dyw, group_da] {
        ws.put(v);
    }
    traj
}

/// A group of consecutive (sorted) elements, run block by block.
struct Blocks<'a, 'p, T> {
    /// Elements per block (at most [`CHUNK`]; the last block may have fewer).
    chunk: usize,
    net: &'a Net<'p, T>,
    /// `x·W_xᵀ + b` of the group's elements, `[rows, H]`.
    xw: &'a [T],
    /// `y·W_yᵀ` of every set.
    yw: &'a [T],
    set_of: &'a [usize],
    inv_count: &'a [T],
}

impl<T: Real> Blocks<'_, '_, T> {
    /// Writes `∂E/∂A` of the group's elements to `da`, `[rows, H]`, one block of
    /// `chunk` elements at a time, split into one run of consecutive blocks per
    /// scratch of `scratch` (one per thread; with the `rayon` feature they run in
    /// parallel). Each block writes only its own rows, so the split does not change
    /// the result.
    fn run(&self, scratch: &mut [Scratch<T>], da: &mut [T]) {
        let h = self.net.width;
        let blocks = self.set_of.len().div_ceil(self.chunk);
        let per = blocks.div_ceil(scratch.len().max(1)).max(1);
        let pieces = da
            .chunks_mut(per * self.chunk * h)
            .zip(scratch.iter_mut())
            .enumerate();
        let run_piece = |(k, (out, s)): (usize, (&mut [T], &mut Scratch<T>))| {
            for (j, out) in out.chunks_mut(self.chunk * h).enumerate() {
                self.one(s, k * per + j, out);
            }
        };
        super::run_pieces(pieces, blocks > per, run_piece);
    }

    /// Block `b` of the group: `out` gets its `∂E/∂A`.
    fn one(&self, scratch: &mut Scratch<T>, b: usize, out: &mut [T]) {
        let h = self.net.width;
        let (r0, r1) = (
            b * self.chunk,
            (b * self.chunk + out.len() / h.max(1)).min(self.set_of.len()),
        );
        block(
            self.net,
            scratch,
            &self.xw[r0 * h..r1 * h],
            self.yw,
            &self.set_of[r0..r1],
            self.inv_count,
        );
        out.copy_from_slice(&scratch.da[..out.len()]);
    }
}

/// Forward and backward of the potential for one block of (sorted) elements; leaves
/// `∂E/∂A` in `scratch.da`, `[rows, H]`.
fn block<T: Real>(
    net: &Net<T>,
    sc: &mut Scratch<T>,
    xw: &[T],
    yw: &[T],
    set_of: &[usize],
    inv_count: &[T],
) {
    let h = net.width;
    let rows = set_of.len();
    let eps = T::from_f64(LAYER_NORM_EPS);
    // A = XW + YW[set]
    // Replaces: `InputLinear::apply` (layout.spread, add) for every input map.
    for ((arow, xrow), &s) in sc.a.chunks_exact_mut(h).zip(xw.chunks_exact(h)).zip(set_of) {
        for ((a, &xv), &yv) in arow.iter_mut().zip(xrow).zip(&yw[s * h..(s + 1) * h]) {
            *a = xv + yv;
        }
    }
    let a = &sc.a[..rows * h];
    let da = &mut sc.da[..rows * h];
    let l = net.hidden.len();
    let res_l = net.res_off[l];
    // ∂E/∂F = 1/|set| for each element: F is averaged per set, then summed.
    // Replaces: the backward of `layout.mean` and `sum` in `energy`.
    for (darow, &s) in da.chunks_exact_mut(h).zip(set_of) {
        darow[res_l] = inv_count[s];
        if l == 0 {
            darow[0] = inv_count[s];
        }
    }
    if l == 0 {
        return;
    }
    // Forward through the blocks, keeping x̂, rstd and tanh outputs.
    // Replaces: `ResNetPotential::forward` — Linear::forward (matmul_with, add),
    // LayerNorm::forward (layer_norm), tanh, add(skip) — block by block.
    for i in 0..l {
        let hi = net.hidden[i];
        let pre = &mut sc.dpre[..rows * hi];
        if i == 0 {
            for (prow, arow) in pre.chunks_exact_mut(hi).zip(a.chunks_exact(h)) {
                prow.copy_from_slice(&arow[..hi]);
            }
        } else {
            let hp = net.hidden[i - 1];
            let LinearRef { weight: w, bias: b } = net.lin[i];
            for prow in pre.chunks_exact_mut(hi) {
                prow.copy_from_slice(b);
            }
            gemm(
                &GemmShape::with_trans(rows, hi, hp, false, true),
                T::ONE,
                &sc.z[..rows * hp],
                w,
                T::ONE,
                pre,
            );
        }
        // x̂, t = tanh(γ·x̂ + β) and z = t + r_i in one sweep per row.
        // Replaces: LayerNorm::forward (layer_norm), tanh, add(skip).
        let off = net.res_off[i];
        norm_tanh_rows(
            pre,
            hi,
            eps,
            (net.norms[i].weight, net.norms[i].bias),
            Skip {
                values: &a[off..],
                stride: h,
            },
            NormTanhOut {
                xhat: &mut sc.xhat[i][..rows * hi],
                rstd: &mut sc.rstd[i][..rows],
                t: &mut sc.t[i][..rows * hi],
                z: &mut sc.z[..rows * hi],
            },
        );
    }
    // Backward: dz = ∂E/∂F ⊗ w_final, then through the blocks in reverse.
    // Replaces: the backward rules of those ops (matmul, add, tanh, layer_norm) that
    // `tape.grad` records.
    let hl = net.hidden[l - 1];
    for (dzrow, &s) in sc.dz[..rows * hl].chunks_exact_mut(hl).zip(set_of) {
        for (d, &w) in dzrow.iter_mut().zip(net.w_final) {
            *d = inv_count[s] * w;
        }
    }
    for i in (0..l).rev() {
        let hi = net.hidden[i];
        let off = net.res_off[i];
        let dz = &sc.dz[..rows * hi];
        // The skip: ∂E/∂A[res_i] = dz.
        for (darow, dzrow) in da.chunks_exact_mut(h).zip(dz.chunks_exact(hi)) {
            darow[off..off + hi].copy_from_slice(dzrow);
        }
        // Through tanh, the LayerNorm's affine part and its normalisation:
        // q = dz·(1 − t²)·γ, dpre = rstd·(q − mean q − x̂·mean(q·x̂)), one sweep per row.
        // Replaces: the backward of tanh and of layer_norm.
        let saved = NormTanhSaved {
            xhat: &sc.xhat[i][..rows * hi],
            t: &sc.t[i][..rows * hi],
            rstd: &sc.rstd[i][..rows],
            weight: net.norms[i].weight,
        };
        let dpre = &mut sc.dpre[..rows * hi];
        norm_tanh_backward_rows(saved, dz, dpre);
        if i == 0 {
            for (darow, drow) in da.chunks_exact_mut(h).zip(dpre.chunks_exact(hi)) {
                darow[..hi].copy_from_slice(drow);
            }
        } else {
            let hp = net.hidden[i - 1];
            gemm(
                &GemmShape::new(rows, hp, hi),
                T::ONE,
                dpre,
                net.lin[i].weight,
                T::ZERO,
                &mut sc.dz[..rows * hp],
            );
        }
    }
}

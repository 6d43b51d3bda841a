//! Floating-point operation counts of the computations *as implemented* here, so that
//! the report can turn a time into GFLOP/s and a fraction of the machine's peak.
//!
//! Each count is the exact number of multiply–add FLOPs of the GEMMs the code runs
//! (`2·m·n·k` per call), plus an approximation of the elementwise work (every add,
//! multiply, compare, and each `tanh` / `exp` / `pow` counted as **one** FLOP — their
//! real cost is 10–20 instructions, so GFLOP/s understates how busy the cores are on
//! elementwise-heavy workloads). The counts follow the code, not PyG's: PyG's dense
//! MemPooling runs on `B × N_max` padded rows and recomputes `x·W_xᵀ` at every inner
//! step; readout does neither, so the same workload has fewer FLOPs here.
//!
//! Notation. EquilibriumAggregation: `N` elements, `S` sets, `c_in`, `c_out`, hidden
//! sizes `h_1 … h_L`, `T = grad_iter`. The maps that read the raw input `[x, y]` (the
//! first block's linear and every `res_trans` skip) are stacked into one of width
//! `W = h_1 + (h_1 + … + h_L) + 1` (with `L = 0`: `W = 2`); `P = Σ_{i=2..L} h_{i−1}·h_i`
//! counts the block-to-block linears. MemPooling: `N` real nodes, `B` graphs, `F` in,
//! `F'` out, `H` heads, `K` clusters.

use crate::workload::{EqSpec, Mode, MpSpec};

/// A FLOP count split into its exact and approximate parts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flops {
    /// FLOPs of the GEMM calls (exact for the implementation).
    pub gemm: f64,
    /// Elementwise FLOPs (documented approximation).
    pub elementwise: f64,
}

impl Flops {
    /// Both parts, in GFLOP.
    pub fn gflop(&self) -> f64 {
        (self.gemm + self.elementwise) * 1e-9
    }
}

/// Width `W` of the stacked input maps and `P`, the block-to-block linear sizes.
fn eq_widths(w: &EqSpec) -> (f64, f64) {
    let h = &w.num_layers;
    let first = h.first().copied().unwrap_or(1);
    let width = first + h.iter().sum::<usize>() + 1;
    let p: usize = h.windows(2).map(|p| p[0] * p[1]).sum();
    (width as f64, p as f64)
}

/// `EquilibriumAggregation`.
///
/// **infer** (the fused eager engine, `forward`):
/// - GEMM: `2·N·c_in·W` (`x·W_xᵀ`, once) `+ T · (4·S·c_out·W + 4·N·P)` — per step
///   `y·W_yᵀ` and `∂E/∂(yW_y)·W_y` on the `S` set rows, and each block-to-block linear
///   forward and backward (input gradient only) on the `N` element rows;
/// - elementwise ≈ `N·W + T · (N·(2·W + 20·Σh_i + h_L) + 6·S·c_out)`: the bias, the sum
///   `A = XW + YW[set]` and the per-set accumulation of `∂E/∂A`, ≈ 10 FLOPs per
///   hidden unit forward (LayerNorm 6, affine 2, tanh 1, skip 1) and 10 backward, the
///   momentum update.
///
/// **train** (`forward_on(…, InnerGrad::Adjoint)`, then one backward to every
/// parameter): the inner loop runs as in **infer**; the backward pass reverses the `T`
/// steps, each with a Hessian-vector product on short per-chunk tapes. One product
/// re-runs the potential's forward GEMMs with the `x` part (`2·N·c_in·W`), records the
/// gradient with respect to `y` and differentiates it once more, about three times the
/// recorded sizes `G = 4·S·c_out·W + 4·N·P + 4·N·h_L`:
/// - GEMM: infer's `+ T · (2·N·c_in·W + 3·G)`;
/// - elementwise ≈ infer's `+ 3 · T · (infer's per-step elementwise)`.
pub fn equilibrium(w: &EqSpec, mode: Mode) -> Flops {
    let (n, s) = (w.num_elements as f64, w.num_sets as f64);
    let (cin, cout, t) = (
        w.in_channels as f64,
        w.out_channels as f64,
        w.grad_iter as f64,
    );
    let (width, p) = eq_widths(w);
    let hsum = w.num_layers.iter().sum::<usize>() as f64;
    let hl = w.num_layers.last().copied().unwrap_or(0) as f64;
    let ew_step = n * (2.0 * width + 20.0 * hsum + hl) + 6.0 * s * cout;
    match mode {
        Mode::Infer => Flops {
            gemm: 2.0 * n * cin * width + t * (4.0 * s * cout * width + 4.0 * n * p),
            elementwise: n * width + t * ew_step,
        },
        Mode::Train => {
            let g = 4.0 * s * cout * width + 4.0 * n * p + 4.0 * n * hl;
            let infer_gemm = 2.0 * n * cin * width + t * (4.0 * s * cout * width + 4.0 * n * p);
            Flops {
                gemm: infer_gemm + t * (2.0 * n * cin * width + 3.0 * g),
                elementwise: n * width + t * ew_step + 3.0 * t * ew_step,
            }
        }
    }
}

/// `MemPooling` on the default ragged path (real rows only).
///
/// **infer** (`forward`, returning `out` and PyG's padded `S`):
/// - GEMM: `2·N·F·H·K` (`x·kᵀ`) `+ 2·N·K·H` (the 1×1 conv over heads)
///   `+ 2·N·K·F` (`Sᵀ·X` per graph) `+ 2·B·K·F·F'` (`lin`);
/// - elementwise ≈ `12·N·H·K + 6·N·K + 2·N·F`: distances from the cross term (scale,
///   two adds, clamp), the Student-t kernel (~3), the per-head normalisation (2), the
///   softmax (~4 per value) and `‖x‖²`.
///
/// **train** (forward, `Σ out·R₁ + Σ S·R₂ + kl_loss(S)`, backward to `k`,
/// `conv.weight`, `lin.weight`; `x` is data): the backward runs one GEMM per forward
/// GEMM whose other operand is data (`x·kᵀ`, `Sᵀ·X`) and two for the others:
/// - GEMM: `2 × (2·N·F·H·K + 2·N·K·F) + 3 × (2·N·K·H + 2·B·K·F·F')`;
/// - elementwise ≈ `3 × infer's + 15·N·K` (the loss terms and `kl_loss`).
pub fn mempool(w: &MpSpec, mode: Mode) -> Flops {
    let n = w.num_nodes() as f64;
    let b = w.graph_sizes.len() as f64;
    let (f, o, h, k) = (
        w.in_channels as f64,
        w.out_channels as f64,
        w.heads as f64,
        w.num_clusters as f64,
    );
    let dist = 2.0 * n * f * h * k;
    let conv = 2.0 * n * k * h;
    let sx = 2.0 * n * k * f;
    let lin = 2.0 * b * k * f * o;
    let ew = 12.0 * n * h * k + 6.0 * n * k + 2.0 * n * f;
    match mode {
        Mode::Infer => Flops {
            gemm: dist + conv + sx + lin,
            elementwise: ew,
        },
        Mode::Train => Flops {
            gemm: 2.0 * (dist + sx) + 3.0 * (conv + lin),
            elementwise: 3.0 * ew + 15.0 * n * k,
        },
    }
}

/// FLOPs of one GEMM `[m × k] · [k × n]`: `2·m·k·n`.
pub fn gemm(m: usize, k: usize, n: usize) -> f64 {
    2.0 * m as f64 * k as f64 * n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workloads;

    #[test]
    fn hand_counted_small_cases() {
        // L = 2 hidden layers of 4, c_in = 2, c_out = 3, N = 10, S = 2, T = 1:
        // W = 4 + 8 + 1 = 13, P = 16.
        let w = EqSpec {
            name: "t".into(),
            in_channels: 2,
            out_channels: 3,
            num_layers: vec![4, 4],
            grad_iter: 1,
            num_elements: 10,
            num_sets: 2,
        };
        let f = equilibrium(&w, Mode::Infer);
        assert_eq!(
            f.gemm,
            2.0 * 10.0 * 2.0 * 13.0 + 4.0 * 2.0 * 3.0 * 13.0 + 4.0 * 10.0 * 16.0
        );
        let t = equilibrium(&w, Mode::Train);
        let g = 4.0 * 2.0 * 3.0 * 13.0 + 4.0 * 10.0 * 16.0 + 4.0 * 10.0 * 4.0;
        // Adjoint: the infer pass, then per step the x part again and ~3 recorded sizes.
        assert_eq!(t.gemm, f.gemm + 2.0 * 10.0 * 2.0 * 13.0 + 3.0 * g);
        assert!(t.elementwise > f.elementwise);
        let m = MpSpec {
            name: "m".into(),
            in_channels: 3,
            out_channels: 5,
            heads: 2,
            num_clusters: 4,
            rule: "cycle:[2,3]".into(),
            graph_sizes: vec![2, 3],
        };
        let f = mempool(&m, Mode::Infer);
        assert_eq!(
            f.gemm,
            2.0 * 5.0 * 3.0 * 2.0 * 4.0
                + 2.0 * 5.0 * 4.0 * 2.0
                + 2.0 * 5.0 * 4.0 * 3.0
                + 2.0 * 2.0 * 4.0 * 3.0 * 5.0
        );
        assert_eq!(gemm(2, 3, 4), 48.0);
    }

    #[test]
    fn every_workload_has_a_positive_count_and_train_costs_more() {
        let all = Workloads::shipped().unwrap();
        for w in &all.equilibrium {
            let (i, t) = (equilibrium(w, Mode::Infer), equilibrium(w, Mode::Train));
            assert!(i.gflop() > 0.0 && t.gflop() > 2.0 * i.gflop(), "{}", w.name);
        }
        for w in &all.mempool {
            let (i, t) = (mempool(w, Mode::Infer), mempool(w, Mode::Train));
            assert!(i.gflop() > 0.0 && t.gflop() > 2.0 * i.gflop(), "{}", w.name);
        }
    }
}

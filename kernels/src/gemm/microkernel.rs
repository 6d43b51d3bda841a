//! The register-blocked micro-kernel: an `R × 8·NV` tile of `C` held in `R · NV`
//! vector registers while it runs over `kc` steps of the shared dimension.
//!
//! With AVX2 the full tile is 6 × 16: 12 accumulators, 2 registers of `B` and one
//! broadcast of `A` out of 16 ymm registers; per step 12 FMAs against 8 loads, so the
//! two FMA pipes stay busy. `A` is read in place (not packed) through a row stride
//! and a column stride, which covers both `A` and `Aᵀ` storage; for the tall-skinny
//! shapes of this crate packing `A` would copy as much data as the kernel reads.

use super::pack::NR;
use crate::simd::{LANES, Simd};

/// Rows of `C` per full tile.
pub(super) const MR: usize = 6;

/// How an output tile is combined with the existing `C`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Beta {
    /// `C = alpha·acc`, `C` not read (BLAS semantics: NaN in `C` does not leak).
    Zero,
    /// `C = alpha·acc + C` (every `K` block after the first).
    One,
    /// `C = alpha·acc + beta·C`.
    Other(f32),
}

impl Beta {
    pub(super) fn new(beta: f32) -> Self {
        if beta == 0.0 {
            Beta::Zero
        } else if beta == 1.0 {
            Beta::One
        } else {
            Beta::Other(beta)
        }
    }
}

/// `acc[r][v] = Σ_{p < kc} A(r, p) · panel(p, 8v .. 8v+8)` with `A(r, p) = a[r·rs + p·cs]`,
/// where the panel holds `kc` rows of `8·NV` values.
///
/// # Panics
/// If `a` is too short for `R` rows and `kc` steps.
#[inline(always)]
pub(super) fn tile<S: Simd, const R: usize, const NV: usize>(
    s: S,
    a: &[f32],
    (rs, cs): (usize, usize),
    panel: &[f32],
) -> [[S::V; NV]; R] {
    let mut acc = [[s.zero(); NV]; R];
    let kc = panel.len() / (NV * LANES);
    if kc == 0 {
        return acc;
    }
    // Bounds of every A element read below, checked once instead of once per load.
    assert!(
        (R - 1) * rs + (kc - 1) * cs < a.len(),
        "gemm tile: A too short"
    );
    if R == MR && NV == 2 {
        let full = tile_6x16(s, a, (rs, cs), panel);
        for (r, row) in full.chunks_exact(2).enumerate() {
            acc[r].copy_from_slice(&row[..NV]);
        }
        return acc;
    }
    let mut off = 0;
    for brow in panel.chunks_exact(NV * LANES) {
        let mut bv = [s.zero(); NV];
        for (v, bvec) in bv.iter_mut().enumerate() {
            *bvec = s.load(&brow[v * LANES..]);
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x = s.splat(a_at(a, r * rs + off));
            for (acc_rv, &b) in acc_r.iter_mut().zip(&bv) {
                *acc_rv = s.fma(x, b, *acc_rv);
            }
        }
        off += cs;
    }
    acc
}

/// The full 6 × 16 tile, written out with one variable per accumulator: the generic
/// array form above makes LLVM shuffle and spill registers in this case, which
/// costs more than half the speed. Returns the 12 accumulators row by row.
#[inline(always)]
fn tile_6x16<S: Simd>(s: S, a: &[f32], (rs, cs): (usize, usize), panel: &[f32]) -> [S::V; 12] {
    let z = s.zero();
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
    let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
    // One sub-slice per row, so that each load is `row base + off` (no per-row index
    // arithmetic in the loop).
    let (a0, a1, a2, a3, a4, a5) = (
        a,
        &a[rs..],
        &a[2 * rs..],
        &a[3 * rs..],
        &a[4 * rs..],
        &a[5 * rs..],
    );
    // One row of the tile for one step of `k`: broadcast `A(r, p)`, two FMAs.
    macro_rules! row {
        ($a:ident, $c0:ident, $c1:ident, $b0:ident, $b1:ident, $off:ident) => {
            let x = s.splat(a_at($a, $off));
            $c0 = s.fma(x, $b0, $c0);
            $c1 = s.fma(x, $b1, $c1);
        };
    }
    let mut off = 0;
    for brow in panel.chunks_exact(2 * LANES) {
        let b0 = s.load(&brow[..LANES]);
        let b1 = s.load(&brow[LANES..]);
        row!(a0, c00, c01, b0, b1, off);
        row!(a1, c10, c11, b0, b1, off);
        row!(a2, c20, c21, b0, b1, off);
        row!(a3, c30, c31, b0, b1, off);
        row!(a4, c40, c41, b0, b1, off);
        row!(a5, c50, c51, b0, b1, off);
        off += cs;
    }
    [c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51]
}

/// `a[i]` without a bounds check, for the micro-kernel's inner loop.
#[inline(always)]
fn a_at(a: &[f32], i: usize) -> f32 {
    debug_assert!(i < a.len());
    // SAFETY: only called from `tile` and `tile_6x16` (reached only through `tile`),
    // either as `a_at(a, r·rs + p·cs)` or as `a_at(&a[r·rs..], p·cs)`, for `r < R`,
    // `p < kc` (`off` is `p·cs`). Both read `a[r·rs + p·cs]` with
    // `r·rs + p·cs ≤ (R−1)·rs + (kc−1)·cs`, which `tile` asserted is `< a.len()`;
    // so `p·cs < a.len() − r·rs`, the length of the sub-slice.
    unsafe { *a.get_unchecked(i) }
}

/// Writes `alpha·acc (+ beta·C)` to the first `ncols ≤ 8·NV` columns of `R` rows of
/// `c` (row stride `ldc`), with masked stores for a partial last vector.
#[inline(always)]
pub(super) fn store_tile<S: Simd, const R: usize, const NV: usize>(
    s: S,
    acc: &[[S::V; NV]; R],
    alpha: f32,
    beta: Beta,
    c: &mut [f32],
    ldc: usize,
    ncols: usize,
) {
    let va = s.splat(alpha);
    let unit = alpha == 1.0;
    for (r, acc_r) in acc.iter().enumerate() {
        let row = &mut c[r * ldc..][..ncols];
        for (v, &acc_rv) in acc_r.iter().enumerate() {
            let lo = v * LANES;
            if lo >= ncols {
                break;
            }
            let seg = &mut row[lo..];
            let full = seg.len() >= LANES;
            let t = if unit { acc_rv } else { s.mul(va, acc_rv) };
            let out = match beta {
                Beta::Zero => t,
                Beta::One | Beta::Other(_) => {
                    let old = if full {
                        s.load(seg)
                    } else {
                        s.load_partial(seg)
                    };
                    match beta {
                        Beta::Other(b) => s.fma(s.splat(b), old, t),
                        _ => s.add(old, t),
                    }
                }
            };
            if full {
                s.store(seg, out);
            } else {
                s.store_partial(seg, out);
            }
        }
    }
}

/// One tile: multiply (`kc` = the panel's number of rows), then store to `c` (row
/// stride `ldc`, `ncols` columns). `NV = 2` for a full panel of [`NR`] columns, 1 for
/// a half panel.
#[inline(always)]
pub(super) fn run<S: Simd, const R: usize, const NV: usize>(
    s: S,
    a: &[f32],
    strides: (usize, usize),
    panel: &[f32],
    (alpha, beta): (f32, Beta),
    c: &mut [f32],
    (ldc, ncols): (usize, usize),
) {
    debug_assert!(ncols <= NV * LANES && NV * LANES <= NR);
    let acc = tile::<S, R, NV>(s, a, strides, panel);
    store_tile::<S, R, NV>(s, &acc, alpha, beta, c, ldc, ncols);
}

//! The blocked GEMM loop nest around the micro-kernel, generic over [`Simd`].
//!
//! Loop order, outermost first (BLIS naming):
//!
//! 1. `jc`: blocks of up to `nc` columns of `C`;
//! 2. `pc`: blocks of up to [`KC`] = 256 steps of the shared dimension; the block
//!    `op(B)[pc.., jc..]` is packed once into a 64 KiB stack buffer
//!    ([`PACK_CAP`] values), which also bounds `nc` (`kc · nc ≤ PACK_CAP`, so
//!    `nc ≥ 64`; with `K ≤ 128` and `N ≤ 128` all of `B` is packed once per call);
//! 3. `ic`: blocks of [`MC`] = 120 rows of `A` (read in place, not packed);
//! 4. `jr`: the 16-column panels of the packed block (one panel stays in L1);
//! 5. `ir`: tiles of [`MR`] = 6 rows, one micro-kernel call each.
//!
//! The first `K` block applies `beta`; later ones accumulate into `C` (`beta = 1`).
//! The block sizes depend only on `K` and `N`, never on `M`, so a row of `C` gets the
//! same operations in the same order however the rows are split between threads.

use core::mem::MaybeUninit;

use super::microkernel::{Beta, MR, run};
use super::pack::{NR, pack_b, panel_width};
use super::{GemmArgs, GemmShape};
use crate::simd::Simd;

/// Steps of the shared dimension per packed block.
pub(super) const KC: usize = 256;
/// Rows of `A` per block: the block (`MC × KC` values, 120 KiB at most) stays in L2
/// while every panel of `B` passes over it. A multiple of [`MR`].
pub(super) const MC: usize = 20 * MR;
/// Capacity of the packing buffer in values (64 KiB: fits L2, leaves room on small
/// thread stacks).
pub(super) const PACK_CAP: usize = 16 * 1024;

/// `C = alpha·op(A)·op(B) + beta·C` on one thread. Slices already checked.
#[inline(always)]
pub(super) fn gemm<S: Simd>(s: S, call: GemmArgs<'_, f32>) {
    let (sh, alpha, beta) = (call.shape, call.alpha, call.beta);
    let (a, b, c) = (call.a, call.b, call.c);
    let (m, n, k) = (sh.m, sh.n, sh.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale_c(sh, beta, c);
        return;
    }
    // A(i, p) = a[i·rs + p·cs] for both storage orders.
    let (rs, cs) = if sh.trans_a { (1, sh.lda) } else { (sh.lda, 1) };
    let mut buf = [MaybeUninit::<f32>::uninit(); PACK_CAP];
    let kc_max = k.min(KC);
    let nc_max = (PACK_CAP / kc_max / NR * NR).min(n.div_ceil(NR) * NR);
    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let packed = pack_b(sh, b, (pc, kc), (jc, nc), &mut buf);
            let beta_here = Beta::new(if pc == 0 { beta } else { 1.0 });
            for ic in (0..m).step_by(MC) {
                let block = Block {
                    a: &a[ic * rs + pc * cs..],
                    strides: (rs, cs),
                    rows: MC.min(m - ic),
                    kc,
                    packed,
                    nc,
                    alpha,
                    beta: beta_here,
                };
                block.run(s, &mut c[ic * sh.ldc + jc..], sh.ldc);
            }
        }
    }
}

/// `rows ≤ MC` rows of `A` (read in place) against every panel of a packed block of
/// `B`, writing `rows × nc` values of `C`.
struct Block<'a> {
    a: &'a [f32],
    strides: (usize, usize),
    rows: usize,
    kc: usize,
    packed: &'a [f32],
    nc: usize,
    alpha: f32,
    beta: Beta,
}

impl Block<'_> {
    /// Panel by panel, and within a panel all the row tiles: the panel (`kc × 16`
    /// values, 16 KiB at most) stays in L1 while the tiles stream the block of `A`
    /// (at most `MC × KC` values) from L2.
    #[inline(always)]
    fn run<S: Simd>(&self, s: S, c: &mut [f32], ldc: usize) {
        let (rs, cs) = self.strides;
        let ab = (self.alpha, self.beta);
        let mut jr = 0;
        while jr < self.nc {
            let w = NR.min(self.nc - jr);
            let pw = panel_width(w);
            // Panels before this one are all NR wide: it starts at jr · kc.
            let panel = &self.packed[jr * self.kc..][..self.kc * pw];
            let mut ir = 0;
            while ir < self.rows {
                let mr = MR.min(self.rows - ir);
                let a = &self.a[ir * rs..];
                let c = &mut c[ir * ldc + jr..];
                let (st, dst) = ((rs, cs), (ldc, w));
                // One monomorphised micro-kernel per (rows, vectors) so that the
                // accumulators are a fixed-size array the compiler keeps in registers.
                match (mr, pw == NR) {
                    (6, true) => run::<S, 6, 2>(s, a, st, panel, ab, c, dst),
                    (5, true) => run::<S, 5, 2>(s, a, st, panel, ab, c, dst),
                    (4, true) => run::<S, 4, 2>(s, a, st, panel, ab, c, dst),
                    (3, true) => run::<S, 3, 2>(s, a, st, panel, ab, c, dst),
                    (2, true) => run::<S, 2, 2>(s, a, st, panel, ab, c, dst),
                    (1, true) => run::<S, 1, 2>(s, a, st, panel, ab, c, dst),
                    (6, false) => run::<S, 6, 1>(s, a, st, panel, ab, c, dst),
                    (5, false) => run::<S, 5, 1>(s, a, st, panel, ab, c, dst),
                    (4, false) => run::<S, 4, 1>(s, a, st, panel, ab, c, dst),
                    (3, false) => run::<S, 3, 1>(s, a, st, panel, ab, c, dst),
                    (2, false) => run::<S, 2, 1>(s, a, st, panel, ab, c, dst),
                    (1, false) => run::<S, 1, 1>(s, a, st, panel, ab, c, dst),
                    _ => unreachable!("row tile of {mr} rows"),
                }
                ir += mr;
            }
            jr += w;
        }
    }
}

/// `C = beta·C` (`K = 0`); with `beta = 0`, `C = 0` without reading it.
fn scale_c(sh: &GemmShape, beta: f32, c: &mut [f32]) {
    for i in 0..sh.m {
        for v in &mut c[i * sh.ldc..][..sh.n] {
            *v = if beta == 0.0 { 0.0 } else { beta * *v };
        }
    }
}

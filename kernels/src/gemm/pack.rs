//! Packing of `op(B)` into the panel layout the micro-kernel reads.
//!
//! A block `op(B)[pc .. pc+kc, jc .. jc+nc]` is cut into panels of [`NR`] = 16 columns
//! (the last one narrower). Each panel is stored row after row, `kc` rows of `pw`
//! contiguous values, where the panel width `pw` is 16, or 8 when at most 8 columns
//! remain (so that an `n % 16 ≤ 8` remainder runs the cheaper one-vector kernel).
//! Missing columns are zero, so the micro-kernel always reads whole vectors. Panels
//! follow each other, so the panel starting at column `jr` begins at `jr · kc`.
//!
//! Packing makes the micro-kernel's loads of `B` contiguous and L1-resident whatever
//! the layout of `B` (transposed or not), and it is paid once per block of `B`, not
//! once per row of `C`.

use core::mem::MaybeUninit;

use super::GemmShape;

/// Columns per full panel (two 8-lane vectors).
pub(super) const NR: usize = 16;

/// Stored width of a panel holding `w ≤ NR` columns.
#[inline(always)]
pub(super) fn panel_width(w: usize) -> usize {
    if w <= NR / 2 { NR / 2 } else { NR }
}

/// Number of values [`pack_b`] writes for a `kc × nc` block.
pub(super) fn packed_len(kc: usize, nc: usize) -> usize {
    let full = nc / NR;
    let rest = nc % NR;
    kc * (full * NR + if rest == 0 { 0 } else { panel_width(rest) })
}

/// Packs `op(B)[pc .. pc+kc, jc .. jc+nc]` into `buf` and returns the packed values.
///
/// `buf` may be uninitialised: every value of the returned prefix is written here.
///
/// # Panics
/// If `buf` is shorter than [`packed_len`] or the block lies outside `b`.
#[inline(always)]
pub(super) fn pack_b<'a>(
    sh: &GemmShape,
    b: &[f32],
    (pc, kc): (usize, usize),
    (jc, nc): (usize, usize),
    buf: &'a mut [MaybeUninit<f32>],
) -> &'a [f32] {
    let total = packed_len(kc, nc);
    let buf = &mut buf[..total];
    let mut off = 0;
    let mut jr = 0;
    while jr < nc {
        let w = NR.min(nc - jr);
        let pw = panel_width(w);
        let panel = &mut buf[off..off + kc * pw];
        let j0 = jc + jr;
        for (p, dst) in panel.chunks_exact_mut(pw).enumerate() {
            let (vals, pad) = dst.split_at_mut(w);
            if sh.trans_b {
                // op(B)(p, j) = b[j·ldb + p]: one value from each of `w` stored rows.
                for (jj, d) in vals.iter_mut().enumerate() {
                    d.write(b[(j0 + jj) * sh.ldb + pc + p]);
                }
            } else {
                copy_row(vals, &b[(pc + p) * sh.ldb + j0..][..w]);
            }
            for d in pad {
                d.write(0.0);
            }
        }
        off += kc * pw;
        jr += w;
    }
    debug_assert_eq!(off, total);
    init_prefix(buf)
}

/// `dst = src` for `len ≤ NR` values, in fixed 8-value chunks: a plain element loop
/// here compiles to a call to `memcpy` per row (with a `vzeroupper` before it), which
/// cost a quarter of the time of small products.
#[inline(always)]
fn copy_row(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        // Whole-array moves of a constant size, which LLVM inlines as vector moves.
        let d: &mut [MaybeUninit<f32>; 8] = d.try_into().expect("chunk of 8");
        let s: [f32; 8] = s.try_into().expect("chunk of 8");
        *d = s.map(MaybeUninit::new);
    }
    for (d, &v) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        d.write(v);
    }
}

/// Views a fully written buffer as `&[f32]`.
#[inline(always)]
fn init_prefix(buf: &[MaybeUninit<f32>]) -> &[f32] {
    // SAFETY: `pack_b`, the only caller, wrote every element of `buf`: the panels
    // tile `buf[..total]` exactly (`off` advances by each panel's `kc · pw` and ends at
    // `total`, checked against `packed_len` in debug builds), and within a panel each
    // of the `kc` rows of `pw` values is written in full (`w` values, then `pw − w`
    // zeros). `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<f32>(), buf.len()) }
}

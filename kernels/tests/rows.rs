//! Row kernels on every path against their scalar references.

use proptest::prelude::*;
use readout_kernels::Path;
use readout_kernels::rows::{
    layer_norm_backward_rows_with, layer_norm_rows, layer_norm_rows_with, softmax_rows,
    softmax_rows_with,
};

mod common;
use common::{lcg_values, paths};

/// Both sides compute `x − max` identically, then `exp` (each within 1.5 ulp), a sum
/// in a different order (relative error ≤ cols·ε each) and one product, hence the
/// bound `(6 + 2·cols)·ε` relative, plus a tiny absolute slack for underflow.
fn check_softmax(x: &[f32], cols: usize) {
    let mut want = vec![0.0f32; x.len()];
    softmax_rows_with(Path::Scalar, x, cols, &mut want);
    for path in paths() {
        let mut buf = vec![9.0f32; x.len() + 2];
        softmax_rows_with(path, x, cols, &mut buf[1..=x.len()]);
        assert_eq!(
            (buf[0], buf[x.len() + 1]),
            (9.0, 9.0),
            "{path:?} wrote outside out"
        );
        let got = &buf[1..=x.len()];
        let bound = (6.0 + 2.0 * cols as f32) * f32::EPSILON;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= bound * w.abs() + 1e-38;
            assert!(ok, "{path:?} cols {cols} at {i}: {g} vs reference {w}");
        }
    }
}

proptest! {
    #[test]
    fn softmax_matches_reference(
        rows in 0usize..5,
        cols in prop_oneof![prop::sample::select(&[1usize, 7, 8, 9, 15, 16, 17, 31, 33][..]), 1usize..80],
        off in 0usize..4,
        scale in prop::sample::select(&[0.1f32, 3.0, 30.0][..]),
        special in 0u8..8,
        seed in any::<u32>(),
    ) {
        let n = rows * cols;
        let mut buf: Vec<f32> = (0..n + off)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5) * scale)
            .collect();
        // Sometimes a masked entry (−inf), or a NaN / +inf that poisons its row.
        if n > 0 {
            let at = off + (seed as usize % n);
            match special {
                0 => buf[at] = f32::NEG_INFINITY,
                1 => buf[at] = f32::NAN,
                2 => buf[at] = f32::INFINITY,
                _ => {}
            }
        }
        check_softmax(&buf[off..], cols);
    }
}

#[test]
fn softmax_edge_rows() {
    check_softmax(&[f32::NEG_INFINITY; 9], 9);
    check_softmax(&[1e30, -1e30, 0.0, 5.0, 1e30, 7.0, 1.0, 2.0, 3.0, 4.0], 10);
    check_softmax(&[-88.0, -87.0, -200.0, 50.0, 89.0, 88.0, 0.0, 1.0], 8);
    check_softmax(&[], 3);
}

#[test]
fn dispatched_softmax() {
    let x: Vec<f32> = (0..51).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    let (mut a, mut b) = (vec![0.0; 51], vec![0.0; 51]);
    softmax_rows(&x, 17, &mut a);
    softmax_rows_with(readout_kernels::dispatch::best(), &x, 17, &mut b);
    assert_eq!(a, b);
}

proptest! {
    /// Layer norm forward on every path against the scalar reference. Both compute
    /// the same two-pass formulas; sums differ in order only (≤ cols·ε relative each),
    /// hence bounds of the form `(2·cols + 16)·ε` relative to each term's magnitude.
    #[test]
    fn layer_norm_matches_reference(
        rows in prop_oneof![0usize..5, 7usize..20],
        cols in prop_oneof![prop::sample::select(&[1usize, 7, 8, 9, 15, 16, 17, 31, 33][..]), 1usize..80],
        off in 0usize..4,
        shift in prop::sample::select(&[0.0f32, 5.0, -30.0][..]),
        affine in any::<bool>(),
        seed in any::<u32>(),
    ) {
        let n = rows * cols;
        let buf = lcg_values(n + off, seed, 4.0, shift);
        let x = &buf[off..];
        let w = lcg_values(cols, seed ^ 1, 2.0, 1.0);
        let b = lcg_values(cols, seed ^ 2, 2.0, 0.0);
        let aff = if affine { Some((&w[..], &b[..])) } else { None };
        let eps = 1e-5f32;
        let (mut out0, mut mean0, mut rstd0) = (vec![0.0f32; n], vec![0.0f32; rows], vec![0.0f32; rows]);
        layer_norm_rows_with(Path::Scalar, x, cols, eps, aff, &mut out0, (&mut mean0, &mut rstd0));
        let tol = (2.0 * cols as f32 + 16.0) * f32::EPSILON;
        for path in paths() {
            let (mut out, mut mean, mut rstd) = (vec![0.0f32; n], vec![0.0f32; rows], vec![0.0f32; rows]);
            layer_norm_rows_with(path, x, cols, eps, aff, &mut out, (&mut mean, &mut rstd));
            for r in 0..rows {
                let row = &x[r * cols..(r + 1) * cols];
                let mag = row.iter().map(|v| v.abs()).sum::<f32>() / cols as f32;
                prop_assert!((mean[r] - mean0[r]).abs() <= tol * mag, "{:?} mean", path);
                prop_assert!((rstd[r] - rstd0[r]).abs() <= tol * rstd0[r], "{:?} rstd", path);
                for c in 0..cols {
                    let i = r * cols + c;
                    let xhat = (row[c] - mean0[r]) * rstd0[r];
                    let (wc, bc) = if affine { (w[c].abs(), b[c].abs()) } else { (1.0, 0.0) };
                    let bound = tol * ((1.0 + xhat.abs() + mag * rstd0[r]) * wc + bc);
                    prop_assert!((out[i] - out0[i]).abs() <= bound, "{:?} out[{}] {} vs {}", path, i, out[i], out0[i]);
                }
            }
        }
    }

    /// Layer norm backward on every path against the scalar reference.
    #[test]
    fn layer_norm_backward_matches_reference(
        rows in 1usize..5,
        cols in prop_oneof![prop::sample::select(&[1usize, 7, 8, 9, 15, 16, 17, 31, 33][..]), 1usize..80],
        off in 0usize..4,
        seed in any::<u32>(),
    ) {
        let n = rows * cols;
        let xbuf = lcg_values(n + off, seed, 3.0, 0.0);
        let g = lcg_values(n, seed ^ 7, 2.0, 0.3);
        let rstd = lcg_values(rows, seed ^ 9, 1.0, 1.0);
        let xhat = &xbuf[off..];
        let mut want = vec![0.0f32; n];
        layer_norm_backward_rows_with(Path::Scalar, xhat, &g, &rstd, &mut want);
        let tol = (2.0 * cols as f32 + 8.0) * f32::EPSILON;
        for path in paths() {
            let mut got = vec![0.0f32; n];
            layer_norm_backward_rows_with(path, xhat, &g, &rstd, &mut got);
            for r in 0..rows {
                let (xr, gr) = (&xhat[r * cols..(r + 1) * cols], &g[r * cols..(r + 1) * cols]);
                let mg = gr.iter().map(|v| v.abs()).sum::<f32>() / cols as f32;
                let mgx = gr.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum::<f32>() / cols as f32;
                for c in 0..cols {
                    let i = r * cols + c;
                    let bound = tol * rstd[r].abs() * (gr[c].abs() + mg + xr[c].abs() * mgx) + 1e-30;
                    prop_assert!((got[i] - want[i]).abs() <= bound, "{:?} dx[{}] {} vs {}", path, i, got[i], want[i]);
                }
            }
        }
    }
}

/// The dispatched layer norm equals the best path's.
#[test]
fn dispatched_layer_norm() {
    let x = lcg_values(3 * 19, 5, 2.0, 1.0);
    let (mut a, mut ma, mut ra) = (vec![0.0; 57], vec![0.0; 3], vec![0.0; 3]);
    let (mut b, mut mb, mut rb) = (vec![0.0; 57], vec![0.0; 3], vec![0.0; 3]);
    layer_norm_rows(&x, 19, 1e-5, None, &mut a, (&mut ma, &mut ra));
    let best = readout_kernels::dispatch::best();
    layer_norm_rows_with(best, &x, 19, 1e-5, None, &mut b, (&mut mb, &mut rb));
    assert_eq!((a, ma, ra), (b, mb, rb));
}

/// The head mix on every path against the scalar reference, within the bounds its
/// module documents: `n` to `(K + 1)·ε` relative, `s` to `(6 + 2·K)·ε + 2·max|Δz|`
/// relative with `|Δz| ≤ (K + 2 + H)·ε·Σ_h |w_h·n_hj|`.
fn check_head_mix(q: &[f32], w: &[f32], k: usize) {
    use readout_kernels::rows::head_mix_softmax_rows_with;
    let h = w.len();
    let rows = q.len() / (h * k);
    let mut want_n = q.to_vec();
    let mut want_s = vec![0.0f32; rows * k];
    head_mix_softmax_rows_with(Path::Scalar, &mut want_n, w, k, &mut want_s);
    let eps = f32::EPSILON;
    for path in paths() {
        let mut n = q.to_vec();
        let mut buf = vec![9.0f32; rows * k + 2];
        head_mix_softmax_rows_with(path, &mut n, w, k, &mut buf[1..=rows * k]);
        assert_eq!(
            (buf[0], buf[rows * k + 1]),
            (9.0, 9.0),
            "{path:?} wrote outside s"
        );
        let s = &buf[1..=rows * k];
        let nb = (k as f32 + 1.0) * eps;
        for (i, (&g, &r)) in n.iter().zip(&want_n).enumerate() {
            let ok = (g.is_nan() && r.is_nan()) || (g - r).abs() <= nb * r.abs() + 1e-38;
            assert!(ok, "{path:?} n at {i}: {g} vs reference {r}");
        }
        for r in 0..rows {
            // Σ_h |w_h·n_hj|, largest over the row's clusters.
            let mag = (0..k)
                .map(|j| {
                    (0..h)
                        .map(|hh| (w[hh] * want_n[r * h * k + hh * k + j]).abs())
                        .sum::<f32>()
                })
                .fold(0.0f32, f32::max);
            let dz = (k + 2 + h) as f32 * eps * mag;
            let sb = (6.0 + 2.0 * k as f32) * eps + 2.0 * dz;
            for j in 0..k {
                let (g, w0) = (s[r * k + j], want_s[r * k + j]);
                let ok = (g.is_nan() && w0.is_nan()) || (g - w0).abs() <= sb * w0.abs() + 1e-38;
                assert!(
                    ok,
                    "{path:?} s at row {r} cluster {j}: {g} vs reference {w0}"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn head_mix_matches_reference(
        rows in 0usize..6,
        h in 1usize..6,
        k in prop_oneof![prop::sample::select(&[1usize, 7, 8, 9, 10, 16, 17, 32][..]), 1usize..40],
        scale in prop::sample::select(&[0.1f32, 1.0, 30.0][..]),
        seed in any::<u32>(),
    ) {
        let noise = |i: usize, salt: u32| {
            ((i as u32).wrapping_mul(2_654_435_761) ^ seed ^ salt) as f32 / u32::MAX as f32
        };
        // Kernel values are in (0, 1]; the weights of either sign.
        let q: Vec<f32> = (0..rows * h * k).map(|i| 1e-3 + noise(i, 0)).collect();
        let w: Vec<f32> = (0..h).map(|i| (noise(i, 0x9e37) - 0.5) * scale).collect();
        check_head_mix(&q, &w, k);
    }
}

#[test]
fn head_mix_edge_rows() {
    // A head whose values are all 0 (0/0: NaN in both), one heavy weight, one cluster.
    check_head_mix(&[0.0, 0.0, 0.0, 1.0, 2.0, 3.0], &[1.0, -2.0], 3);
    check_head_mix(
        &[0.25, 0.5, 1.0, 0.125, 0.75, 1.0, 0.5, 0.5, 0.5],
        &[40.0],
        9,
    );
    check_head_mix(&[0.3, 0.7, 0.9], &[0.5, 1.5, -1.0], 1);
    check_head_mix(&[], &[1.0], 4);
}

#[test]
fn dispatched_head_mix() {
    use readout_kernels::rows::{head_mix_softmax_rows, head_mix_softmax_rows_with};
    let q: Vec<f32> = (0..3 * 2 * 10)
        .map(|i| 0.1 + (i as f32 * 0.37).sin().abs())
        .collect();
    let w = [0.7f32, -0.4];
    let (mut qa, mut qb) = (q.clone(), q.clone());
    let (mut a, mut b) = (vec![0.0; 30], vec![0.0; 30]);
    head_mix_softmax_rows(&mut qa, &w, 10, &mut a);
    head_mix_softmax_rows_with(readout_kernels::dispatch::best(), &mut qb, &w, 10, &mut b);
    assert_eq!((qa, a), (qb, b));
}

/// Fuzz finding O3: on a row whose spread is small next to its mean, `x̂` must still
/// sum to zero (up to its own rounding), or the backward's `Σ dx = 0` fails by
/// `rstd·Σx̂·mean(g·x̂)`. The rounded mean is off by half an ulp of `|mean|`
/// (2.4e-7 here, 2.3e-5 of the spread); correcting the mean itself cannot fix that
/// (`mean + c` rounds back), so the kernel corrects the residues.
#[test]
fn layer_norm_of_a_narrow_row_is_centred() {
    // The second LayerNorm input row of O3's element 1 at its first inner step, and
    // O1's row, then wider rows of the same kind.
    let rows: [&[f32]; 4] = [
        &[-4.286_333, -4.265_549],
        &[-8.336, -8.354],
        &[1000.001, 1000.0, 1000.002, 999.999, 1000.0005],
        &[
            -3.2501, -3.2502, -3.2503, -3.2499, -3.2500, -3.2504, -3.2498, -3.2501, -3.2497,
        ],
    ];
    for row in rows {
        let cols = row.len();
        for path in paths() {
            let (mut out, mut mean, mut rstd) = (vec![0.0f32; cols], [0.0f32], [0.0f32]);
            layer_norm_rows_with(
                path,
                row,
                cols,
                1e-5,
                None,
                &mut out,
                (&mut mean, &mut rstd),
            );
            let sum: f32 = out.iter().sum();
            let mag: f32 = out.iter().map(|v| v.abs()).sum();
            // Each x̂ is within a couple of ulp of a centred row: Σ within cols·4ε·Σ|x̂|.
            assert!(
                sum.abs() <= 4.0 * cols as f32 * f32::EPSILON * mag,
                "{path:?} {row:?}: Σ x̂ = {sum:e} (x̂ = {out:?})"
            );
            // And x̂ agrees with the f64 definition to the same order (not 1e-5, as the
            // rounded mean gave).
            let m64 = row.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - m64).powi(2))
                .sum::<f64>()
                / cols as f64;
            let rs = 1.0 / (var + 1e-5).sqrt();
            for (&o, &v) in out.iter().zip(row) {
                let want = (f64::from(v) - m64) * rs;
                assert!(
                    (f64::from(o) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{path:?} {row:?}: x̂ {o} vs {want}"
                );
            }
        }
    }
}

/// The SIMD paths take the statistics of 8 rows at once: each row gets the bits it
/// gets alone (the same operations in the same order), whatever its place in a block
/// of 8 and in the rows left over after the last block.
#[test]
fn layer_norm_rows_in_blocks_of_8_match_rows_alone() {
    for cols in [1usize, 7, 8, 9, 32, 33, 64] {
        let rows = 19;
        let x = lcg_values(rows * cols, cols as u32, 6.0, 2.5);
        let w = lcg_values(cols, 5, 2.0, 1.0);
        let b = lcg_values(cols, 6, 2.0, 0.0);
        for path in paths() {
            for affine in [None, Some((&w[..], &b[..]))] {
                let n = rows * cols;
                let (mut out, mut mean, mut rstd) =
                    (vec![0.0f32; n], vec![0.0; rows], vec![0.0; rows]);
                layer_norm_rows_with(
                    path,
                    &x,
                    cols,
                    1e-5,
                    affine,
                    &mut out,
                    (&mut mean, &mut rstd),
                );
                for r in 0..rows {
                    let xr = &x[r * cols..(r + 1) * cols];
                    let (mut o1, mut m1, mut s1) = (vec![0.0f32; cols], [0.0f32], [0.0f32]);
                    layer_norm_rows_with(path, xr, cols, 1e-5, affine, &mut o1, (&mut m1, &mut s1));
                    let block: Vec<u32> = out[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect();
                    let alone: Vec<u32> = o1.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(block, alone, "{path:?} cols {cols} row {r}");
                    assert_eq!(
                        mean[r].to_bits(),
                        m1[0].to_bits(),
                        "{path:?} cols {cols} row {r}"
                    );
                    assert_eq!(
                        rstd[r].to_bits(),
                        s1[0].to_bits(),
                        "{path:?} cols {cols} row {r}"
                    );
                }
            }
        }
    }
}

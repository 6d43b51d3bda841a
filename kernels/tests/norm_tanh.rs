//! The fused LayerNorm → tanh → skip row kernels (forward and backward) on every path
//! against their scalar references, within the bounds their module docs state, and
//! the references against the unfused kernels they replace.

use readout_kernels::Path;
use readout_kernels::elementwise::{Unary, unary_with};
use readout_kernels::rows::{
    NormTanhOut, NormTanhSaved, Skip, layer_norm_backward_rows_with, layer_norm_rows_with,
    norm_tanh_backward_rows, norm_tanh_backward_rows_with, norm_tanh_rows, norm_tanh_rows_with,
};

mod common;
use common::{lcg_values, paths};

const WIDTHS: [usize; 9] = [1, 2, 7, 8, 9, 17, 33, 100, 256];
const EPS: f32 = 1e-5;

/// The forward's outputs on one path: `(x̂, rstd, t, z)`.
struct Forward {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
    t: Vec<f32>,
    z: Vec<f32>,
}

fn forward(
    path: Path,
    p: &[f32],
    cols: usize,
    wb: (&[f32], &[f32]),
    skip: Skip<'_, f32>,
) -> Forward {
    let (n, rows) = (p.len(), p.len() / cols);
    let mut f = Forward {
        xhat: vec![0.0; n],
        rstd: vec![0.0; rows],
        t: vec![0.0; n],
        z: vec![0.0; n],
    };
    let out = NormTanhOut {
        xhat: &mut f.xhat,
        rstd: &mut f.rstd,
        t: &mut f.t,
        z: &mut f.z,
    };
    norm_tanh_rows_with(path, p, cols, EPS, wb, skip, out);
    f
}

/// One configuration: `rows` rows of width `cols` around `shift`, a skip read at a
/// stride wider than the row.
fn check_forward(rows: usize, cols: usize, shift: f32, seed: u32) {
    let p = lcg_values(rows * cols, seed, 4.0, shift);
    let w = lcg_values(cols, seed ^ 1, 2.0, 1.0);
    let b = lcg_values(cols, seed ^ 2, 2.0, 0.0);
    let stride = cols + 3;
    let skip_buf = lcg_values(rows * stride + 1, seed ^ 3, 2.0, 0.0);
    let skip = Skip {
        values: &skip_buf[1..],
        stride,
    };
    let want = forward(Path::Scalar, &p, cols, (&w, &b), skip);

    // The reference is the unfused chain: layer_norm_rows (x̂), its affine part, tanh,
    // and the skip's add, each on the scalar path.
    let (mut xhat, mut mean, mut rstd) = (vec![0.0; p.len()], vec![0.0; rows], vec![0.0; rows]);
    layer_norm_rows_with(
        Path::Scalar,
        &p,
        cols,
        EPS,
        None,
        &mut xhat,
        (&mut mean, &mut rstd),
    );
    let u: Vec<f32> = (0..p.len())
        .map(|i| xhat[i] * w[i % cols] + b[i % cols])
        .collect();
    let mut t = vec![0.0; p.len()];
    unary_with(Path::Scalar, Unary::Tanh, &u, &mut t);
    assert_eq!((&xhat, &rstd, &t), (&want.xhat, &want.rstd, &want.t));
    for (i, (&z, &t)) in want.z.iter().zip(&t).enumerate() {
        let (r, c) = (i / cols, i % cols);
        assert_eq!(z, t + skip.values[r * stride + c]);
    }

    let tau = (2.0 * cols as f32 + 16.0) * f32::EPSILON;
    for path in paths() {
        let got = forward(path, &p, cols, (&w, &b), skip);
        for r in 0..rows {
            let row = &p[r * cols..(r + 1) * cols];
            let mag = row.iter().map(|v| v.abs()).sum::<f32>() / cols as f32;
            let rs = want.rstd[r];
            let what =
                format!("{path:?} rows {rows} cols {cols} shift {shift} seed {seed} row {r}");
            assert!((got.rstd[r] - rs).abs() <= tau * rs, "{what}: rstd");
            for c in 0..cols {
                let i = r * cols + c;
                let xh = want.xhat[i];
                let dx = tau * (1.0 + xh.abs() + mag * rs);
                assert!(
                    (got.xhat[i] - xh).abs() <= dx,
                    "{what}: x̂[{c}] {} vs {xh}",
                    got.xhat[i]
                );
                let du = w[c].abs() * dx + tau * b[c].abs();
                let t = want.t[i];
                let dt = (1.0 - t * t) * du + 4.0 * f32::EPSILON * t.abs() + 1e-30;
                assert!(
                    (got.t[i] - t).abs() <= dt,
                    "{what}: t[{c}] {} vs {t}",
                    got.t[i]
                );
                let dz = dt + f32::EPSILON * want.z[i].abs();
                assert!(
                    (got.z[i] - want.z[i]).abs() <= dz,
                    "{what}: z[{c}] {} vs {}",
                    got.z[i],
                    want.z[i]
                );
            }
        }
    }
}

#[test]
fn norm_tanh_matches_reference() {
    for cols in WIDTHS {
        // 1 and 3 rows: one row at a time; 8 and 19: blocks of 8 rows' statistics.
        for rows in [1, 3, 8, 19] {
            for shift in [0.0, 5.0, -30.0] {
                for seed in [1, 77, 4242] {
                    check_forward(rows, cols, shift, seed);
                }
            }
        }
    }
}

/// A row of small spread next to its mean (fuzz finding O3's): `x̂` sums to zero on
/// every path, as `layer_norm_rows`' does.
#[test]
fn norm_tanh_of_a_narrow_row_is_centred() {
    let p = [-4.286_333f32, -4.265_549];
    let zeros = [0.0f32; 2];
    let skip = Skip {
        values: &zeros,
        stride: 0,
    };
    for path in paths() {
        let f = forward(path, &p, 2, (&[1.0, 1.0], &[0.0, 0.0]), skip);
        let sum = f.xhat[0] + f.xhat[1];
        assert!(sum.abs() <= 4.0 * f32::EPSILON, "{path:?}: Σ x̂ = {sum:e}");
    }
}

/// `stride = 0` adds the same row to every row; no row and `cols = 0` do nothing.
#[test]
fn norm_tanh_edge_shapes() {
    let p = lcg_values(12, 9, 3.0, 1.0);
    let one_row = [0.5f32, -0.25, 2.0, 1.0];
    let skip = Skip {
        values: &one_row,
        stride: 0,
    };
    let (w, b) = ([1.0f32; 4], [0.0f32; 4]);
    for path in paths() {
        let f = forward(path, &p, 4, (&w, &b), skip);
        for (i, (&z, &t)) in f.z.iter().zip(&f.t).enumerate() {
            assert_eq!(z, t + one_row[i % 4], "{path:?}");
        }
        let empty = forward(path, &[], 4, (&w, &b), skip);
        assert!(empty.rstd.is_empty());
    }
    let out = NormTanhOut {
        xhat: &mut [],
        rstd: &mut [0.0f32; 2],
        t: &mut [],
        z: &mut [],
    };
    let none = Skip {
        values: &[],
        stride: 0,
    };
    norm_tanh_rows(&[], 0, EPS, (&[], &[]), none, out);
}

fn backward(path: Path, saved: NormTanhSaved<'_, f32>, dt: &[f32]) -> Vec<f32> {
    let mut dp = vec![0.0; dt.len()];
    norm_tanh_backward_rows_with(path, saved, dt, &mut dp);
    dp
}

fn check_backward(rows: usize, cols: usize, seed: u32) {
    let n = rows * cols;
    // A consistent forward state: x̂, t from a forward pass, so x̂ is centred.
    let p = lcg_values(n, seed, 3.0, 0.5);
    let w = lcg_values(cols, seed ^ 5, 2.0, 0.5);
    let b = lcg_values(cols, seed ^ 6, 1.0, 0.0);
    let zeros = vec![0.0f32; cols];
    let zero_skip = Skip {
        values: &zeros,
        stride: 0,
    };
    let f = forward(Path::Scalar, &p, cols, (&w, &b), zero_skip);
    let dt = lcg_values(n, seed ^ 7, 2.0, 0.3);
    let saved = NormTanhSaved {
        xhat: &f.xhat,
        t: &f.t,
        rstd: &f.rstd,
        weight: &w,
    };
    let want = backward(Path::Scalar, saved, &dt);

    // The reference is the unfused chain: q = dt·(1 − t²)·γ, then the layer norm
    // backward, both on the scalar path.
    let q: Vec<f32> = (0..n)
        .map(|i| dt[i] * (1.0 - f.t[i] * f.t[i]) * w[i % cols])
        .collect();
    let mut unfused = vec![0.0; n];
    layer_norm_backward_rows_with(Path::Scalar, &f.xhat, &q, &f.rstd, &mut unfused);
    assert_eq!(want, unfused, "rows {rows} cols {cols} seed {seed}");

    let tau = (2.0 * cols as f32 + 8.0 + 3.0) * f32::EPSILON;
    for path in paths() {
        let got = backward(path, saved, &dt);
        for r in 0..rows {
            let (xr, qr) = (
                &f.xhat[r * cols..(r + 1) * cols],
                &q[r * cols..(r + 1) * cols],
            );
            let mq = qr.iter().map(|v| v.abs()).sum::<f32>() / cols as f32;
            let mqx = qr.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum::<f32>() / cols as f32;
            for c in 0..cols {
                let i = r * cols + c;
                let bound = tau * f.rstd[r] * (qr[c].abs() + mq + xr[c].abs() * mqx) + 1e-30;
                assert!(
                    (got[i] - want[i]).abs() <= bound,
                    "{path:?} rows {rows} cols {cols} seed {seed}: dp[{i}] {} vs {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn norm_tanh_backward_matches_reference() {
    for cols in WIDTHS {
        for rows in [1, 3] {
            for seed in [2, 99, 31337] {
                check_backward(rows, cols, seed);
            }
        }
    }
}

/// The dispatched kernels equal the best path's, bit for bit.
#[test]
fn dispatched_norm_tanh() {
    let (rows, cols) = (3, 19);
    let p = lcg_values(rows * cols, 5, 2.0, 1.0);
    let w = lcg_values(cols, 6, 2.0, 1.0);
    let b = lcg_values(cols, 7, 1.0, 0.0);
    let skip_buf = lcg_values(rows * cols, 8, 1.0, 0.0);
    let skip = Skip {
        values: &skip_buf,
        stride: cols,
    };
    let best = readout_kernels::dispatch::best();
    let want = forward(best, &p, cols, (&w, &b), skip);
    let mut got = Forward {
        xhat: vec![0.0; p.len()],
        rstd: vec![0.0; rows],
        t: vec![0.0; p.len()],
        z: vec![0.0; p.len()],
    };
    let out = NormTanhOut {
        xhat: &mut got.xhat,
        rstd: &mut got.rstd,
        t: &mut got.t,
        z: &mut got.z,
    };
    norm_tanh_rows(&p, cols, EPS, (&w, &b), skip, out);
    assert_eq!(
        (&got.xhat, &got.rstd, &got.t, &got.z),
        (&want.xhat, &want.rstd, &want.t, &want.z)
    );

    let dt = lcg_values(rows * cols, 9, 2.0, 0.0);
    let saved = NormTanhSaved {
        xhat: &want.xhat,
        t: &want.t,
        rstd: &want.rstd,
        weight: &w,
    };
    let mut dp = vec![0.0; dt.len()];
    norm_tanh_backward_rows(saved, &dt, &mut dp);
    assert_eq!(dp, backward(best, saved, &dt));
}

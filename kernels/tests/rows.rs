//! Row kernels on every path against their scalar references.

use proptest::prelude::*;
use readout_kernels::Path;
use readout_kernels::rows::{softmax_rows, softmax_rows_with};

fn paths() -> Vec<Path> {
    Path::ALL.into_iter().filter(|p| p.is_available()).collect()
}

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

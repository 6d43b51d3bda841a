//! Layer norm's backward in `f32` on rows whose mean is large next to their spread
//! (fuzz finding O1, `fuzz/README.md`).
//!
//! The backward rebuilds `x̂ = (x − mean)·rstd` and relies on `Σ x̂ = 0`: the terms of
//! `rstd·(g − mean(g) − x̂·mean(g·x̂))` and, in a second-order pass, terms of size
//! `rstd²·|g|` (up to `1/eps = 1e5`) cancel only if `x̂` is centred. A row mean rounded to
//! `f32` is off by up to half an ulp of `|mean|`, which leaves `Σ x̂ ≈ n·ulp(|mean|)·rstd`;
//! on the row below (`|mean| ≈ 8.3`, spread `≈ 0.009`) that made both the first- and the
//! second-order result ~5e-4 wrong (inside EquilibriumAggregation's unrolled loop,
//! whose parameter gradients go through both, 3.6e-2). Re-centring with the
//! mean of the residue `x − mean` (exact in `f32` there) removes it.

use readout_core::{Real, Tape, Tensor};

/// A row as EquilibriumAggregation's second block met it in finding O1.
const ROW: [f32; 2] = [-8.336_34, -8.353_858];
const WEIGHT: [f32; 2] = [-0.796_078_4, -0.796_078_4];
const G: [f32; 2] = [0.7, -0.3];
const H: [f32; 2] = [0.2, 0.9];

/// `dx = ∂(Σ g·LN(x))/∂x`, recorded, and `∂(Σ h·dx)/∂x` (the second-order pass).
fn first_and_second<T: Real>() -> (Vec<f64>, Vec<f64>) {
    let t = |v: &[f32]| {
        Tensor::from_vec(
            &[v.len()],
            v.iter().map(|&a| T::from_f64(f64::from(a))).collect(),
        )
        .unwrap()
    };
    let mut tape = Tape::<T>::new();
    let x = tape.variable(Tensor::from_vec(&[1, 2], t(&ROW).data().to_vec()).unwrap());
    let (w, b) = (tape.constant(t(&WEIGHT)), tape.constant(t(&WEIGHT)));
    let y = tape.layer_norm(x, Some((w, b)), T::from_f64(1e-5)).unwrap();
    let g = tape.constant(Tensor::from_vec(&[1, 2], t(&G).data().to_vec()).unwrap());
    let yg = tape.mul(y, g).unwrap();
    let l = tape.sum(yg).unwrap();
    let dx = tape.grad(l, None, &[x], true).unwrap()[0];
    let h = tape.constant(Tensor::from_vec(&[1, 2], t(&H).data().to_vec()).unwrap());
    let dh = tape.mul(dx, h).unwrap();
    let l2 = tape.sum(dh).unwrap();
    let ddx = tape.grad(l2, None, &[x], false).unwrap()[0];
    let out = |v| {
        tape.value(v)
            .unwrap()
            .data()
            .iter()
            .map(|a: &T| a.to_f64())
            .collect()
    };
    (out(dx), out(ddx))
}

/// `max |got − want| / max |want|`.
fn rel_error(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn large_mean_small_spread_row_keeps_f32_precision() {
    let (d32, dd32) = first_and_second::<f32>();
    let (d64, dd64) = first_and_second::<f64>();
    // Measured: 9e-7 and 8e-7 (a few ulps); 6e-4 and 3e-4 before the re-centring.
    assert!(
        rel_error(&d32, &d64) < 1e-5,
        "first order: {d32:?} vs {d64:?}"
    );
    assert!(
        rel_error(&dd32, &dd64) < 1e-5,
        "second order: {dd32:?} vs {dd64:?}"
    );
    // The backward of a normalisation sums to zero over the row.
    assert!((d32[0] + d32[1]).abs() < 1e-5 * d64[0].abs(), "{d32:?}");
}

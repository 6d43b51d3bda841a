//! `Adam` and `Sgd` against PyTorch's documented updates, on two steps computed by
//! hand (expected values written out below, not produced by running torch).
//!
//! Parameter `p₀ = [1, −2]`, gradients `g₁ = [0.5, −1]`, then `g₂ = [0.2, 0.4]`.

use readout_core::{Tape, Tensor};
use readout_layers::{Adam, Optimizer, Parameter, Parameters, Sgd};

fn params() -> Parameters {
    Parameters::new(vec![Parameter::new(
        "w",
        Tensor::from_vec(&[2], vec![1.0, -2.0]).unwrap(),
    )])
}

/// Sets the accumulated gradient to `g` through a backward pass of `Σ w ⊙ g`.
fn set_grad(p: &mut Parameters, g: [f32; 2]) {
    p.zero_grad();
    let mut tape = Tape::<f32>::new();
    let b = p.bind(&mut tape, true);
    let c = tape.constant(Tensor::from_vec(&[2], g.to_vec()).unwrap());
    let prod = tape.mul(b.var(0), c).unwrap();
    let loss = tape.sum(prod).unwrap();
    let grads = tape.backward(loss).unwrap();
    p.accumulate(&b, &grads);
    assert_eq!(p.at(0).grad().data(), &g);
}

fn assert_close(p: &Parameters, want: [f64; 2]) {
    for (got, want) in p.at(0).value().data().iter().zip(want) {
        assert!(
            (f64::from(*got) - want).abs() <= 1e-6,
            "got {:?}, want {want:?}",
            p.at(0).value().data()
        );
    }
}

/// torch.optim.Adam (lr 0.1, betas (0.9, 0.999), eps 1e-8), documented as
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`,
/// `p ← p − lr·m̂/(√v̂ + eps)`.
///
/// Step 1: `m̂ = g₁`, `v̂ = g₁²`, so `p₁ = p₀ − 0.1·g₁/(|g₁| + 1e-8)`
/// `= [1 − 0.05/0.50000001, −2 + 0.1/1.00000001] = [0.900000002, −1.900000001]`.
///
/// Step 2: `m = 0.9·[0.05, −0.1] + 0.1·[0.2, 0.4] = [0.065, −0.05]`,
/// `v = 0.999·[0.00025, 0.001] + 0.001·[0.04, 0.16] = [0.00028975, 0.001159]`,
/// `m̂ = m/0.19 = [0.3421052632, −0.2631578947]`,
/// `v̂ = v/0.001999 = [0.1449474737, 0.5797898949]`, `√v̂ = [0.3807196790, 0.7614393577]`,
/// `p₂ = p₁ − 0.1·m̂/(√v̂ + 1e-8) = [0.900000002 − 0.0898575181, −1.900000001 + 0.0345605843]`
/// `= [0.8101424839, −1.8654394167]`.
#[test]
fn adam_matches_pytorch_on_two_steps() {
    let mut p = params();
    let mut adam = Adam::new(0.1).unwrap();
    set_grad(&mut p, [0.5, -1.0]);
    adam.step(&mut p);
    assert_close(&p, [0.900_000_002, -1.900_000_001]);
    set_grad(&mut p, [0.2, 0.4]);
    adam.step(&mut p);
    assert_close(&p, [0.810_142_483_9, -1.865_439_416_7]);
}

/// With `weight_decay = 0.1` (PyTorch's L2 form: `g ← g + wd·p` before the moments).
/// Step 1: `g = [0.5 + 0.1, −1 − 0.2] = [0.6, −1.2]`, `p₁ = p₀ − 0.1·sign(g)·(1 − ~1e-8)`
/// `= [0.9000000017, −1.9000000008]`.
/// Step 2: `g = [0.2 + 0.09, 0.4 − 0.19] = [0.29, 0.21]`,
/// `m = 0.9·[0.06, −0.12] + 0.1·[0.29, 0.21] = [0.083, −0.087]`,
/// `v = 0.999·[0.00036, 0.00144] + 0.001·[0.0841, 0.0441] = [0.00044374, 0.00148266]`,
/// `m̂ = [0.4368421053, −0.4578947368]`, `v̂ = [0.2219809905, 0.7417008504]`,
/// `p₂ = p₁ − 0.1·m̂/(√v̂ + 1e-8) = [0.8072814605, −1.8468318865]`.
#[test]
fn adam_with_weight_decay_matches_pytorch_on_two_steps() {
    let mut p = params();
    let mut adam = Adam::with(0.1, (0.9, 0.999), 1e-8, 0.1).unwrap();
    set_grad(&mut p, [0.5, -1.0]);
    adam.step(&mut p);
    assert_close(&p, [0.900_000_001_7, -1.900_000_000_8]);
    set_grad(&mut p, [0.2, 0.4]);
    adam.step(&mut p);
    assert_close(&p, [0.807_281_460_5, -1.846_831_886_5]);
}

/// torch.optim.SGD, documented as `g ← g + wd·p`; with momentum `b₁ = g`,
/// `bₜ = μ·bₜ₋₁ + g` (dampening 0); `p ← p − lr·b`.
///
/// Plain (lr 0.1): `p₁ = [1 − 0.05, −2 + 0.1] = [0.95, −1.9]`,
/// `p₂ = [0.95 − 0.02, −1.9 − 0.04] = [0.93, −1.94]`.
///
/// Momentum 0.9, weight decay 0.01: `g = [0.5 + 0.01, −1 − 0.02] = [0.51, −1.02] = b₁`,
/// `p₁ = [0.949, −1.898]`; `g = [0.2 + 0.00949, 0.4 − 0.01898] = [0.20949, 0.38102]`,
/// `b₂ = 0.9·[0.51, −1.02] + g = [0.66849, −0.53698]`,
/// `p₂ = [0.949 − 0.066849, −1.898 + 0.053698] = [0.882151, −1.844302]`.
#[test]
fn sgd_matches_pytorch_on_two_steps() {
    let mut p = params();
    let mut sgd = Sgd::new(0.1, 0.0, 0.0).unwrap();
    set_grad(&mut p, [0.5, -1.0]);
    sgd.step(&mut p);
    assert_close(&p, [0.95, -1.9]);
    set_grad(&mut p, [0.2, 0.4]);
    sgd.step(&mut p);
    assert_close(&p, [0.93, -1.94]);

    let mut p = params();
    let mut sgd = Sgd::new(0.1, 0.9, 0.01).unwrap();
    set_grad(&mut p, [0.5, -1.0]);
    sgd.step(&mut p);
    assert_close(&p, [0.949, -1.898]);
    set_grad(&mut p, [0.2, 0.4]);
    sgd.step(&mut p);
    assert_close(&p, [0.882_151, -1.844_302]);
}

#[test]
fn bad_hyper_parameters_are_named() {
    let e = Adam::new(-0.1).unwrap_err();
    assert!(e.to_string().contains("lr") && e.to_string().contains("-0.1"));
    let e = Adam::with(0.1, (0.9, 1.0), 1e-8, 0.0).unwrap_err();
    assert!(e.to_string().contains("betas.1"));
    let e = Sgd::new(0.1, f64::NAN, 0.0).unwrap_err();
    assert!(e.to_string().contains("momentum") && e.to_string().contains("NaN"));
}

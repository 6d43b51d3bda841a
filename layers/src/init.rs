//! PyTorch's default initialisations, drawn from any `rand` generator.

use rand::{Rng, RngExt};
use readout_core::{Shape, Tensor};

/// A tensor of the given shape with values drawn from `U(−bound, bound)`
/// (all zero when `bound` is 0).
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, shape: Shape, bound: f32) -> Tensor<f32> {
    let mut t = Tensor::filled(shape, 0.0);
    if bound > 0.0 {
        for v in t.data_mut() {
            *v = rng.random_range(-bound..bound);
        }
    }
    t
}

/// `1/√fan_in`: the bound of PyTorch's kaiming-uniform with `a = √5` (the default of
/// `Linear` and `Conv2d` weights) and of their biases; 0 for a fan-in of 0.
pub fn fan_in_bound(fan_in: usize) -> f32 {
    if fan_in > 0 {
        1.0 / libm::sqrtf(fan_in as f32)
    } else {
        0.0
    }
}

/// `torch.nn.Linear`'s default: weight and bias from `U(−1/√fan_in, 1/√fan_in)`.
/// Returns `(weight [fan_out, fan_in], bias [fan_out])`. (The layers build their
/// linears as [`crate::module::Linear`]; this is for models written around them.)
pub fn linear<R: Rng + ?Sized>(
    rng: &mut R,
    fan_in: usize,
    fan_out: usize,
) -> (Tensor<f32>, Tensor<f32>) {
    let bound = fan_in_bound(fan_in);
    (
        uniform(rng, Shape::d2(fan_out, fan_in), bound),
        uniform(rng, Shape::d1(fan_out), bound),
    )
}

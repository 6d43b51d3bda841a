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

/// `torch.nn.Linear`'s default: weight and bias from `U(−1/√fan_in, 1/√fan_in)`
/// (kaiming-uniform with `a = √5` works out to this bound for the weight).
/// Returns `(weight [fan_out, fan_in], bias [fan_out])`.
pub fn linear<R: Rng + ?Sized>(
    rng: &mut R,
    fan_in: usize,
    fan_out: usize,
) -> (Tensor<f32>, Tensor<f32>) {
    let bound = if fan_in > 0 {
        1.0 / libm::sqrtf(fan_in as f32)
    } else {
        0.0
    };
    (
        uniform(rng, Shape::d2(fan_out, fan_in), bound),
        uniform(rng, Shape::d1(fan_out), bound),
    )
}

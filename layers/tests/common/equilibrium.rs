//! Helpers of the `EquilibriumAggregation` tests: seeded layers moved off PyTorch's
//! symmetric initial values, and the recorded and eager paths in `f64`.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use readout_core::{Real, Tape, Tensor};
use readout_layers::{Bound, EquilibriumAggregation, InnerGrad, LayerError, PygWeights, Segments};

/// A layer with PyTorch's initialisation from `seed`, then every parameter (the
/// LayerNorm affine, `lamb`, `_lr`, `_mom` included) moved by up to ±0.2, so that no
/// symmetry of the initial values hides a bug.
pub fn layer(
    f: usize,
    o: usize,
    hidden: &[usize],
    iters: usize,
    seed: u64,
) -> EquilibriumAggregation {
    let mut l = EquilibriumAggregation::new(f, o, hidden, iters, 0.1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    l.reset_parameters(&mut rng);
    for p in l.parameters_mut().iter_mut() {
        for v in p.value_mut() {
            *v += rng.random_range(-0.2f32..0.2);
        }
    }
    l
}

pub fn random(rng: &mut ChaCha8Rng, dims: &[usize], scale: f64) -> Tensor<f64> {
    let n = dims.iter().product();
    Tensor::from_vec(
        dims,
        (0..n).map(|_| rng.random_range(-scale..scale)).collect(),
    )
    .unwrap()
}

/// Output, gradient of every parameter, gradient of x, for `loss = Σ out ⊙ w`, in f64.
pub struct Run {
    pub out: Vec<f64>,
    pub grads: Vec<Vec<f64>>,
    pub grad_x: Vec<f64>,
}

/// The recorded forward pass, `loss = Σ out ⊙ w` and its gradients, with the
/// parameters already bound on `tape`.
pub fn run_bound(
    l: &EquilibriumAggregation,
    tape: &mut Tape<f64>,
    p: &Bound,
    x: &Tensor<f64>,
    seg: Segments<'_>,
    dim_size: Option<usize>,
    w: &Tensor<f64>,
) -> Run {
    let xv = tape.variable(x.clone());
    let y = l
        .forward_on(tape, p, xv, seg, dim_size, InnerGrad::Record)
        .unwrap();
    let out = tape.value(y).unwrap().data().to_vec();
    let wv = tape.constant(w.clone());
    let yw = tape.mul(y, wv).unwrap();
    let loss = tape.sum(yw).unwrap();
    let g = tape.backward(loss).unwrap();
    let grads = (0..l.parameters().len())
        .map(|i| match g.get(p.var(i)) {
            Some(t) => t.data().to_vec(),
            None => vec![0.0; l.parameters().at(i).value().numel()],
        })
        .collect();
    let grad_x = match g.get(xv) {
        Some(t) => t.data().to_vec(),
        None => vec![0.0; x.numel()],
    };
    Run { out, grads, grad_x }
}

pub fn train64(
    l: &EquilibriumAggregation,
    x: &Tensor<f64>,
    seg: Segments<'_>,
    dim_size: Option<usize>,
    w: &Tensor<f64>,
) -> Run {
    let mut tape = Tape::<f64>::new();
    let p = l.parameters().bind(&mut tape, true);
    run_bound(l, &mut tape, &p, x, seg, dim_size, w)
}

/// [`train64`] with every parameter multiplied by `1 + U(−6e-8, 6e-8)`: one f32
/// rounding's worth of noise, in exact arithmetic.
pub fn train64_jittered(
    l: &EquilibriumAggregation,
    x: &Tensor<f64>,
    seg: Segments<'_>,
    dim_size: Option<usize>,
    w: &Tensor<f64>,
    rng: &mut ChaCha8Rng,
) -> Run {
    let mut tape = Tape::<f64>::new();
    let vars = l
        .parameters()
        .iter()
        .map(|p| {
            let mut t: Tensor<f64> = p.value().cast();
            for v in t.data_mut() {
                *v *= 1.0 + rng.random_range(-6e-8..6e-8f64);
            }
            tape.variable(t)
        })
        .collect();
    let p = Bound::from_vars(vars);
    run_bound(l, &mut tape, &p, x, seg, dim_size, w)
}

#[allow(clippy::result_large_err)]
pub fn infer<T: Real>(
    l: &EquilibriumAggregation,
    x: &Tensor<T>,
    seg: Segments<'_>,
    dim_size: Option<usize>,
) -> Result<Tensor<T>, LayerError> {
    let mut tape = Tape::<T>::new();
    let p = l.parameters().bind(&mut tape, false);
    let xv = tape.constant(x.clone());
    let y = l.forward_on(&mut tape, &p, xv, seg, dim_size, InnerGrad::Eager)?;
    Ok(tape.value(y)?.clone())
}

pub fn index_of(sizes: &[usize]) -> Vec<i64> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(s, &k)| std::iter::repeat_n(s as i64, k))
        .collect()
}

pub fn ptr_of(sizes: &[usize]) -> Vec<i64> {
    let mut ptr = vec![0i64];
    for &k in sizes {
        ptr.push(ptr.last().unwrap() + k as i64);
    }
    ptr
}

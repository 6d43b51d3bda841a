//! Helpers of the `MemPooling` tests: seeded layers far from PyTorch's small initial
//! values, and forward + loss + gradients on both paths in `f64`.

use super::{Rng, rel_err, weighted_sum};
use readout_core::{Tape, Tensor};
use readout_layers::{MemPooling, PoolArgs, PoolPath, PygWeights};

/// Values of one forward + loss + gradients run in `f64`.
pub struct Run {
    pub out: Vec<f64>,
    pub s: Vec<f64>,
    pub s_shape: Vec<usize>,
    pub kl: f64,
    /// Gradients of the loss: `k`, `conv.weight`, `lin.weight`, `x`.
    pub grads: Vec<Vec<f64>>,
}

pub fn sizes_to_batch(sizes: &[usize]) -> Vec<i64> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(g, &s)| std::iter::repeat_n(g as i64, s))
        .collect()
}

pub fn layer(f: usize, o: usize, h: usize, k: usize, tau: f64, seed: u64) -> MemPooling {
    let mut l = MemPooling::new(f, o, h, k, tau).unwrap();
    let mut rng = Rng::new(seed);
    // Larger than PyG's init so that the softmax is far from uniform.
    for p in l.parameters_mut().iter_mut() {
        for v in p.value_mut() {
            *v = rng.uniform(-1.2, 1.2) as f32;
        }
    }
    l
}

/// Loss `Σ out·w₁ + Σ S·w₂ + 0.7·kl_loss`, with `w` fixed by the shapes.
pub fn run(layer: &MemPooling, x: &Tensor<f64>, args: PoolArgs<'_>, ragged_kl: bool) -> Run {
    let mut tape = Tape::<f64>::new();
    let bound = layer.parameters().bind(&mut tape, true);
    let xv = tape.variable(x.clone());
    let mut pooled = layer.forward_on(&mut tape, &bound, xv, args).unwrap();
    let out = pooled.out();
    let s = pooled.s(&mut tape).unwrap();
    let kl = if ragged_kl {
        pooled.kl_loss(&mut tape).unwrap()
    } else {
        MemPooling::kl_loss_on(&mut tape, s).unwrap()
    };
    let mut rng = Rng::new(99);
    let n_out = tape.value(out).unwrap().numel();
    let n_s = tape.value(s).unwrap().numel();
    let lo = weighted_sum(&mut tape, out, &rng.vec(n_out, -1.0, 1.0));
    let ls = weighted_sum(&mut tape, s, &rng.vec(n_s, -1.0, 1.0));
    let lk = tape.scale(kl, 0.7).unwrap();
    let loss = tape.add(lo, ls).unwrap();
    let loss = tape.add(loss, lk).unwrap();
    let mut wrt = bound.vars().to_vec();
    wrt.push(xv);
    let g = tape.grad(loss, None, &wrt, false).unwrap();
    Run {
        out: tape.value(out).unwrap().data().to_vec(),
        s: tape.value(s).unwrap().data().to_vec(),
        s_shape: tape.value(s).unwrap().shape().to_vec(),
        kl: tape.value(kl).unwrap().item(),
        grads: g
            .iter()
            .map(|&v| tape.value(v).unwrap().data().to_vec())
            .collect(),
    }
}

pub fn assert_close(a: &Run, b: &Run, tol: f64, what: &str) {
    assert_eq!(a.s_shape, b.s_shape, "{what}: S shape");
    let checks = [
        ("out", rel_err(&a.out, &b.out)),
        ("S", rel_err(&a.s, &b.s)),
        ("kl", rel_err(&[a.kl], &[b.kl])),
        ("grad k", rel_err(&a.grads[0], &b.grads[0])),
        ("grad conv", rel_err(&a.grads[1], &b.grads[1])),
        ("grad lin", rel_err(&a.grads[2], &b.grads[2])),
        ("grad x", rel_err(&a.grads[3], &b.grads[3])),
    ];
    for (n, e) in checks {
        assert!(e <= tol, "{what}: {n} differs by {e:e}");
    }
}

pub fn random_x(rng: &mut Rng, dims: &[usize]) -> Tensor<f64> {
    let n = dims.iter().product();
    Tensor::from_vec(dims, rng.vec(n, -1.5, 1.5)).unwrap()
}

/// Ragged and dense paths against each other for node input.
pub fn ragged_vs_dense(sizes: &[usize], mnn: Option<usize>, bs: Option<usize>, seed: u64) {
    let l = layer(3, 4, 2, 3, 1.5, seed);
    let batch = sizes_to_batch(sizes);
    let mut rng = Rng::new(seed + 1);
    let x = random_x(&mut rng, &[batch.len(), 3]);
    let mut args = PoolArgs::new().batch(&batch);
    if let Some(m) = mnn {
        args = args.max_num_nodes(m);
    }
    if let Some(b) = bs {
        args = args.batch_size(b);
    }
    let dense = run(&l, &x, args.path(PoolPath::Dense), false);
    let ragged = run(&l, &x, args.path(PoolPath::Ragged), false);
    let ragged_kl = run(&l, &x, args.path(PoolPath::Ragged), true);
    let what = format!("sizes {sizes:?} mnn {mnn:?} bs {bs:?}");
    assert_close(&ragged, &dense, 1e-10, &what);
    assert_close(&ragged_kl, &dense, 1e-10, &what);
    assert!(dense.kl.is_finite() && dense.grads.iter().flatten().all(|v| v.is_finite()));
}

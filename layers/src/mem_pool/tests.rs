//! The fused inference engine against the tape path, in `f64` (where the two must agree
//! to rounding, ~1e-12), on batches with empty graphs, one-node graphs, dropped nodes
//! and masked dense rows.

use alloc::vec::Vec;

use rand::{RngExt, SeedableRng};
use readout_core::{Tape, Tensor};

use super::{Mask, MemPoolParams, MemPooling, PoolArgs, PoolPath};
use crate::PygWeights;

/// A layer whose parameters are far from PyG's small init, so the softmax is peaked.
fn layer(f: usize, o: usize, h: usize, k: usize, tau: f64, seed: u64) -> MemPooling {
    let mut l = MemPooling::new(f, o, h, k, tau).unwrap();
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    for p in l.parameters_mut().iter_mut() {
        for v in p.value_mut() {
            *v = rng.random_range(-1.2f32..1.2);
        }
    }
    l
}

fn random(dims: &[usize], seed: u64) -> Tensor<f64> {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let n = dims.iter().product();
    Tensor::from_vec(dims, (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()).unwrap()
}

/// The project's error measure, [`crate::relative_error`].
fn max_err(a: &[f64], b: &[f64]) -> f64 {
    crate::relative_error(a, b).expect("same lengths").0
}

/// `(out, S_nodes)` of the fused engine and of the tape, in `f64`.
fn both(l: &MemPooling, x: &Tensor<f64>, args: PoolArgs<'_>) -> [(Vec<f64>, Vec<f64>); 2] {
    let w = MemPoolParams::from_list(l.params.iter().map(|p| p.value().cast::<f64>())).unwrap();
    let w = MemPoolParams::from_list(w.into_list().iter().map(|t| t.data().to_vec())).unwrap();
    let (plan, fused) = l.infer(x, &w, args).unwrap();
    let s = l.s_nodes_tensor(&plan, fused.s_rows).unwrap();
    let mut tape = Tape::<f64>::new();
    tape.set_recording(false);
    let bound = l.params.bind(&mut tape, false);
    let xv = tape.constant(x.clone());
    let mut pooled = l
        .forward_on(&mut tape, &bound, xv, args.path(PoolPath::RaggedTape))
        .unwrap();
    let sv = pooled.s_nodes(&mut tape).unwrap();
    [
        (fused.out, s.data().to_vec()),
        (
            tape.value(pooled.out()).unwrap().data().to_vec(),
            tape.value(sv).unwrap().data().to_vec(),
        ),
    ]
}

fn check(l: &MemPooling, x: &Tensor<f64>, args: PoolArgs<'_>) {
    let [(out, s), (out_t, s_t)] = both(l, x, args);
    assert!(
        max_err(&out, &out_t) < 1e-12,
        "out: {}",
        max_err(&out, &out_t)
    );
    assert!(max_err(&s, &s_t) < 1e-12, "S: {}", max_err(&s, &s_t));
}

#[test]
fn fused_equals_tape_on_node_input() {
    // Empty graphs (1, 4 and the trailing ones from batch_size), one-node graphs, and
    // more rows than one block so that block boundaries fall inside graphs.
    let batch: Vec<i64> = [(0, 3), (2, 1), (3, 300), (5, 1), (6, 40)]
        .iter()
        .flat_map(|&(g, n)| core::iter::repeat_n(g, n))
        .collect();
    let x = random(&[batch.len(), 5], 1);
    for (tau, seed) in [(1.0, 2), (2.5, 3)] {
        let l = layer(5, 3, 3, 4, tau, seed);
        check(&l, &x, PoolArgs::new().batch(&batch));
        check(&l, &x, PoolArgs::new().batch(&batch).batch_size(9));
        // max_num_nodes drops the tail of the larger graphs.
        check(&l, &x, PoolArgs::new().batch(&batch).max_num_nodes(2));
    }
    // batch = None: one graph.
    let l = layer(5, 3, 3, 4, 1.0, 4);
    check(&l, &x, PoolArgs::new());
}

#[test]
fn fused_equals_tape_on_dense_input() {
    let l = layer(4, 6, 2, 3, 1.7, 5);
    let x = random(&[3, 5, 4], 6);
    check(&l, &x, PoolArgs::new());
    // A fully masked graph, a one-node graph, a full one.
    let m = [[false; 5], [false, false, true, false, false], [true; 5]].concat();
    check(&l, &x, PoolArgs::new().mask(Mask::new([3, 5], &m).unwrap()));
}

#[test]
fn fused_refuses_what_the_tape_refuses() {
    let l = layer(2, 2, 2, 2, 1.0, 7);
    let x = Tensor::<f32>::from_vec(&[3, 2], alloc::vec![0.0; 6]).unwrap();
    let unsorted = [1i64, 0, 1];
    let e = l.forward(&x, PoolArgs::new().batch(&unsorted)).unwrap_err();
    assert!(alloc::format!("{e}").contains("sorted"), "{e}");
    let short = [0i64, 0];
    assert!(l.forward(&x, PoolArgs::new().batch(&short)).is_err());
    let wrong = Tensor::<f32>::from_vec(&[2, 3], alloc::vec![0.0; 6]).unwrap();
    assert!(l.forward(&wrong, PoolArgs::new()).is_err());
}

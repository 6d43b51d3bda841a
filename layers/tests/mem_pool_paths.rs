//! `MemPooling`'s paths agree: ragged = dense (forward and gradients, and proptest on
//! random batches), PyG's own test, `to_dense_batch` semantics, `kl_loss` on empty
//! graphs, `S` without padding, the memory of the ragged path, and the fused inference
//! engine against the tape in `f32`.

mod common;

use common::mem_pool::*;
use common::{Rng, rel_err};
use readout_core::{Tape, Tensor};
use readout_layers::PygWeights;
use readout_layers::{Mask, MemPooling, PoolArgs, PoolPath};

#[test]
fn ragged_equals_dense_for_node_input() {
    ragged_vs_dense(&[3, 4, 4, 3, 3], None, None, 1);
    ragged_vs_dense(&[1, 9, 4, 12, 5], None, None, 2);
    // Empty graphs at the start, in the middle, and trailing from batch_size.
    ragged_vs_dense(&[0, 5, 0, 0, 2, 7], None, Some(9), 3);
    // Nodes dropped by max_num_nodes, and padding beyond the largest graph.
    ragged_vs_dense(&[2, 9, 5, 1], Some(4), None, 4);
    ragged_vs_dense(&[2, 3], Some(8), Some(4), 5);
    ragged_vs_dense(&[7, 8, 9], None, None, 6);
    ragged_vs_dense(&[1], None, None, 7);
}

#[test]
fn ragged_equals_dense_for_dense_input() {
    let l = layer(4, 3, 3, 2, 0.7, 11);
    let mut rng = Rng::new(12);
    let x = random_x(&mut rng, &[4, 5, 4]);
    // Valid nodes not only as a prefix, and a graph with no valid node.
    let mask = [
        true, true, false, true, false, //
        false, false, false, false, false, //
        true, true, true, true, true, //
        false, true, false, false, false,
    ];
    let m = Mask::new([4, 5], &mask).unwrap();
    for args in [PoolArgs::new().mask(m), PoolArgs::new()] {
        let dense = run(&l, &x, args.path(PoolPath::Dense), false);
        let ragged = run(&l, &x, args.path(PoolPath::Ragged), true);
        assert_close(&ragged, &dense, 1e-10, "dense input");
    }
}

/// Node input with `batch` = the dense input built by hand as `to_dense_batch` does,
/// including the nodes `max_num_nodes` drops, which get no gradient.
#[test]
fn node_input_follows_to_dense_batch() {
    let l = layer(3, 2, 2, 4, 1.0, 21);
    let sizes = [3, 6, 0, 2];
    let batch = sizes_to_batch(&sizes);
    let mut rng = Rng::new(22);
    let n = batch.len();
    let x = random_x(&mut rng, &[n, 3]);
    let (mnn, bs) = (4, 6);
    let mut dense = vec![0.0; bs * mnn * 3];
    let mut mask = vec![false; bs * mnn];
    let mut dropped = Vec::new();
    let mut node = 0;
    for (g, &s) in sizes.iter().enumerate() {
        for p in 0..s {
            if p < mnn {
                let at = g * mnn + p;
                dense[at * 3..at * 3 + 3].copy_from_slice(&x.data()[node * 3..node * 3 + 3]);
                mask[at] = true;
            } else {
                dropped.push(node);
            }
            node += 1;
        }
    }
    assert_eq!(dropped, vec![7, 8]);
    let xd = Tensor::from_vec(&[bs, mnn, 3], dense).unwrap();
    let m = Mask::new([bs, mnn], &mask).unwrap();
    let by_hand = run(&l, &xd, PoolArgs::new().mask(m), false);
    for path in [PoolPath::Ragged, PoolPath::Dense] {
        let args = PoolArgs::new()
            .batch(&batch)
            .max_num_nodes(mnn)
            .batch_size(bs)
            .path(path);
        let r = run(&l, &x, args, false);
        assert_eq!(r.s_shape, vec![bs, mnn, 4]);
        for (name, a, b) in [
            ("out", &r.out, &by_hand.out),
            ("S", &r.s, &by_hand.s),
            ("k", &r.grads[0], &by_hand.grads[0]),
            ("conv", &r.grads[1], &by_hand.grads[1]),
            ("lin", &r.grads[2], &by_hand.grads[2]),
        ] {
            assert!(rel_err(a, b) < 1e-12, "{path:?} {name}");
        }
        for &d in &dropped {
            assert!(r.grads[3][d * 3..d * 3 + 3].iter().all(|&v| v == 0.0));
        }
    }
}

/// PyG's `test_mem_pool.py`: two stacked layers on its batch.
#[test]
fn pyg_test_mem_pool() {
    let mpool1 = MemPooling::new(4, 8, 3, 2, 1.0).unwrap();
    let mpool2 = MemPooling::new(8, 4, 2, 1, 1.0).unwrap();
    let batch = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4];
    let mut rng = Rng::new(5);
    let x: Tensor<f32> = random_x(&mut rng, &[17, 4]).cast();
    for path in [PoolPath::Ragged, PoolPath::Dense] {
        let mut tape = Tape::<f32>::new();
        let b1 = mpool1.parameters().bind(&mut tape, true);
        let b2 = mpool2.parameters().bind(&mut tape, true);
        let xv = tape.constant(x.clone());
        let args = PoolArgs::new().batch(&batch).path(path);
        let mut p1 = mpool1.forward_on(&mut tape, &b1, xv, args).unwrap();
        let s = p1.s(&mut tape).unwrap();
        let loss = MemPooling::kl_loss_on(&mut tape, s).unwrap();
        let grads = tape.backward(loss).unwrap();
        // kl_loss reaches k and conv.weight; lin.weight only acts on out.
        assert!(grads.get(b1.var(0)).is_some() && grads.get(b1.var(1)).is_some());
        assert!(grads.get(b1.var(2)).is_none());
        assert!(grads.iter().all(|(_, g)| g.all_finite()));
        let out1 = p1.out();
        let mut p2 = mpool2
            .forward_on(&mut tape, &b2, out1, PoolArgs::new().path(path))
            .unwrap();
        assert_eq!(tape.value(out1).unwrap().shape(), &[5, 2, 8]);
        assert_eq!(tape.value(p2.out()).unwrap().shape(), &[5, 1, 4]);
        let s2 = p2.s(&mut tape).unwrap();
        assert_eq!(tape.value(s2).unwrap().shape(), &[5, 2, 1]);
        let sv = tape.value(s).unwrap();
        assert_eq!(sv.shape(), &[5, 4, 2]);
        // The mask of to_dense_batch: graph sizes 3, 4, 4, 3, 3 padded to 4.
        let sizes = [3, 4, 4, 3, 3];
        let mut valid_sum = 0.0f64;
        for (g, &n) in sizes.iter().enumerate() {
            for p in 0..4 {
                let row = &sv.data()[(g * 4 + p) * 2..(g * 4 + p) * 2 + 2];
                if p < n {
                    let r: f64 = row.iter().map(|&v| f64::from(v)).sum();
                    assert!((r - 1.0).abs() < 1e-6, "row of S sums to {r}");
                    valid_sum += r;
                } else {
                    assert!(row.iter().all(|&v| v == 0.0), "S[~mask] must be 0");
                }
            }
        }
        assert_eq!(valid_sum.round() as usize, 17);
        assert!(tape.value(loss).unwrap().item() > 0.0);
    }
}

/// Central differences of the loss (layer + `kl_loss`) against the tape's gradients
/// (eager and recorded) and of a Hessian-vector product against the recorded second
/// derivatives, with respect to `k`, `conv.weight`, `lin.weight` and `x`, on both
/// paths (`readout_core::gradcheck`, default tolerances). The fused node of
/// [`PoolPath::Ragged`] is checked to first order: its gradient cannot be recorded
/// (second order runs on [`PoolPath::RaggedTape`]).
#[test]
fn kl_loss_of_empty_graphs_is_the_zero_contribution_limit() {
    let l = layer(3, 2, 2, 3, 1.0, 41);
    let batch = sizes_to_batch(&[4, 2, 5]);
    let mut rng = Rng::new(42);
    let x = random_x(&mut rng, &[11, 3]).cast::<f32>();
    let (_, s3) = l.forward(&x, PoolArgs::new().batch(&batch)).unwrap();
    let (_, s5) = l
        .forward(&x, PoolArgs::new().batch(&batch).batch_size(5))
        .unwrap();
    let k3 = MemPooling::kl_loss(&s3).unwrap();
    let k5 = MemPooling::kl_loss(&s5).unwrap();
    assert!(k5.is_finite() && k5 > 0.0);
    // batchmean over 5 graphs, two of which contribute 0.
    assert!(
        (k5 * 5.0 - k3 * 3.0).abs() < 1e-6 * k3.abs().max(1.0),
        "{k5} vs {k3}"
    );
    // With K = 1 every valid row of S is 1 and the loss is 0.
    let one = layer(3, 2, 2, 1, 1.0, 43);
    let (_, s) = one.forward(&x, PoolArgs::new().batch(&batch)).unwrap();
    assert_eq!(MemPooling::kl_loss(&s).unwrap(), 0.0);
}

#[test]
fn s_nodes_is_s_without_padding() {
    let l = layer(3, 2, 2, 3, 1.0, 51);
    let sizes = [2, 5, 0, 3];
    let batch = sizes_to_batch(&sizes);
    let mut rng = Rng::new(52);
    let x = random_x(&mut rng, &[10, 3]).cast::<f32>();
    let args = PoolArgs::new().batch(&batch).max_num_nodes(4);
    let (out_p, s_p) = l.forward(&x, args).unwrap();
    let (out_r, s_r) = l.forward_ragged(&x, args).unwrap();
    assert_eq!(out_p, out_r);
    assert_eq!(s_r.shape(), &[10, 3]);
    let mut node = 0;
    for (g, &n) in sizes.iter().enumerate() {
        for p in 0..n {
            let row = &s_r.data()[node * 3..node * 3 + 3];
            if p < 4 {
                assert_eq!(row, &s_p.data()[(g * 4 + p) * 3..(g * 4 + p) * 3 + 3]);
            } else {
                assert!(row.iter().all(|&v| v == 0.0), "a dropped node has no row");
            }
            node += 1;
        }
    }
    // The dense path gives the same ragged S.
    let (_, s_d) = l.forward_ragged(&x, args.path(PoolPath::Dense)).unwrap();
    let e = rel_err(
        &s_d.data().iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        &s_r.data().iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
    );
    assert!(e < 1e-6);
}

/// The ragged path's memory follows the real nodes: on `mp_skewed`'s shape (4 graphs
/// of 2000 nodes among 256, the rest of 10) its tape holds a small fraction of the
/// dense path's, the padded `S` it returns aside.
#[test]
fn ragged_memory_follows_real_nodes() {
    let l = MemPooling::new(8, 8, 2, 4, 1.0).unwrap();
    let sizes: Vec<usize> = (0..256)
        .map(|g| if g % 64 == 0 { 2000 } else { 10 })
        .collect();
    let batch = sizes_to_batch(&sizes);
    let n = batch.len();
    assert_eq!(n, 4 * 2000 + 252 * 10);
    let x = Tensor::filled(readout_core::Shape::d2(n, 8), 0.1f32);
    let bytes = |path: PoolPath| {
        let mut tape = Tape::<f32>::new();
        let b = l.parameters().bind(&mut tape, true);
        let xv = tape.variable(x.clone());
        let p = l
            .forward_on(&mut tape, &b, xv, PoolArgs::new().batch(&batch).path(path))
            .unwrap();
        let _ = p.out();
        tape.stats().value_bytes
    };
    let (ragged, dense) = (bytes(PoolPath::Ragged), bytes(PoolPath::Dense));
    // Dense holds 256 × 2000 padded rows, ragged 10 520 real ones: ~49× fewer.
    assert!(ragged * 20 < dense, "ragged {ragged} B vs dense {dense} B");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn graph_size() -> impl Strategy<Value = usize> {
        prop_oneof![Just(0usize), Just(1), Just(7), Just(8), Just(9), 0usize..12]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random batches (empty and single-node graphs, sizes 7/8/9, nodes dropped by
        /// `max_num_nodes`, trailing empty graphs): ragged = dense, forward and
        /// gradients; rows of `S` sum to 1 over valid nodes and are 0 elsewhere.
        #[test]
        fn ragged_equals_dense_on_random_batches(
            sizes in proptest::collection::vec(graph_size(), 1..6),
            extra in 0usize..3,
            pass_batch_size in any::<bool>(),
            mnn in proptest::option::of(0usize..10),
            heads in 1usize..4,
            clusters in 1usize..5,
            tau in prop_oneof![Just(0.5f64), Just(1.0), Just(2.5)],
            seed in any::<u64>(),
        ) {
            let l = layer(3, 2, heads, clusters, tau, seed);
            let batch = sizes_to_batch(&sizes);
            let mut rng = common::Rng::new(seed ^ 0x5151);
            let x = random_x(&mut rng, &[batch.len(), 3]);
            let mut args = PoolArgs::new().batch(&batch);
            let b = if pass_batch_size || batch.is_empty() {
                args = args.batch_size(sizes.len() + extra);
                sizes.len() + extra
            } else {
                batch.last().map_or(0, |&g| g as usize + 1)
            };
            if let Some(m) = mnn {
                args = args.max_num_nodes(m);
            }
            let dense = run(&l, &x, args.path(PoolPath::Dense), false);
            let ragged = run(&l, &x, args.path(PoolPath::Ragged), true);
            assert_close(&ragged, &dense, 1e-9, &format!("{sizes:?}"));
            let n_max = mnn.unwrap_or_else(|| sizes.iter().copied().max().unwrap_or(0));
            prop_assert_eq!(&ragged.s_shape, &vec![b, n_max, clusters]);
            for g in 0..b {
                let n = sizes.get(g).copied().unwrap_or(0).min(n_max);
                for p in 0..n_max {
                    let row = &ragged.s[(g * n_max + p) * clusters..(g * n_max + p + 1) * clusters];
                    let sum: f64 = row.iter().sum();
                    if p < n {
                        prop_assert!((sum - 1.0).abs() < 1e-12);
                    } else {
                        prop_assert_eq!(sum, 0.0);
                    }
                }
            }
            prop_assert!(ragged.kl.is_finite() && ragged.kl >= -1e-12);
        }
    }
}

/// `forward` (the fused engine, no tape) against `forward_on` on a non-recording `f32`
/// tape op by op ([`PoolPath::RaggedTape`]): the same `out` and padded `S` to f32 rounding, with empty graphs (inside and
/// trailing), one-node graphs, graphs longer than the engine's row block and nodes
/// dropped by `max_num_nodes`.
#[test]
fn fused_inference_equals_the_tape_in_f32() {
    let sizes = [0, 1, 37, 0, 300, 1, 12];
    let batch = sizes_to_batch(&sizes)
        .into_iter()
        .map(|g| g + 1)
        .collect::<Vec<_>>();
    let l = layer(6, 5, 3, 4, 1.0, 41);
    let mut rng = Rng::new(42);
    let x: Tensor<f32> = random_x(&mut rng, &[batch.len(), 6]).cast();
    for args in [
        PoolArgs::new().batch(&batch),
        PoolArgs::new().batch(&batch).batch_size(10),
        PoolArgs::new().batch(&batch).max_num_nodes(20),
    ] {
        let (out, s) = l.forward(&x, args).unwrap();
        let mut tape = Tape::<f32>::new();
        tape.set_recording(false);
        let bound = l.parameters().bind(&mut tape, false);
        let xv = tape.constant(x.clone());
        let taped = args.path(PoolPath::RaggedTape);
        let mut p = l.forward_on(&mut tape, &bound, xv, taped).unwrap();
        let sv = p.s(&mut tape).unwrap();
        for (name, fused, taped) in [
            ("out", &out, tape.value(p.out()).unwrap()),
            ("S", &s, tape.value(sv).unwrap()),
        ] {
            assert_eq!(fused.shape(), taped.shape(), "{name}");
            for (&a, &b) in fused.data().iter().zip(taped.data()) {
                let err = (a - b).abs() / b.abs().max(1.0);
                assert!(err < 1e-5, "{name}: {a} vs {b}");
            }
        }
    }
}

//! `MemPooling`'s fused training node ([`PoolPath::Ragged`], the default) against the
//! same computation recorded op by op ([`PoolPath::RaggedTape`]) in `f64`, on awkward
//! shapes: one head to eight, one cluster to 32, channel counts that are not multiples
//! of 8, one-node and empty graphs, trailing empty graphs from `batch_size`, nodes
//! dropped by `max_num_nodes`, masked dense input, `τ ≠ 1`, and batches longer than
//! the node's chunks and waves of row blocks. Also: the node refuses to be recorded
//! (`create_graph = true`) with a typed error, and (with `--features rayon`) gives the
//! same bits on 1 and 2 threads.

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use readout_core::{CoreError, Tape, Tensor, Var};
use readout_layers::PygWeights;
use readout_layers::{Mask, MemPooling, PoolArgs, PoolPath};

/// A layer with parameters well away from PyG's small init, so the softmax is peaked.
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

fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.5..1.5)).collect()
}

fn batch_of(sizes: &[usize]) -> Vec<i64> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(g, &n)| std::iter::repeat_n(g as i64, n))
        .collect()
}

fn weighted(tape: &mut Tape<f64>, v: Var, seed: u64) -> Var {
    let shape = tape.value(v).unwrap().shape().to_vec();
    let w = uniform(shape.iter().product(), seed);
    let p = tape
        .mask_mul(v, Tensor::from_vec(&shape, w).unwrap())
        .unwrap();
    tape.sum(p).unwrap()
}

/// `out`, PyG's padded `S`, `kl_loss`, and the gradients of
/// `Σ out·R₁ + Σ S·R₂ + kl_loss` to `k`, `conv.weight`, `lin.weight` (and `x` when
/// `x_grad`), in that order.
fn run(
    l: &MemPooling,
    x: &Tensor<f64>,
    args: PoolArgs<'_>,
    path: PoolPath,
    x_grad: bool,
) -> Vec<(&'static str, Vec<f64>)> {
    let mut tape = Tape::<f64>::new();
    let bound = l.parameters().bind(&mut tape, true);
    let xv = if x_grad {
        tape.variable(x.clone())
    } else {
        tape.constant(x.clone())
    };
    let mut p = l
        .forward_on(&mut tape, &bound, xv, args.path(path))
        .unwrap();
    let s = p.s(&mut tape).unwrap();
    let kl = p.kl_loss(&mut tape).unwrap();
    let a = weighted(&mut tape, p.out(), 1);
    let b = weighted(&mut tape, s, 2);
    let loss = tape.add(a, b).unwrap();
    let loss = tape.add(loss, kl).unwrap();
    let mut wrt = bound.vars().to_vec();
    if x_grad {
        wrt.push(xv);
    }
    let grads = tape.grad(loss, None, &wrt, false).unwrap();
    let value = |v: Var| tape.value(v).unwrap().data().to_vec();
    let mut got = vec![
        ("out", value(p.out())),
        ("S", value(s)),
        ("kl_loss", value(kl)),
    ];
    for (name, g) in ["grad.k", "grad.conv.weight", "grad.lin.weight", "grad.x"]
        .into_iter()
        .zip(grads)
    {
        got.push((name, value(g)));
    }
    got
}

/// Fused and op by op agree to 1e-12 of each quantity's largest magnitude.
fn assert_fused_equals_tape(l: &MemPooling, x: &Tensor<f64>, args: PoolArgs<'_>) {
    let fused = run(l, x, args, PoolPath::Ragged, true);
    let taped = run(l, x, args, PoolPath::RaggedTape, true);
    assert_eq!(fused.len(), taped.len());
    for ((what, a), (_, b)) in fused.iter().zip(&taped) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-12 * scale,
            "{what}: fused and tape differ by {diff:e} (largest magnitude {scale:e})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn fused_node_equals_the_tape_on_awkward_shapes(
        f in prop::sample::select(vec![1usize, 3, 7, 9, 13]),
        o in 1usize..6,
        h in 1usize..=8,
        k in prop::sample::select(vec![1usize, 2, 5, 16, 32]),
        tau in prop::sample::select(vec![1.0f64, 0.35, 2.7]),
        sizes in prop::collection::vec(
            prop_oneof![4 => 0usize..6, 2 => 6usize..40, 1 => 250usize..300],
            1..6,
        ),
        trailing in 0usize..3,
        max_nodes in prop::option::of(1usize..30),
        seed in any::<u64>(),
    ) {
        let l = layer(f, o, h, k, tau, seed);
        let batch = batch_of(&sizes);
        let x = Tensor::from_vec(&[batch.len(), f], uniform(batch.len() * f, seed ^ 1)).unwrap();
        let mut args = PoolArgs::new().batch(&batch).batch_size(sizes.len() + trailing);
        if let Some(m) = max_nodes {
            args = args.max_num_nodes(m);
        }
        assert_fused_equals_tape(&l, &x, args);
    }
}

/// More rows than one wave of chunks (16 · 512), so both the chunk partial sums and the
/// wave loop are exercised, with graphs crossing block and chunk boundaries.
#[test]
fn fused_node_equals_the_tape_across_chunks_and_waves() {
    let sizes: Vec<usize> = (0..70).map(|g| 1 + (g * 7919) % 240).collect();
    let n: usize = sizes.iter().sum();
    assert!(n > 16 * 512, "{n} rows");
    let l = layer(5, 3, 2, 3, 1.4, 11);
    let batch = batch_of(&sizes);
    let x = Tensor::from_vec(&[n, 5], uniform(n * 5, 12)).unwrap();
    assert_fused_equals_tape(&l, &x, PoolArgs::new().batch(&batch));
}

/// Dense `[B, N, F]` input on the ragged path, with a fully masked graph, and without
/// a mask; `batch = None` on node input.
#[test]
fn fused_node_equals_the_tape_on_dense_input_and_one_graph() {
    let l = layer(9, 4, 3, 7, 0.8, 21);
    let x = Tensor::from_vec(&[3, 6, 9], uniform(3 * 6 * 9, 22)).unwrap();
    let m = [
        [false; 6],
        [true, false, false, true, false, false],
        [true; 6],
    ]
    .concat();
    assert_fused_equals_tape(&l, &x, PoolArgs::new().mask(Mask::new([3, 6], &m).unwrap()));
    assert_fused_equals_tape(&l, &x, PoolArgs::new());
    let nodes = Tensor::from_vec(&[17, 9], uniform(17 * 9, 23)).unwrap();
    assert_fused_equals_tape(&l, &nodes, PoolArgs::new());
    assert_fused_equals_tape(&l, &nodes, PoolArgs::new().batch_size(3));
}

/// Without a gradient to `x` (the node skips `x̄`), the parameters' gradients are the
/// same bits as with it.
#[test]
fn parameter_gradients_do_not_depend_on_x_wanting_one() {
    let l = layer(7, 3, 4, 5, 1.0, 31);
    let sizes = [3, 0, 600, 1];
    let batch = batch_of(&sizes);
    let n = batch.len();
    let x = Tensor::from_vec(&[n, 7], uniform(n * 7, 32)).unwrap();
    let args = PoolArgs::new().batch(&batch);
    let with = run(&l, &x, args, PoolPath::Ragged, true);
    let without = run(&l, &x, args, PoolPath::Ragged, false);
    assert_eq!(without.len(), with.len() - 1);
    for ((what, a), (_, b)) in without.iter().zip(&with) {
        assert!(a == b, "{what}");
    }
}

/// A backward pass recorded through the fused node (`create_graph = true`) is a typed
/// error naming the node and the path to use, not a wrong number; the op-by-op path
/// records it.
#[test]
fn recording_through_the_fused_node_is_a_typed_error() {
    let l = layer(3, 2, 2, 3, 1.0, 41);
    let batch = [0i64, 0, 1, 1, 1];
    let x = Tensor::from_vec(&[5, 3], uniform(15, 42)).unwrap();
    for path in [PoolPath::Ragged, PoolPath::RaggedTape] {
        let mut tape = Tape::<f64>::new();
        let bound = l.parameters().bind(&mut tape, true);
        let xv = tape.variable(x.clone());
        let args = PoolArgs::new().batch(&batch).path(path);
        let p = l.forward_on(&mut tape, &bound, xv, args).unwrap();
        let loss = weighted(&mut tape, p.out(), 3);
        let r = tape.grad(loss, None, &[xv], true);
        match path {
            PoolPath::Ragged => {
                let e = r.unwrap_err();
                assert!(
                    matches!(e, CoreError::NotRecordable { op } if op.contains("RaggedTape")),
                    "{e:?}"
                );
                assert!(format!("{e}").contains("create_graph = false"), "{e}");
            }
            _ => assert!(r.is_ok(), "{r:?}"),
        }
    }
}

/// The padded `S` of the fused path is a fused node too: differentiating through it
/// with `create_graph = true` is the same typed error; the op-by-op path records it.
#[test]
fn recording_through_the_padded_s_is_a_typed_error() {
    let l = layer(3, 2, 2, 3, 1.0, 43);
    let batch = [0i64, 0, 1, 1, 1];
    let x = Tensor::from_vec(&[5, 3], uniform(15, 44)).unwrap();
    for path in [PoolPath::Ragged, PoolPath::RaggedTape] {
        let mut tape = Tape::<f64>::new();
        let bound = l.parameters().bind(&mut tape, true);
        let xv = tape.variable(x.clone());
        let args = PoolArgs::new().batch(&batch).batch_size(3).path(path);
        let mut p = l.forward_on(&mut tape, &bound, xv, args).unwrap();
        let s = p.s(&mut tape).unwrap();
        assert_eq!(tape.value(s).unwrap().shape(), &[3, 3, 3]);
        let loss = weighted(&mut tape, s, 5);
        // The node's own rule (eager) gives the gradient ...
        assert!(tape.grad(loss, None, &[xv], false).is_ok());
        // ... and refuses to be recorded.
        let r = tape.grad(loss, None, &[xv], true);
        match path {
            PoolPath::Ragged => {
                let e = r.unwrap_err();
                assert!(
                    matches!(e, CoreError::NotRecordable { op }
                        if op.contains("padding") && op.contains("RaggedTape")),
                    "{e:?}"
                );
            }
            _ => assert!(r.is_ok(), "{r:?}"),
        }
    }
}

#[cfg(feature = "rayon")]
mod threads {
    use super::*;

    fn on_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(f)
    }

    /// Large enough for the node's chunks to run in parallel (≥ 2 chunks of ≥ 8 MFLOP),
    /// with and without a gradient to `x` (`f64`; `properties.rs` checks `f32`): 1 and 2 threads give the
    /// same bits.
    #[test]
    fn fused_node_gives_the_same_bits_on_one_and_two_threads() {
        let sizes: Vec<usize> = (0..40).map(|g| 20 + (g * 7919) % 150).collect();
        let batch = batch_of(&sizes);
        let n = batch.len();
        let l = layer(37, 11, 6, 12, 1.3, 51);
        let x = Tensor::from_vec(&[n, 37], uniform(n * 37, 52)).unwrap();
        let args = PoolArgs::new().batch(&batch).batch_size(43);
        for x_grad in [true, false] {
            let one = on_threads(1, || run(&l, &x, args, PoolPath::Ragged, x_grad));
            let two = on_threads(2, || run(&l, &x, args, PoolPath::Ragged, x_grad));
            let bits = |r: &[(&str, Vec<f64>)]| -> Vec<Vec<u64>> {
                r.iter()
                    .map(|(_, v)| v.iter().map(|x| x.to_bits()).collect())
                    .collect()
            };
            assert!(bits(&one) == bits(&two), "x_grad {x_grad}");
        }
    }
}

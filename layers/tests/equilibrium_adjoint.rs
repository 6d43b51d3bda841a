//! The adjoint training mode (the fused Hessian-vector-product engine) gives the
//! recorded mode's gradients (PyG's) to 1e-10 in f64: on every reference case, and
//! (proptest) on random configurations — widths 1, 2, 7, 9, 17, 33, zero to four
//! hidden blocks, `grad_iter` 0 to 10, empty sets, one set, single-element sets,
//! unsorted `index`, `ptr`, blocks split across sets. Potentials with a 2-wide hidden
//! layer are held to 1e-6 instead (a LayerNorm over two values is ill-conditioned:
//! see [`TWO_WIDE_BOUND`]). With the `rayon` feature, 1 and
//! 2 threads give the same bits (`cargo test -p readout-layers --features rayon --test
//! equilibrium_adjoint`).

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use readout_core::{Real, Tape, Tensor};
mod common;

use common::rel_err;
use readout_layers::PygWeights;
use readout_layers::{Case, EquilibriumAggregation, InnerGrad, LayerKind, Segments, load_cases};

/// Builds the case's layer with its weights.
fn layer(case: &mut Case) -> EquilibriumAggregation {
    let a = match &case.args {
        readout_layers::CaseArgs::Equilibrium(a) => a.clone(),
        other => panic!("not an EquilibriumAggregation case: {other:?}"),
    };
    let mut layer = EquilibriumAggregation::new(
        a.in_channels,
        a.out_channels,
        &a.num_layers,
        a.grad_iter,
        a.lamb as f32,
    )
    .unwrap();
    for i in 0..layer.parameters().len() {
        let p = layer.parameters().at(i);
        let (name, shape) = (p.name().to_string(), p.value().shape().to_vec());
        let t = case.params.take(&name, &shape).unwrap();
        layer.parameters_mut().at_mut(i).set_value(t).unwrap();
    }
    layer
}

/// Output and the gradients of `Σ out·R` for every parameter and `x`.
fn run_on<T: Real>(
    layer: &EquilibriumAggregation,
    x: &Tensor<T>,
    seg: Segments<'_>,
    dim_size: Option<usize>,
    r: &Tensor<T>,
    mode: InnerGrad,
) -> Vec<Vec<T>> {
    let mut tape = Tape::<T>::new();
    let bound = layer.parameters().bind(&mut tape, true);
    let x = tape.variable(x.clone());
    let y = layer
        .forward_on(&mut tape, &bound, x, seg, dim_size, mode)
        .unwrap();
    let r = tape.constant(r.clone());
    let yr = tape.mul(y, r).unwrap();
    let loss = tape.sum(yr).unwrap();
    let mut out = vec![tape.value(y).unwrap().data().to_vec()];
    let grads = tape.backward(loss).unwrap();
    for &v in bound.vars().iter().chain([&x]) {
        let n = tape.value(v).unwrap().numel();
        out.push(
            grads
                .get(v)
                .map_or(vec![T::ZERO; n], |g: &Tensor<T>| g.data().to_vec()),
        );
    }
    out
}

/// [`run_on`] for a reference case, in f64.
fn run(layer: &EquilibriumAggregation, case: &Case, mode: InnerGrad) -> Vec<Vec<f64>> {
    let seg = match &case.index {
        Some(i) => Segments::Index(i),
        None => Segments::One,
    };
    let r = case.lossw["out"].cast();
    run_on(layer, &case.x.cast(), seg, case.forward.dim_size, &r, mode)
}

#[test]
fn adjoint_equals_record_and_pyg_on_every_case() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let mut seen = 0;
    for mut case in load_cases(dir).unwrap() {
        if case.layer != LayerKind::Equilibrium {
            continue;
        }
        seen += 1;
        let layer = layer(&mut case);
        let rec = run(&layer, &case, InnerGrad::Record);
        let adj = run(&layer, &case, InnerGrad::Adjoint);
        for (k, (r, a)) in rec.iter().zip(&adj).enumerate() {
            let e = rel_err(a, r);
            assert!(
                e < 1e-10,
                "{}: tensor {k}: adjoint differs from record by {e:e}",
                case.name
            );
        }
        // And both are PyG's: compare the gradients the case holds.
        let names: Vec<String> = layer
            .parameters()
            .iter()
            .map(|p| format!("grad.{}", p.name()))
            .collect();
        for (k, name) in names
            .iter()
            .chain([&"grad.input.x".to_string()])
            .enumerate()
        {
            if let Some(expect) = case.expect.get(name.as_str()) {
                let e = rel_err(&adj[k + 1], expect.data());
                assert!(
                    e < 1e-10,
                    "{}: {name}: adjoint differs from PyG by {e:e}",
                    case.name
                );
            }
        }
    }
    assert_eq!(seen, 8, "expected the eight eq_* cases");
}

/// The fused engine in f32 against PyG's float64 reference, with the parity tool's
/// metric and tolerance (`max |a − b| / max(1, max |b|) ≤ 1e-4`; the tool itself
/// checks the recorded path).
#[test]
fn adjoint_in_f32_is_within_the_parity_tolerance_of_pyg() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let mut worst = (0.0f64, String::new());
    for mut case in load_cases(dir).unwrap() {
        if case.layer != LayerKind::Equilibrium {
            continue;
        }
        let layer = layer(&mut case);
        let seg = match &case.index {
            Some(i) => Segments::Index(i),
            None => Segments::One,
        };
        let r: Tensor<f32> = case.lossw["out"].cast();
        let x: Tensor<f32> = case.x.cast();
        let got = run_on(
            &layer,
            &x,
            seg,
            case.forward.dim_size,
            &r,
            InnerGrad::Adjoint,
        );
        let names = layer
            .parameters()
            .iter()
            .map(|p| format!("grad.{}", p.name()));
        for (k, name) in names.chain(["grad.input.x".to_string()]).enumerate() {
            let Some(expect) = case.expect.get(name.as_str()) else {
                continue;
            };
            let got: Vec<f64> = got[k + 1].iter().map(|&v| f64::from(v)).collect();
            let e = rel_err(&got, expect.data());
            assert!(
                e <= 1e-4,
                "{}: {name}: f32 adjoint off PyG by {e:e}",
                case.name
            );
            if e > worst.0 {
                worst = (e, format!("{} {name}", case.name));
            }
        }
    }
    println!("worst f32 adjoint error: {:e} ({})", worst.0, worst.1);
}

/// A layer whose every parameter (LayerNorm affine, `lamb`, `_lr`, `_mom` included) is
/// drawn from `U(−0.8, 0.8)`, so that no symmetry of PyTorch's initial values hides a
/// bug.
fn random_layer(
    cin: usize,
    cout: usize,
    hidden: &[usize],
    iters: usize,
    rng: &mut ChaCha8Rng,
) -> EquilibriumAggregation {
    let mut layer = EquilibriumAggregation::new(cin, cout, hidden, iters, 0.1).unwrap();
    for p in layer.parameters_mut().iter_mut() {
        for v in p.value_mut() {
            *v = rng.random_range(-0.8f32..0.8);
        }
    }
    layer
}

fn random(rng: &mut ChaCha8Rng, dims: &[usize]) -> Tensor<f64> {
    let n = dims.iter().product();
    Tensor::from_vec(dims, (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()).unwrap()
}

/// How the elements are given to the layer.
#[derive(Clone, Copy, Debug)]
enum Given {
    /// An `index` in shuffled element order.
    Unsorted,
    /// CSR `ptr`.
    Ptr,
    /// One set (only used when there is exactly one).
    One,
}

const WIDTHS: [usize; 6] = [1, 2, 7, 9, 17, 33];

fn width() -> impl Strategy<Value = usize> {
    proptest::sample::select(&WIDTHS[..])
}

/// The bound of the random configurations below, the issue's: 1e-10 relative.
const BOUND: f64 = 1e-10;

/// The bound for potentials with a 2-wide hidden layer. A LayerNorm over 2 values
/// outputs ±1 up to rounding, so its derivatives are cancellations (`1 − x̂² ≈ ε/d²`)
/// in both paths, and their roundings differ by far more than 1e-10 once the
/// unrolled steps amplify them: 3.4e-10 on a set of 7 elements through two 2-wide
/// layers and 8 steps, 3.3e-8 on 9 elements and 9 steps (found by the random test on
/// 2026-12-02, on that day's starting code too; the seeds are in the regressions
/// file). Fuzz finding O1 is the same conditioning. 3 000 random cases of
/// [`adjoint_equals_record_through_two_wide_layer_norms`] passed at this bound.
const TWO_WIDE_BOUND: f64 = 1e-6;

/// Every tensor of `adj` within `bound` of `rec`, relative to the largest value.
fn assert_same(
    what: &str,
    adj: &[Vec<f64>],
    rec: &[Vec<f64>],
    bound: f64,
) -> Result<(), TestCaseError> {
    for (k, (a, r)) in adj.iter().zip(rec).enumerate() {
        let e = rel_err(a, r);
        prop_assert!(
            e < bound,
            "{what}: tensor {k}: adjoint differs from record by {e:e} (bound {bound:e})"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Small sets of every kind, every width, up to four hidden blocks (hidden width 2
    /// has its own test and bound, below).
    #[test]
    fn adjoint_equals_record_on_random_configurations(
        cin in width(),
        cout in width(),
        hidden in proptest::collection::vec(proptest::sample::select(&[1usize, 7, 9, 17, 33][..]), 0..5),
        iters in 0usize..11,
        sizes in proptest::collection::vec(0usize..4, 1..5),
        given in prop_oneof![Just(Given::Unsorted), Just(Given::Ptr), Just(Given::One)],
        extra_sets in 0usize..2,
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layer = random_layer(cin, cout, &hidden, iters, &mut rng);
        let sizes = match given {
            Given::One => vec![sizes.iter().sum()],
            _ => sizes,
        };
        check_layout(&layer, &sizes, given, extra_sets, &mut rng)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Potentials with at least one 2-wide hidden layer among the others, within
    /// [`TWO_WIDE_BOUND`].
    #[test]
    fn adjoint_equals_record_through_two_wide_layer_norms(
        cin in width(),
        cout in width(),
        hidden in proptest::collection::vec(width(), 0..4),
        at in 0usize..4,
        iters in 0usize..11,
        sizes in proptest::collection::vec(0usize..4, 1..5),
        given in prop_oneof![Just(Given::Unsorted), Just(Given::Ptr), Just(Given::One)],
        seed in any::<u64>(),
    ) {
        let mut hidden = hidden;
        hidden.insert(at.min(hidden.len()), 2);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layer = random_layer(cin, cout, &hidden, iters, &mut rng);
        let sizes = match given {
            Given::One => vec![sizes.iter().sum()],
            _ => sizes,
        };
        check_layout(&layer, &sizes, given, 0, &mut rng)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Sets large enough to span several blocks of the engine (and blocks that start in
    /// the middle of a set). No hidden width 2 here: a 2-wide LayerNorm outputs ±1 up
    /// to ε, its derivatives come from cancellations (1 − x̂² ≈ ε/d²) in both paths,
    /// and over sets of dozens of elements the two paths' roundings differ by up to
    /// ~3e-10 (fuzz finding O1 is the same conditioning); width 2 is covered on small
    /// sets above.
    #[test]
    fn adjoint_equals_record_across_blocks(
        hidden in proptest::collection::vec(proptest::sample::select(&[1usize, 7, 9, 17, 33][..]), 1..4),
        sizes in proptest::collection::vec(1usize..90, 1..4),
        iters in 1usize..8,
        unsorted in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layer = random_layer(9, 7, &hidden, iters, &mut rng);
        let given = if unsorted { Given::Unsorted } else { Given::Ptr };
        check_layout(&layer, &sizes, given, 0, &mut rng)?;
    }
}

/// Checks Adjoint = Record for sets of `sizes` elements (plus `extra` empty sets at
/// the end, through `dim_size`), given as `given`.
fn check_layout(
    layer: &EquilibriumAggregation,
    sizes: &[usize],
    given: Given,
    extra: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(), TestCaseError> {
    let n: usize = sizes.iter().sum();
    let sets = sizes.len() + extra;
    let x = random(rng, &[n, layer.in_channels()]);
    let r = random(rng, &[sets, layer.out_channels()]);
    // Element k of the shuffled order belongs to set index[k].
    let mut index: Vec<i64> = sizes
        .iter()
        .enumerate()
        .flat_map(|(s, &k)| std::iter::repeat_n(s as i64, k))
        .collect();
    for i in (1..index.len()).rev() {
        index.swap(i, rng.random_range(0..=i));
    }
    let mut ptr = vec![0i64];
    for &k in sizes {
        ptr.push(ptr.last().unwrap() + k as i64);
    }
    let seg = match given {
        Given::Unsorted => Segments::Index(&index),
        Given::Ptr => Segments::Ptr(&ptr),
        Given::One => Segments::One,
    };
    let dim_size = Some(sets);
    let rec = run_on(layer, &x, seg, dim_size, &r, InnerGrad::Record);
    let adj = run_on(layer, &x, seg, dim_size, &r, InnerGrad::Adjoint);
    let bound = if layer.num_layers().contains(&2) {
        TWO_WIDE_BOUND
    } else {
        BOUND
    };
    assert_same(&format!("{given:?} {sizes:?}"), &adj, &rec, bound)
}

#[cfg(feature = "rayon")]
mod threads {
    use super::*;

    fn on_threads<R: Send>(k: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .unwrap()
            .install(f)
    }

    /// Runs the adjoint training pass of `layer` on `n` random elements in `sets` random
    /// sets, on 1 and on 2 threads: whether the outputs and gradients have the same
    /// bits, in f64 and in f32.
    fn same_bits_on_1_and_2_threads(
        layer: &EquilibriumAggregation,
        n: usize,
        sets: usize,
        rng: &mut ChaCha8Rng,
    ) -> (bool, bool) {
        let (cin, cout) = (layer.in_channels(), layer.out_channels());
        let x = random(rng, &[n, cin]);
        let r = random(rng, &[sets, cout]);
        let index: Vec<i64> = (0..n).map(|_| rng.random_range(0..sets as i64)).collect();
        let seg = Segments::Index(&index);
        let run64 = || run_on(layer, &x, seg, Some(sets), &r, InnerGrad::Adjoint);
        let (x32, r32): (Tensor<f32>, Tensor<f32>) = (x.cast(), r.cast());
        let run32 = || run_on(layer, &x32, seg, Some(sets), &r32, InnerGrad::Adjoint);
        let bits64 = |v: Vec<Vec<f64>>| -> Vec<Vec<u64>> {
            v.iter()
                .map(|t| t.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        let bits32 = |v: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
            v.iter()
                .map(|t| t.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        (
            bits64(on_threads(1, run64)) == bits64(on_threads(2, run64)),
            bits32(on_threads(1, run32)) == bits32(on_threads(2, run32)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3))]

        /// Large enough for the engine's blocks and its `x` GEMMs to run on both
        /// threads: 1 and 2 threads give the same bits, in f32 and f64.
        #[test]
        fn adjoint_results_do_not_depend_on_thread_count(
            n in 2500usize..3500,
            hidden in proptest::collection::vec(prop_oneof![Just(33usize), Just(64)], 1..3),
            seed in any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (cin, cout, sets) = (16, 8, 40);
            let layer = random_layer(cin, cout, &hidden, 3, &mut rng);
            let (same64, same32) = same_bits_on_1_and_2_threads(&layer, n, sets, &mut rng);
            prop_assert!(same64);
            prop_assert!(same32);
        }

        /// One group smaller than a block, with enough steps to pay for a second
        /// scratch: on 2 threads the inference engine cuts it into two blocks (one
        /// block on 1 thread). Same bits, in f32 and f64.
        #[test]
        fn small_group_results_do_not_depend_on_thread_count(
            n in 110usize..128,
            sets in 1usize..4,
            seed in any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (cin, cout) = (3, 5);
            let layer = random_layer(cin, cout, &[128, 128], 8, &mut rng);
            let (same64, same32) = same_bits_on_1_and_2_threads(&layer, n, sets, &mut rng);
            prop_assert!(same64);
            prop_assert!(same32);
        }
    }
}

/// The adjoint mode takes its buffers from the layer's workspace and leaves them there
/// for the next call: a call after one on a larger input (whose leftover buffers are
/// longer and hold its values) gives the bits of the same call on a fresh layer, in f64
/// and f32. (A fresh clone starts with an empty workspace.)
#[test]
fn a_reused_workspace_gives_the_bits_of_a_fresh_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let layer = random_layer(5, 3, &[17, 9], 4, &mut rng);
    let small = (random(&mut rng, &[40, 5]), random(&mut rng, &[3, 3]));
    let large = (random(&mut rng, &[300, 5]), random(&mut rng, &[7, 3]));
    let index =
        |n: usize, sets: usize| -> Vec<i64> { (0..n).map(|i| (i * 5 % sets) as i64).collect() };
    let (small_index, large_index) = (index(40, 3), index(300, 7));
    let seg = Segments::Index(&small_index);
    let (x, r): (Tensor<f32>, Tensor<f32>) = (small.0.cast(), small.1.cast());
    let fresh64 = run_on(
        &layer.clone(),
        &small.0,
        seg,
        Some(3),
        &small.1,
        InnerGrad::Adjoint,
    );
    let fresh32 = run_on(&layer.clone(), &x, seg, Some(3), &r, InnerGrad::Adjoint);
    let (lx32, lr32): (Tensor<f32>, Tensor<f32>) = (large.0.cast(), large.1.cast());
    let large_seg = Segments::Index(&large_index);
    run_on(
        &layer,
        &large.0,
        large_seg,
        Some(7),
        &large.1,
        InnerGrad::Adjoint,
    );
    run_on(&layer, &lx32, large_seg, Some(7), &lr32, InnerGrad::Adjoint);
    assert!(layer.workspace_bytes() > 0, "the workspace kept nothing");
    let reused64 = run_on(&layer, &small.0, seg, Some(3), &small.1, InnerGrad::Adjoint);
    let reused32 = run_on(&layer, &x, seg, Some(3), &r, InnerGrad::Adjoint);
    let bits64 = |v: &[Vec<f64>]| -> Vec<Vec<u64>> {
        v.iter()
            .map(|t| t.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    let bits32 = |v: &[Vec<f32>]| -> Vec<Vec<u32>> {
        v.iter()
            .map(|t| t.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits64(&reused64), bits64(&fresh64));
    assert_eq!(bits32(&reused32), bits32(&fresh32));
}

/// `InnerGrad::Record` at scale: the backward pass of the recorded loop frees each
/// intermediate gradient once it has been used, so the buffers it leaves behind (all
/// returned to the tape's pool) stay a fraction of the recorded graph. Before, every
/// intermediate gradient lived until the end: about twice the graph.
#[test]
fn record_backward_does_not_keep_every_intermediate_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (n, sets) = (3000, 150);
    let layer = random_layer(8, 8, &[32, 32], 4, &mut rng);
    let x: Tensor<f32> = random(&mut rng, &[n, 8]).cast();
    let index: Vec<i64> = (0..n).map(|i| (i * sets / n) as i64).collect();
    let mut tape = Tape::<f32>::new();
    let bound = layer.parameters().bind(&mut tape, true);
    let xv = tape.variable(x);
    let y = layer
        .forward_on(
            &mut tape,
            &bound,
            xv,
            Segments::Index(&index),
            None,
            InnerGrad::Record,
        )
        .unwrap();
    let loss = tape.sum(y).unwrap();
    let graph = tape.stats().value_bytes;
    tape.backward(loss).unwrap();
    let left = tape.stats().pooled_bytes;
    println!("backward left {left} bytes of buffers for a graph of {graph}");
    assert!(
        left * 2 < graph,
        "the backward pass left {left} bytes of buffers for a graph of {graph}"
    );
}

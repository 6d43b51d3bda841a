//! `EquilibriumAggregation`'s paths agree: the inference path equals the training
//! path, `ptr` equals `index`, the order of the elements does not matter (proptest:
//! invariant to permuting elements within sets, equivariant to relabelling the sets),
//! sets without elements give zero rows, and the inference workspace leaks nothing
//! from one call to the next.

mod common;

use common::equilibrium::*;
use common::{data_dir, rel_err as rel};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use readout_core::{Tape, Tensor};
use readout_layers::{
    EquilibriumAggregation, InnerGrad, LayerKind, PygWeights, Segments, load_cases,
};

#[test]
fn inference_path_equals_training_path() {
    // Every reference case, in f32 (what a deployed model runs).
    for case in load_cases(data_dir()).unwrap() {
        if case.layer != LayerKind::Equilibrium {
            continue;
        }
        let readout_layers::CaseArgs::Equilibrium(a) = &case.args else {
            unreachable!()
        };
        #[allow(clippy::cast_possible_truncation)]
        let l = EquilibriumAggregation::new(
            a.in_channels,
            a.out_channels,
            &a.num_layers,
            a.grad_iter,
            a.lamb as f32,
        )
        .unwrap()
        .with_state_dict(case.params.clone())
        .unwrap();
        let seg = match &case.index {
            Some(ix) => Segments::Index(ix),
            None => Segments::One,
        };
        let inferred = l.forward(&case.x, seg, case.forward.dim_size).unwrap();
        let mut tape = Tape::<f32>::new();
        let p = l.parameters().bind(&mut tape, true);
        let x = tape.variable(case.x.clone());
        let y = l
            .forward_on(
                &mut tape,
                &p,
                x,
                seg,
                case.forward.dim_size,
                InnerGrad::Record,
            )
            .unwrap();
        let trained = tape.value(y).unwrap();
        assert_eq!(trained.shape(), inferred.shape());
        let a: Vec<f64> = inferred.data().iter().map(|&v| f64::from(v)).collect();
        let b: Vec<f64> = trained.data().iter().map(|&v| f64::from(v)).collect();
        assert!(rel(&a, &b) <= 1e-6, "{}: {:e}", case.name, rel(&a, &b));
    }
    // And random configurations, in f64, to rounding.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (seed, hidden) in [(2u64, vec![]), (3, vec![4]), (4, vec![3, 5])] {
        let l = layer(3, 2, &hidden, 4, seed);
        let x = random(&mut rng, &[9, 3], 1.5);
        let index = [2, 0, 1, 2, 2, 0, 4, 1, 0];
        let w = random(&mut rng, &[6, 2], 1.0);
        let seg = Segments::Index(&index);
        let train = train64(&l, &x, seg, Some(6), &w);
        let inf = infer(&l, &x, seg, Some(6)).unwrap();
        assert!(rel(inf.data(), &train.out) <= 1e-13);
    }
}

#[test]
fn ptr_equals_index() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (sizes, pad) in [
        (vec![3usize, 0, 2, 4], 0usize),
        (vec![1, 1, 5], 2),
        (vec![0, 0, 4], 1),
        (vec![6], 0),
    ] {
        let l = layer(2, 3, &[4, 3], 3, 6);
        let n: usize = sizes.iter().sum();
        let x = random(&mut rng, &[n, 2], 1.0);
        let dim_size = sizes.len() + pad;
        let w = random(&mut rng, &[dim_size, 3], 1.0);
        let (index, ptr) = (index_of(&sizes), ptr_of(&sizes));
        let ds = (pad > 0).then_some(dim_size);
        let a = train64(&l, &x, Segments::Index(&index), ds, &w);
        let b = train64(&l, &x, Segments::Ptr(&ptr), ds, &w);
        assert!(rel(&b.out, &a.out) <= 1e-13, "{sizes:?}");
        assert!(rel(&b.grad_x, &a.grad_x) <= 1e-12, "{sizes:?}");
        for (gb, ga) in b.grads.iter().zip(&a.grads) {
            assert!(rel(gb, ga) <= 1e-12, "{sizes:?}");
        }
        // In f32 too, through the public inference path.
        let x32: Tensor<f32> = x.cast();
        let a = l.forward(&x32, Segments::Index(&index), ds).unwrap();
        let b = l.forward(&x32, Segments::Ptr(&ptr), ds).unwrap();
        let (a, b): (Vec<f64>, Vec<f64>) = (
            a.data().iter().map(|&v| f64::from(v)).collect(),
            b.data().iter().map(|&v| f64::from(v)).collect(),
        );
        assert!(rel(&b, &a) <= 1e-6, "{sizes:?}");
    }
    // One set = an index of zeros = ptr [0, N].
    let l = layer(2, 3, &[4], 3, 7);
    let x = random(&mut rng, &[5, 2], 1.0);
    let w = random(&mut rng, &[1, 3], 1.0);
    let one = train64(&l, &x, Segments::One, None, &w);
    let zeros = train64(&l, &x, Segments::Index(&[0; 5]), None, &w);
    let ptr = train64(&l, &x, Segments::Ptr(&[0, 5]), None, &w);
    for r in [&zeros, &ptr] {
        assert!(rel(&r.out, &one.out) <= 1e-13);
        assert!(rel(&r.grad_x, &one.grad_x) <= 1e-12);
    }
}

/// N = 0: every set is empty, so every row is zero (y starts at 0 and the
/// regulariser's gradient at 0 is 0), whichever way the sets are described.
#[test]
fn no_elements_give_zero_rows() {
    let l = layer(2, 3, &[4], 3, 15);
    let x = Tensor::from_vec(&[0, 2], Vec::<f32>::new()).unwrap();
    for (seg, dim_size, rows) in [
        (Segments::Index(&[]), Some(3), 3),
        (Segments::Index(&[]), None, 0),
        (Segments::Ptr(&[0, 0, 0]), None, 2),
        (Segments::Ptr(&[0]), Some(2), 2),
        (Segments::One, None, 1),
    ] {
        let y = l.forward(&x, seg, dim_size).unwrap();
        assert_eq!(y.shape(), &[rows, 3], "{seg:?}");
        assert!(y.data().iter().all(|&v| v == 0.0), "{seg:?}");
        let x64 = Tensor::from_vec(&[0, 2], Vec::<f64>::new()).unwrap();
        let w = Tensor::from_vec(&[rows, 3], vec![1.0; rows * 3]).unwrap();
        let r = train64(&l, &x64, seg, dim_size, &w);
        assert!(r.out.iter().all(|&v| v == 0.0), "{seg:?}");
        assert!(
            r.grads.iter().flatten().all(|&g| g == 0.0),
            "{seg:?} {dim_size:?}"
        );
    }
}

#[test]
fn unsorted_index_equals_sorted_after_permuting() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let l = layer(3, 2, &[5], 4, 9);
    let sizes = [4usize, 0, 3, 1, 5];
    let sorted = index_of(&sizes);
    let n = sorted.len();
    let x = random(&mut rng, &[n, 3], 1.0);
    let w = random(&mut rng, &[6, 2], 1.0);
    let a = train64(&l, &x, Segments::Index(&sorted), Some(6), &w);
    // Element i of the shuffled input is element perm[i] of the sorted one.
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    let index: Vec<i64> = perm.iter().map(|&p| sorted[p]).collect();
    let xs: Vec<f64> = perm
        .iter()
        .flat_map(|&p| x.data()[3 * p..3 * p + 3].to_vec())
        .collect();
    let xp = Tensor::from_vec(&[n, 3], xs).unwrap();
    let b = train64(&l, &xp, Segments::Index(&index), Some(6), &w);
    assert!(rel(&b.out, &a.out) <= 1e-13);
    for (ga, gb) in a.grads.iter().zip(&b.grads) {
        assert!(rel(gb, ga) <= 1e-12);
    }
    let gx: Vec<f64> = perm
        .iter()
        .flat_map(|&p| a.grad_x[3 * p..3 * p + 3].to_vec())
        .collect();
    assert!(rel(&b.grad_x, &gx) <= 1e-12);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Permuting the elements (whatever their sets) leaves the output unchanged;
    /// relabelling the sets by a permutation π moves output row s to row π(s). Small
    /// random configurations, with empty sets, sets of one element, padding rows and
    /// N = 0.
    #[test]
    fn invariant_to_element_order_and_equivariant_to_set_labels(
        f in 1usize..4,
        o in 1usize..4,
        hidden in proptest::collection::vec(1usize..5, 0..3),
        iters in 0usize..4,
        sizes in proptest::collection::vec(0usize..4, 0..5),
        pad in 0usize..2,
        seed in any::<u64>(),
    ) {
        let l = layer(f, o, &hidden, iters, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let dim_size = sizes.len() + pad;
        let sorted = index_of(&sizes);
        let n = sorted.len();
        let x = random(&mut rng, &[n, f], 2.0);
        let base = infer(&l, &x, Segments::Index(&sorted), Some(dim_size)).unwrap();
        prop_assert_eq!(base.shape(), &[dim_size, o][..]);
        prop_assert!(base.data().iter().all(|v| v.is_finite()));
        // Empty sets (and padding rows) output zeros.
        for (s, row) in base.data().chunks(o).enumerate() {
            if sizes.get(s).copied().unwrap_or(0) == 0 {
                prop_assert!(row.iter().all(|&v| v == 0.0), "set {} row {:?}", s, row);
            }
        }

        // Permute the elements.
        let mut perm: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        let index: Vec<i64> = perm.iter().map(|&p| sorted[p]).collect();
        let xs: Vec<f64> = perm.iter().flat_map(|&p| x.data()[f * p..f * (p + 1)].to_vec()).collect();
        let xp = Tensor::from_vec(&[n, f], xs).unwrap();
        let permuted = infer(&l, &xp, Segments::Index(&index), Some(dim_size)).unwrap();
        prop_assert!(rel(permuted.data(), base.data()) <= 1e-12);

        // Relabel the sets.
        let mut pi: Vec<usize> = (0..dim_size).collect();
        for i in (1..dim_size).rev() {
            pi.swap(i, rng.random_range(0..=i));
        }
        let relabelled: Vec<i64> = index.iter().map(|&s| pi[s as usize] as i64).collect();
        let moved = infer(&l, &xp, Segments::Index(&relabelled), Some(dim_size)).unwrap();
        let mut expected = vec![0.0; dim_size * o];
        for s in 0..dim_size {
            expected[pi[s] * o..(pi[s] + 1) * o].copy_from_slice(&base.data()[s * o..(s + 1) * o]);
        }
        prop_assert!(rel(moved.data(), &expected) <= 1e-12);
    }
}

/// `forward` keeps its buffers between calls: inputs of different sizes in a row
/// (larger, smaller, empty, larger again) give exactly what a fresh layer gives.
#[test]
fn forward_reuses_its_workspace_without_leaking_values() {
    let l = layer(3, 2, &[8, 8], 3, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let cases: Vec<(Tensor<f32>, Vec<i64>)> = [300usize, 7, 0, 129, 300]
        .iter()
        .map(|&n| {
            let x = random(&mut rng, &[n, 3], 2.0).cast::<f32>();
            let index = (0..n as i64).map(|i| (i * 5) % 4).collect();
            (x, index)
        })
        .collect();
    for (x, index) in &cases {
        let reused = l.forward(x, Segments::Index(index), Some(4)).unwrap();
        let fresh = l
            .clone()
            .forward(x, Segments::Index(index), Some(4))
            .unwrap();
        assert_eq!(reused.data(), fresh.data(), "n = {}", x.shape()[0]);
        // Same numbers as the tape's eager path.
        let taped = infer(&l, x, Segments::Index(index), Some(4)).unwrap();
        assert_eq!(reused.data(), taped.data());
    }
    assert!(l.workspace_bytes() > 0);
    assert_eq!(l.clone().workspace_bytes(), 0);
}

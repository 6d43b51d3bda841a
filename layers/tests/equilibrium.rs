//! `EquilibriumAggregation` beyond the reference cases: the inference path equals the
//! training path, `ptr` equals `index`, the order of the elements does not matter,
//! every bad input is a typed error naming the argument and its values, the double
//! backward agrees with finite differences, and (proptest) the layer is invariant to
//! permuting elements within sets and equivariant to relabelling the sets.

use readout_layers::PygWeights;
use std::path::PathBuf;

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use readout_core::gradcheck::{Check, GradcheckOptions, check_gradients};
use readout_core::{Real, Tape, Tensor};
use readout_layers::{
    Bound, EquilibriumAggregation, InnerGrad, LayerError, LayerKind, Segments, load_cases,
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A layer with PyTorch's initialisation from `seed`, then every parameter (the
/// LayerNorm affine, `lamb`, `_lr`, `_mom` included) moved by up to ±0.2, so that no
/// symmetry of the initial values hides a bug.
fn layer(f: usize, o: usize, hidden: &[usize], iters: usize, seed: u64) -> EquilibriumAggregation {
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

fn random(rng: &mut ChaCha8Rng, dims: &[usize], scale: f64) -> Tensor<f64> {
    let n = dims.iter().product();
    Tensor::from_vec(
        dims,
        (0..n).map(|_| rng.random_range(-scale..scale)).collect(),
    )
    .unwrap()
}

/// Output, gradient of every parameter, gradient of x, for `loss = Σ out ⊙ w`, in f64.
struct Run {
    out: Vec<f64>,
    grads: Vec<Vec<f64>>,
    grad_x: Vec<f64>,
}

/// The recorded forward pass, `loss = Σ out ⊙ w` and its gradients, with the
/// parameters already bound on `tape`.
fn run_bound(
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

fn train64(
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
fn train64_jittered(
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
fn infer<T: Real>(
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

/// `max |a − b| / max(1, max |b|)`.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

fn index_of(sizes: &[usize]) -> Vec<i64> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(s, &k)| std::iter::repeat_n(s as i64, k))
        .collect()
}

fn ptr_of(sizes: &[usize]) -> Vec<i64> {
    let mut ptr = vec![0i64];
    for &k in sizes {
        ptr.push(ptr.last().unwrap() + k as i64);
    }
    ptr
}

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

/// The error's message, which must name the argument and the values at fault.
fn message(r: Result<Tensor<f32>, LayerError>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a {:?} output", t.shape()),
        Err(e) => e.to_string(),
    }
}

fn contains_all(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{msg}` does not mention `{p}`");
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_argument_and_values() {
    let l = layer(3, 2, &[4], 2, 10);
    let x = Tensor::from_vec(&[4, 3], vec![0.1f32; 12]).unwrap();

    // A dim_size smaller than max(index) + 1 (an index out of range of dim_size).
    let m = message(l.forward(&x, Segments::Index(&[0, 4, 1, 2]), Some(3)));
    contains_all(&m, &["dim_size", "3", "max(index) + 1 = 5"]);
    let m = message(l.forward(&x, Segments::Index(&[0, 1, 1, 2]), Some(0)));
    contains_all(&m, &["dim_size", "0", "= 3"]);
    // dim_size 0 with one set holding elements.
    let m = message(l.forward(&x, Segments::One, Some(0)));
    contains_all(&m, &["dim_size", "0"]);
    // A negative index, with its position.
    let m = message(l.forward(&x, Segments::Index(&[0, 1, -1, 2]), None));
    contains_all(&m, &["index", "-1", "position 2"]);
    // An index of the wrong length.
    let m = message(l.forward(&x, Segments::Index(&[0, 1, 2]), None));
    contains_all(&m, &["index", "3", "4"]);
    // ptr: does not start at 0, decreases, does not end at N, negative, too few sets.
    let m = message(l.forward(&x, Segments::Ptr(&[1, 2, 4]), None));
    contains_all(&m, &["ptr", "start at 0", "1"]);
    let m = message(l.forward(&x, Segments::Ptr(&[0, 3, 2, 4]), None));
    contains_all(&m, &["ptr", "decrease", "2"]);
    let m = message(l.forward(&x, Segments::Ptr(&[0, 2, 3]), None));
    contains_all(&m, &["ptr", "3", "4"]);
    let m = message(l.forward(&x, Segments::Ptr(&[0, -2, 4]), None));
    contains_all(&m, &["ptr", "-2", "position 1"]);
    let m = message(l.forward(&x, Segments::Ptr(&[0, 1, 2, 4]), Some(2)));
    contains_all(&m, &["dim_size", "2", "3 sets"]);
    // x of the wrong width or rank.
    let wide = Tensor::from_vec(&[4, 2], vec![0.1f32; 8]).unwrap();
    let m = message(l.forward(&wide, Segments::One, None));
    contains_all(&m, &["`x`", "[4, 2]", "[4, 3]"]);
    let flat = Tensor::from_vec(&[12], vec![0.1f32; 12]).unwrap();
    let m = message(l.forward(&flat, Segments::One, None));
    contains_all(&m, &["`x`", "[12]", "3]"]);
    let cube = Tensor::from_vec(&[1, 4, 3], vec![0.1f32; 12]).unwrap();
    let m = message(l.forward(&cube, Segments::One, None));
    contains_all(&m, &["`x`", "[1, 4, 3]"]);
    // The parameters of another configuration.
    let other = layer(3, 2, &[4, 4], 2, 11);
    let mut tape = Tape::<f32>::new();
    let p = other.parameters().bind(&mut tape, true);
    let xv = tape.variable(x.clone());
    let e = l
        .forward_on(&mut tape, &p, xv, Segments::One, None, InnerGrad::Record)
        .unwrap_err();
    contains_all(
        &e.to_string(),
        &[
            "params",
            &other.parameters().len().to_string(),
            &l.parameters().len().to_string(),
        ],
    );
    // Every mode computes with the bound values, not the layer's own: a changed `lamb`
    // gives the same output in the eager and the recorded mode.
    let run = |mode: InnerGrad| {
        let mut tape = Tape::<f64>::new();
        let mut vars = l.parameters().bind(&mut tape, true).vars().to_vec();
        let lamb = l
            .parameters()
            .iter()
            .position(|p| p.name() == "lamb")
            .unwrap();
        vars[lamb] = tape.variable(Tensor::from_vec(&[1], vec![2.5]).unwrap());
        let xv = tape.constant(x.cast());
        let y = l
            .forward_on(
                &mut tape,
                &Bound::from_vars(vars),
                xv,
                Segments::One,
                None,
                mode,
            )
            .unwrap();
        tape.value(y).unwrap().data().to_vec()
    };
    let (eager, record) = (run(InnerGrad::Eager), run(InnerGrad::Record));
    let own = l.forward(&x, Segments::One, None).unwrap();
    for ((e, r), o) in eager.iter().zip(&record).zip(own.data()) {
        assert!((e - r).abs() < 1e-12, "eager {e} vs record {r}");
        assert!(
            (e - f64::from(*o)).abs() > 1e-6,
            "the bound lamb was ignored"
        );
    }
    // Constructor arguments.
    let e = EquilibriumAggregation::new(0, 2, &[4], 2, 0.1).unwrap_err();
    contains_all(&e.to_string(), &["in_channels", "0"]);
    let e = EquilibriumAggregation::new(3, 0, &[4], 2, 0.1).unwrap_err();
    contains_all(&e.to_string(), &["out_channels", "0"]);
    let e = EquilibriumAggregation::new(3, 2, &[4, 0], 2, 0.1).unwrap_err();
    contains_all(&e.to_string(), &["num_layers", "[4, 0]", "1"]);
    let e = EquilibriumAggregation::new(3, 2, &[4], 2, f32::NAN).unwrap_err();
    contains_all(&e.to_string(), &["lamb", "NaN"]);
}

/// `s = Σ_k ⟨∂loss/∂θ_k, v_k⟩ + ⟨∂loss/∂x, v_x⟩` and, when `second`, its gradient
/// with respect to x and every parameter (a double backward through the unrolled,
/// already second-order inner loop).
fn directional(
    l: &EquilibriumAggregation,
    x: &Tensor<f64>,
    index: &[i64],
    w: &Tensor<f64>,
    v: &[Tensor<f64>],
    second: bool,
) -> (f64, Vec<Vec<f64>>) {
    let mut tape = Tape::<f64>::new();
    let p = l.parameters().bind(&mut tape, true);
    let xv = tape.variable(x.clone());
    let y = l
        .forward_on(
            &mut tape,
            &p,
            xv,
            Segments::Index(index),
            None,
            InnerGrad::Record,
        )
        .unwrap();
    let wv = tape.constant(w.clone());
    let yw = tape.mul(y, wv).unwrap();
    let loss = tape.sum(yw).unwrap();
    let mut wrt: Vec<_> = p.vars().to_vec();
    wrt.push(xv);
    let g = tape.grad(loss, None, &wrt, second).unwrap();
    let mut s = None;
    for (gi, vi) in g.iter().zip(v) {
        let c = tape.constant(vi.clone());
        let prod = tape.mul(*gi, c).unwrap();
        let term = tape.sum(prod).unwrap();
        s = Some(match s {
            None => term,
            Some(acc) => tape.add(acc, term).unwrap(),
        });
    }
    let s = s.unwrap();
    let value = tape.value(s).unwrap().item();
    if !second {
        return (value, Vec::new());
    }
    let h = tape.grad(s, None, &wrt, false).unwrap();
    let grads = h
        .iter()
        .map(|&hv| tape.value(hv).unwrap().data().to_vec())
        .collect();
    (value, grads)
}

#[test]
fn double_backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let l = layer(2, 2, &[3], 3, 13);
    let index = [0i64, 1, 0, 1, 1];
    let x = random(&mut rng, &[5, 2], 1.0);
    let w = random(&mut rng, &[2, 2], 1.0);
    let mut v: Vec<Tensor<f64>> = l
        .parameters()
        .iter()
        .map(|p| random(&mut rng, p.value().shape(), 1.0))
        .collect();
    v.push(random(&mut rng, &[5, 2], 1.0));
    let (_, analytic) = directional(&l, &x, &index, &w, &v, true);

    let h = 1e-5;
    let check = |name: &str, got: f64, plus: f64, minus: f64| {
        let fd = (plus - minus) / (2.0 * h);
        assert!(
            (got - fd).abs() <= 1e-6 * fd.abs().max(1.0),
            "{name}: double backward {got}, finite differences {fd}"
        );
    };
    // Every entry of x.
    for (j, &xg) in analytic.last().unwrap().iter().enumerate() {
        let mut xp = x.clone();
        xp.data_mut()[j] += h;
        let mut xm = x.clone();
        xm.data_mut()[j] -= h;
        let plus = directional(&l, &xp, &index, &w, &v, false).0;
        let minus = directional(&l, &xm, &index, &w, &v, false).0;
        check(&format!("x[{j}]"), xg, plus, minus);
    }
    // Every scalar parameter and a few entries of each weight. The layer stores f32,
    // so the step actually taken is the difference of the f32 values.
    for (k, analytic_k) in analytic.iter().take(l.parameters().len()).enumerate() {
        let numel = l.parameters().at(k).value().numel();
        for j in (0..numel).step_by(numel.div_ceil(3).max(1)) {
            let at = |d: f64| {
                let mut lp = l.clone();
                let old = lp.parameters().at(k).value().data()[j];
                #[allow(clippy::cast_possible_truncation)]
                let new = (f64::from(old) + d) as f32;
                lp.parameters_mut().at_mut(k).value_mut()[j] = new;
                let s = directional(&lp, &x, &index, &w, &v, false).0;
                (s, f64::from(new) - f64::from(old))
            };
            let ((plus, dp), (minus, dm)) = (at(h), at(-h));
            let fd = (plus - minus) / (dp - dm);
            let got = analytic_k[j];
            let name = l.parameters().at(k).name();
            assert!(
                (got - fd).abs() <= 1e-6 * fd.abs().max(1.0),
                "{name}[{j}]: double backward {got}, finite differences {fd}"
            );
        }
    }
}

/// `readout_core::gradcheck` on the whole layer in f64, with `x` and every parameter as
/// inputs: first order (eager and recorded) and second order (the gradient of
/// `⟨∇L, u⟩`, i.e. a double backward through the unrolled inner loop, which is itself
/// second order) against central differences, for every element.
#[test]
fn gradcheck_of_the_whole_layer() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    // (hidden sizes, index or one set, dim_size)
    type Config = (&'static [usize], Option<Vec<i64>>, Option<usize>);
    let configs: [Config; 3] = [
        (&[3], Some(vec![1, 0, 2, 1, 1, 0]), Some(4)),
        (&[], Some(vec![0, 0, 1, 1, 1, 0]), None),
        (&[2, 3], None, Some(2)),
    ];
    for (seed, (hidden, index, dim_size)) in configs.into_iter().enumerate() {
        let l = layer(2, 2, hidden, 3, 20 + seed as u64);
        let mut inputs = vec![random(&mut rng, &[6, 2], 1.0)];
        inputs.extend(l.parameters().iter().map(|p| p.value().cast::<f64>()));
        let report = check_gradients(
            |tape, vars| {
                let bound = Bound::from_vars(vars[1..].to_vec());
                let seg = match &index {
                    Some(ix) => Segments::Index(ix),
                    None => Segments::One,
                };
                l.forward_on(tape, &bound, vars[0], seg, dim_size, InnerGrad::Record)
                    .map_err(|e| match e {
                        LayerError::Core(c) => c,
                        other => panic!("{other}"),
                    })
            },
            &inputs,
            &GradcheckOptions::default(),
        )
        .unwrap();
        println!("{hidden:?}: {report}");
        assert!(report.passed(), "{hidden:?}: {report}");
        let second = report.summary(Check::SecondOrder).unwrap();
        assert_eq!(
            second.compared,
            inputs.iter().map(Tensor::numel).sum::<usize>()
        );
    }
}

/// f32 (what a deployed model computes) against f64 on configurations no reference
/// case has: forward output and every gradient of `Σ out ⊙ w` within the contract's
/// 1e-4 in the fixtures' measure, except where the problem's own conditioning forbids
/// it (checked, and at most 2 of the 24 configurations: seeds 16 and 23, both with a
/// LayerNorm over 2 features, miss by up to 1.6e-4 where one f32 rounding of the inputs
/// and parameters already moves the exact result by 1e-5 to 2.4e-5). Deterministic
/// seeds, so it never flakes.
#[test]
fn f32_stays_within_1e4_of_f64_on_random_configurations() {
    let mut worst = 0.0f64;
    let mut ill_conditioned = Vec::new();
    for seed in 0..24u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
        let f = rng.random_range(1..7usize);
        let o = rng.random_range(1..7usize);
        let depth = rng.random_range(0..3usize);
        let hidden: Vec<usize> = (0..depth).map(|_| rng.random_range(1..17)).collect();
        let iters = rng.random_range(0..9usize);
        let sets = rng.random_range(1..7usize);
        let sizes: Vec<usize> = (0..sets).map(|_| rng.random_range(0..9)).collect();
        let sorted = index_of(&sizes);
        let n = sorted.len();
        let mut index = sorted.clone();
        for i in (1..n).rev() {
            index.swap(i, rng.random_range(0..=i));
        }
        let pad = rng.random_range(0..3usize);
        let dim_size = sets + pad;
        let l = layer(f, o, &hidden, iters, 200 + seed);
        // Inputs and loss weights exactly representable in f32.
        let x: Tensor<f64> = random(&mut rng, &[n, f], 2.0).cast::<f32>().cast();
        let w: Tensor<f64> = random(&mut rng, &[dim_size, o], 1.0).cast::<f32>().cast();
        let seg = Segments::Index(&index);
        let exact = train64(&l, &x, seg, Some(dim_size), &w);

        let mut tape = Tape::<f32>::new();
        let p = l.parameters().bind(&mut tape, true);
        let xv = tape.variable(x.cast());
        let y = l
            .forward_on(&mut tape, &p, xv, seg, Some(dim_size), InnerGrad::Record)
            .unwrap();
        let out: Vec<f64> = tape
            .value(y)
            .unwrap()
            .data()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let wv = tape.constant(w.cast());
        let yw = tape.mul(y, wv).unwrap();
        let loss = tape.sum(yw).unwrap();
        let g = tape.backward(loss).unwrap();
        let as64 = |t: Option<&Tensor<f32>>, numel: usize| -> Vec<f64> {
            t.map_or(vec![0.0; numel], |t| {
                t.data().iter().map(|&v| f64::from(v)).collect()
            })
        };
        let mut errs = vec![("out".to_string(), rel(&out, &exact.out))];
        for (i, e) in exact.grads.iter().enumerate() {
            let got = as64(g.get(p.var(i)), e.len());
            errs.push((l.parameters().at(i).name().to_string(), rel(&got, e)));
        }
        errs.push(("x".into(), rel(&as64(g.get(xv), n * f), &exact.grad_x)));
        // Where f32 misses 1e-4, the problem itself must be that ill-conditioned:
        // perturbing x and every parameter by one f32 rounding (relative 6e-8) in exact
        // arithmetic must already move that result by at least 1/20 of the f32 error.
        // (A LayerNorm over 2 features with nearly equal inputs does this.)
        let mut floor: Option<Vec<f64>> = None;
        for (k, (name, e)) in errs.iter().enumerate() {
            if *e <= 1e-4 {
                worst = worst.max(*e);
                continue;
            }
            let floor = floor.get_or_insert_with(|| {
                let mut fl = vec![0.0f64; errs.len()];
                for _ in 0..3 {
                    let xp: Vec<f64> = x
                        .data()
                        .iter()
                        .map(|v| v * (1.0 + rng.random_range(-6e-8..6e-8f64)))
                        .collect();
                    let xp = Tensor::from_vec(&[n, f], xp).unwrap();
                    let r = train64_jittered(&l, &xp, seg, Some(dim_size), &w, &mut rng);
                    let mut all = vec![rel(&r.out, &exact.out)];
                    all.extend(r.grads.iter().zip(&exact.grads).map(|(a, b)| rel(a, b)));
                    all.push(rel(&r.grad_x, &exact.grad_x));
                    for (m, v) in fl.iter_mut().zip(all) {
                        *m = m.max(v);
                    }
                }
                fl
            });
            assert!(
                *e <= 20.0 * floor[k],
                "seed {seed} (F {f}, O {o}, {hidden:?}, grad_iter {iters}, sizes {sizes:?}, \
                 dim_size {dim_size}): {name} error {e:e}, conditioning floor {:e}",
                floor[k]
            );
            ill_conditioned.push(format!(
                "seed {seed} {name}: {e:.2e} (floor {:.2e})",
                floor[k]
            ));
        }
    }
    println!("worst f32 error over 24 random configurations: {worst:.2e}");
    println!("beyond 1e-4 because ill-conditioned: {ill_conditioned:?}");
    let configs: std::collections::BTreeSet<&str> = ill_conditioned
        .iter()
        .map(|m| m.split(' ').nth(1).unwrap())
        .collect();
    assert!(configs.len() <= 2, "{ill_conditioned:?}");
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

//! `EquilibriumAggregation`'s gradients in `f64`: the double backward agrees with
//! finite differences, `gradcheck` of the whole layer (every parameter and `x`), and
//! `f32` stays near `f64` on random configurations.

mod common;

use common::equilibrium::*;
use common::rel_err as rel;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use readout_core::gradcheck::{Check, GradcheckOptions, check_gradients};
use readout_core::{Tape, Tensor};
use readout_layers::{Bound, EquilibriumAggregation, InnerGrad, LayerError, PygWeights, Segments};

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

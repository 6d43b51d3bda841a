//! Both layers' parameters, built from their modules, against PyTorch's
//! `reset_parameters` written out here independently: the keys in `state_dict` order,
//! the shapes, and the values drawn from a seeded generator in PyTorch's order (each
//! `Linear`: weight then bias, both from `U(−1/√fan_in, 1/√fan_in)` with the linear's
//! own fan-in; LayerNorm 1 and 0 with no draw; `k ~ U(−1, 1)`; `Conv2d` from
//! `U(−1/√H, 1/√H)`), so a seeded layer holds the same numbers whatever its code's
//! structure.

use rand::{RngExt, SeedableRng};
use readout_layers::{EquilibriumAggregation, MemPooling, PygWeights};

type Rng = rand::rngs::Xoshiro256PlusPlus;

/// `n` values from `U(−bound, bound)`, drawn one by one.
fn draw(rng: &mut Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

/// `(key, shape, values)` of PyG's `EquilibriumAggregation` after `reset_parameters`.
fn equilibrium_reference(
    cin: usize,
    cout: usize,
    hidden: &[usize],
    lamb: f32,
    rng: &mut Rng,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let c = cin + cout;
    let mut out = vec![("lamb".to_string(), vec![1], vec![lamb])];
    let mut linear = |out: &mut Vec<_>, key: String, fan_in: usize, fan_out: usize| {
        let b = 1.0 / (fan_in as f32).sqrt();
        let w = draw(rng, fan_out * fan_in, b);
        let bias = draw(rng, fan_out, b);
        out.push((format!("{key}.weight"), vec![fan_out, fan_in], w));
        out.push((format!("{key}.bias"), vec![fan_out], bias));
    };
    let mut prev = c;
    for (i, &h) in hidden.iter().enumerate() {
        linear(&mut out, format!("potential.layers.{i}.0"), prev, h);
        out.push((
            format!("potential.layers.{i}.1.weight"),
            vec![h],
            vec![1.0; h],
        ));
        out.push((
            format!("potential.layers.{i}.1.bias"),
            vec![h],
            vec![0.0; h],
        ));
        prev = h;
    }
    let l = hidden.len();
    linear(&mut out, format!("potential.layers.{l}"), prev, 1);
    for (j, &h) in hidden.iter().chain([1].iter()).enumerate() {
        linear(&mut out, format!("potential.res_trans.{j}"), c, h);
    }
    out.push(("optimizer._lr".to_string(), vec![1], vec![0.1]));
    out.push(("optimizer._mom".to_string(), vec![1], vec![0.9]));
    out
}

fn listed<L: PygWeights>(layer: &L) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    layer
        .parameters()
        .iter()
        .map(|p| {
            (
                p.name().to_string(),
                p.value().shape().to_vec(),
                p.value().data().to_vec(),
            )
        })
        .collect()
}

#[test]
fn equilibrium_parameters_follow_pytorch_reset_order() {
    for hidden in [&[][..], &[5], &[4, 3, 6]] {
        // `new` draws from the fixed seed 0.
        let layer = EquilibriumAggregation::new(3, 2, hidden, 5, 0.25).unwrap();
        let mut rng = Rng::seed_from_u64(0);
        let expect = equilibrium_reference(3, 2, hidden, 0.25, &mut rng);
        assert_eq!(listed(&layer), expect, "hidden {hidden:?}");
        // reset_parameters with another generator draws the same sequence from it.
        let mut layer = layer;
        layer.reset_parameters(&mut Rng::seed_from_u64(42));
        let expect = equilibrium_reference(3, 2, hidden, 0.25, &mut Rng::seed_from_u64(42));
        assert_eq!(listed(&layer), expect, "hidden {hidden:?}, seed 42");
    }
}

#[test]
fn mem_pooling_parameters_follow_pytorch_reset_order() {
    let (f, o, h, k) = (7, 5, 4, 6);
    let layer = MemPooling::new(f, o, h, k, 1.0).unwrap();
    let mut rng = Rng::seed_from_u64(0);
    let expect = vec![
        (
            "k".to_string(),
            vec![h, k, f],
            draw(&mut rng, h * k * f, 1.0),
        ),
        (
            "conv.weight".to_string(),
            vec![h],
            draw(&mut rng, h, 1.0 / (h as f32).sqrt()),
        ),
        (
            "lin.weight".to_string(),
            vec![o, f],
            draw(&mut rng, o * f, 1.0 / (f as f32).sqrt()),
        ),
    ];
    assert_eq!(listed(&layer), expect);
    let pyg: Vec<Vec<usize>> = layer
        .parameters()
        .iter()
        .map(|p| p.pyg_shape().to_vec())
        .collect();
    assert_eq!(pyg, [vec![h, k, f], vec![1, h, 1, 1], vec![o, f]]);
}

#[test]
fn initialisation_follows_pytorch() {
    let l = MemPooling::new(7, 5, 4, 6, 1.0).unwrap();
    let names: Vec<&str> = l.parameters().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["k", "conv.weight", "lin.weight"]);
    let shape = |i: usize| l.parameters().at(i).value().shape().to_vec();
    assert_eq!(shape(0), [4, 6, 7]);
    assert_eq!(shape(1), [4]);
    assert_eq!(shape(2), [5, 7]);
    let pyg = |i: usize| l.parameters().at(i).pyg_shape().to_vec();
    assert_eq!(pyg(0), [4, 6, 7]);
    assert_eq!(pyg(1), [1, 4, 1, 1]);
    assert_eq!(pyg(2), [5, 7]);
    let within = |i: usize, b: f32| {
        let v = l.parameters().at(i).value().data();
        v.iter().all(|x| x.abs() <= b) && v.iter().any(|x| x.abs() > b / 4.0)
    };
    assert!(within(0, 1.0));
    assert!(within(1, 0.5)); // 1/√4
    assert!(within(2, 1.0 / 7f32.sqrt()));
    // Deterministic from the fixed seed; reset_parameters draws anew.
    assert_eq!(l, MemPooling::new(7, 5, 4, 6, 1.0).unwrap());
    let mut m = l.clone();
    m.reset_parameters(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7));
    assert_ne!(l, m);
    assert_eq!(
        (
            l.in_channels(),
            l.out_channels(),
            l.heads(),
            l.num_clusters()
        ),
        (7, 5, 4, 6)
    );
    assert_eq!(l.tau(), 1.0);
}

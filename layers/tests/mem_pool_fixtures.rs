//! The PyG reference cases `mp_*.safetensors`: forward (`out`, `S`), `kl_loss`, the
//! fixture loss and every gradient, on the ragged path (fused node and op by op) and
//! the dense path, in `f64`; the fused node against the tape to 1e-12; and the `f32`
//! inference path's forward.

mod common;

use common::{Case, rel_err, weighted_sum};
use readout_core::{Tape, Tensor};
use readout_layers::PygWeights;
use readout_layers::{Mask, PoolArgs, PoolPath};

const TOL: f64 = 1e-4;

const CASES: [&str; 7] = [
    "mp_pyg_test_shape",
    "mp_dense_no_mask",
    "mp_dense_mask",
    "mp_tau_uneven",
    "mp_padding_empty_graphs",
    "mp_single_graph",
    "mp_wide",
];

fn args<'a>(case: &'a Case, mask_dims: &mut [usize; 2]) -> PoolArgs<'a> {
    let mut a = PoolArgs::new();
    if let Some(b) = case.i("input.batch") {
        a = a.batch(b);
    }
    if let Some((s, m)) = case.b("input.mask") {
        *mask_dims = [s[0], s[1]];
        a = a.mask(Mask::new(*mask_dims, m).unwrap());
    }
    if let Some(n) = case.meta_num("forward", "max_num_nodes") {
        a = a.max_num_nodes(n as usize);
    }
    if let Some(b) = case.meta_num("forward", "batch_size") {
        a = a.batch_size(b as usize);
    }
    a
}

/// Runs one case on one path and returns `(quantity, values, PyG's key)` for every
/// checked tensor: `out`, PyG's padded `S`, `kl_loss` (on the ragged rows or PyG's
/// padded `S`), the fixture loss and its gradient to every parameter and to `x`.
fn run(name: &str, path: PoolPath, ragged_kl: bool) -> Vec<(String, Vec<f64>, String)> {
    let case = Case::load(name);
    let layer = case.mem_pooling();
    let mut dims = [0; 2];
    let a = args(&case, &mut dims).path(path);
    let mut tape = Tape::<f64>::new();
    let bound = layer.parameters().bind(&mut tape, true);
    let x = tape.variable(case.tensor("input.x"));
    let mut pooled = layer.forward_on(&mut tape, &bound, x, a).unwrap();
    let out = pooled.out();
    let s = pooled.s(&mut tape).unwrap();
    let kl = if ragged_kl {
        pooled.kl_loss(&mut tape).unwrap()
    } else {
        readout_layers::MemPooling::kl_loss_on(&mut tape, s).unwrap()
    };
    let lo = weighted_sum(&mut tape, out, case.f("lossw.out").1);
    let ls = weighted_sum(&mut tape, s, case.f("lossw.S").1);
    let lk = tape.scale(kl, case.kl_weight()).unwrap();
    let loss = tape.add(lo, ls).unwrap();
    let loss = tape.add(loss, lk).unwrap();

    let mut got = Vec::new();
    let mut keep = |what: &str, t: &Tensor<f64>, key: &str| {
        let want = common::layer_shape(case.f(key).0);
        assert_eq!(
            t.shape(),
            want.as_slice(),
            "{name} {path:?}: shape of {what}"
        );
        got.push((what.to_string(), t.data().to_vec(), key.to_string()));
    };
    keep("out", &tape.value(out).unwrap().clone(), "expect.out");
    keep("S", &tape.value(s).unwrap().clone(), "expect.S");
    let klv = Tensor::from_vec(&[1], vec![tape.value(kl).unwrap().item()]).unwrap();
    keep("kl_loss", &klv, "expect.kl_loss");
    let lv = Tensor::from_vec(&[1], vec![tape.value(loss).unwrap().item()]).unwrap();
    keep("loss", &lv, "expect.loss");
    let mut wrt: Vec<_> = bound.vars().to_vec();
    wrt.push(x);
    let grads = tape.grad(loss, None, &wrt, false).unwrap();
    let names = ["k", "conv.weight", "lin.weight", "input.x"];
    for (n, g) in names.iter().zip(grads) {
        let gv = tape.value(g).unwrap().clone();
        keep(&format!("grad.{n}"), &gv, &format!("expect.grad.{n}"));
    }
    got
}

fn assert_case(name: &str) {
    for (path, ragged_kl) in [
        (PoolPath::Ragged, false),
        (PoolPath::Ragged, true),
        (PoolPath::RaggedTape, true),
        (PoolPath::Dense, false),
    ] {
        let case = Case::load(name);
        let errs: Vec<(String, f64)> = run(name, path, ragged_kl)
            .into_iter()
            .map(|(what, v, key)| (what, rel_err(&v, case.f(&key).1)))
            .collect();
        let worst = errs.iter().fold(0.0f64, |m, e| m.max(e.1));
        println!(
            "{name} {path:?}{}: worst {worst:.2e}  {}",
            if ragged_kl { " (ragged kl)" } else { "" },
            errs.iter()
                .map(|(n, e)| format!("{n} {e:.1e}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (n, e) in &errs {
            assert!(*e <= TOL, "{name} {path:?}: {n} error {e:e} > {TOL:e}");
        }
    }
}

#[test]
fn mp_pyg_test_shape() {
    assert_case("mp_pyg_test_shape");
}

#[test]
fn mp_dense_no_mask() {
    assert_case("mp_dense_no_mask");
}

#[test]
fn mp_dense_mask() {
    assert_case("mp_dense_mask");
}

#[test]
fn mp_tau_uneven() {
    assert_case("mp_tau_uneven");
}

#[test]
fn mp_padding_empty_graphs() {
    assert_case("mp_padding_empty_graphs");
}

#[test]
fn mp_single_graph() {
    assert_case("mp_single_graph");
}

#[test]
fn mp_wide() {
    assert_case("mp_wide");
}

/// The fused training node ([`PoolPath::Ragged`]) against the same computation
/// recorded op by op ([`PoolPath::RaggedTape`]) in `f64`: `out`, `S`, `kl_loss`, the
/// loss and every gradient agree to 1e-12 of each quantity's largest magnitude.
#[test]
fn fused_node_equals_the_tape_on_every_case() {
    for name in CASES {
        let fused = run(name, PoolPath::Ragged, true);
        let taped = run(name, PoolPath::RaggedTape, true);
        for ((what, a, _), (_, b, _)) in fused.iter().zip(&taped) {
            let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
            let diff = a
                .iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            println!("{name} {what}: fused vs tape {:.1e}", diff / scale);
            assert!(
                diff <= 1e-12 * scale,
                "{name} {what}: {diff:e} of {scale:e}"
            );
        }
    }
}

/// The `f32` inference path (`forward`, `kl_loss`) against the same references.
#[test]
fn f32_inference_matches_every_case() {
    for name in CASES {
        let case = Case::load(name);
        let layer = case.mem_pooling();
        let mut dims = [0; 2];
        let x: Tensor<f32> = case.tensor("input.x").cast();
        for path in [PoolPath::Ragged, PoolPath::Dense] {
            let a = args(&case, &mut dims).path(path);
            let (out, s) = layer.forward(&x, a).unwrap();
            let kl = readout_layers::MemPooling::kl_loss(&s).unwrap();
            let to64 = |t: &Tensor<f32>| t.data().iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
            let e_out = rel_err(&to64(&out), case.f("expect.out").1);
            let e_s = rel_err(&to64(&s), case.f("expect.S").1);
            let e_kl = rel_err(&[f64::from(kl)], case.f("expect.kl_loss").1);
            println!("{name} f32 {path:?}: out {e_out:.1e}, S {e_s:.1e}, kl {e_kl:.1e}");
            assert!(
                e_out <= TOL && e_s <= TOL && e_kl <= TOL,
                "{name} f32 {path:?}"
            );
        }
    }
}

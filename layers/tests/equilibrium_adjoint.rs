//! The adjoint training mode gives the recorded mode's gradients (PyG's), on every
//! reference case, in f64.

use readout_core::{Tape, Tensor};
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

/// Output and the gradients of `Σ out·R` for every parameter and `x`, in f64.
fn run(layer: &EquilibriumAggregation, case: &Case, mode: InnerGrad) -> Vec<Vec<f64>> {
    let mut tape = Tape::<f64>::new();
    let bound = layer.parameters().bind(&mut tape, true);
    let x = tape.variable(case.x.cast());
    let seg = match &case.index {
        Some(i) => Segments::Index(i),
        None => Segments::One,
    };
    let y = layer
        .forward_on(&mut tape, &bound, x, seg, case.forward.dim_size, mode)
        .unwrap();
    let r = tape.constant(case.lossw["out"].cast());
    let yr = tape.mul(y, r).unwrap();
    let loss = tape.sum(yr).unwrap();
    let mut out = vec![tape.value(y).unwrap().data().to_vec()];
    let grads = tape.backward(loss).unwrap();
    for &v in bound.vars().iter().chain([&x]) {
        let n = tape.value(v).unwrap().numel();
        out.push(
            grads
                .get(v)
                .map_or(vec![0.0; n], |g: &Tensor<f64>| g.data().to_vec()),
        );
    }
    out
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

//! `EquilibriumAggregation`: every bad input is a typed error naming the argument and
//! its values.

mod common;

use common::equilibrium::*;
use readout_core::{Tape, Tensor};
use readout_layers::{Bound, EquilibriumAggregation, InnerGrad, LayerError, PygWeights, Segments};

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

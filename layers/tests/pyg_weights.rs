//! PyG weights in and out of the layers: the reference cases' `param.*` tensors load
//! into `EquilibriumAggregation` under PyG's names and shapes, save back unchanged, and
//! give PyG's forward output.

use std::path::PathBuf;

use readout_layers::{
    CaseArgs, EquilibriumAggregation, LayerError, Segments, StateDict, load_cases, save_state_dict,
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Loads a state dict into a layer: every parameter taken with the layer's shape, and
/// nothing left over. (Returns the library's own error type, as library code would.)
#[allow(clippy::result_large_err)]
fn load_into(layer: &mut EquilibriumAggregation, mut sd: StateDict) -> Result<(), LayerError> {
    for p in layer.parameters_mut().iter_mut() {
        let shape = p.value().shape().to_vec();
        let name = p.name().to_string();
        p.set_value(sd.take(&name, &shape)?)?;
    }
    sd.finish()
}

#[test]
fn equilibrium_cases_load_save_and_match_pyg() {
    let mut checked = 0;
    for case in load_cases(data_dir()).unwrap() {
        let CaseArgs::Equilibrium(a) = &case.args else {
            continue;
        };
        #[allow(clippy::cast_possible_truncation)]
        let mut layer = EquilibriumAggregation::new(
            a.in_channels,
            a.out_channels,
            &a.num_layers,
            a.grad_iter,
            a.lamb as f32,
        )
        .unwrap();
        // Same keys and shapes as PyG's state_dict.
        let ours: Vec<(String, Vec<usize>)> = layer
            .parameters()
            .state_dict()
            .iter()
            .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
            .collect();
        let mut ours_sorted = ours.clone();
        ours_sorted.sort();
        let theirs: Vec<(String, Vec<usize>)> = case
            .params
            .names()
            .map(|n| (n.to_string(), case.params.get(n).unwrap().shape().to_vec()))
            .collect();
        assert_eq!(ours_sorted, theirs, "{}", case.name);

        load_into(&mut layer, case.params.clone()).unwrap();
        let bytes = save_state_dict(&layer.parameters().state_dict()).unwrap();
        assert_eq!(
            StateDict::from_bytes(&bytes).unwrap(),
            case.params,
            "{}",
            case.name
        );

        let segments = match &case.index {
            Some(ix) => Segments::Index(ix),
            None => Segments::One,
        };
        let out = layer
            .forward(&case.x, segments, case.forward.dim_size)
            .unwrap();
        let (err, at) = case.compare("out", out.data()).unwrap();
        assert!(err < 1e-4, "{}: out error {err:e} at {at}", case.name);
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn a_file_for_another_configuration_is_refused() {
    let case = load_cases(data_dir())
        .unwrap()
        .into_iter()
        .find(|c| c.name == "eq_two_sets")
        .unwrap();
    // One hidden layer instead of two: the last linear is `layers.1`, which the file
    // (with `layers.1.0`, `layers.2`) does not have.
    let mut layer = EquilibriumAggregation::new(3, 2, &[10], 5, 0.1).unwrap();
    let e = load_into(&mut layer, case.params.clone()).unwrap_err();
    assert_eq!(
        e,
        LayerError::MissingTensor {
            name: "potential.layers.1.weight".into()
        }
    );
    // Wider hidden layers: the first weight is misshapen.
    let mut layer = EquilibriumAggregation::new(3, 2, &[11, 10], 5, 0.1).unwrap();
    assert!(matches!(
        load_into(&mut layer, case.params.clone()),
        Err(LayerError::WrongShape { .. })
    ));
}

//! PyG weights in and out of `EquilibriumAggregation`: the reference cases' `param.*` tensors load
//! into `EquilibriumAggregation` under PyG's names and shapes, save back unchanged, and
//! give PyG's forward output.

use readout_layers::PygWeights;
use std::path::PathBuf;

use readout_layers::{
    CaseArgs, EquilibriumAggregation, LayerError, Segments, StateDict, load_cases, save_state_dict,
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
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

        layer.load_state_dict(case.params.clone()).unwrap();
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
    let e = layer.load_state_dict(case.params.clone()).unwrap_err();
    assert_eq!(
        e,
        LayerError::MissingTensor {
            name: "potential.layers.1.weight".into()
        }
    );
    // Wider hidden layers: the first weight is misshapen.
    let mut layer = EquilibriumAggregation::new(3, 2, &[11, 10], 5, 0.1).unwrap();
    assert!(matches!(
        layer.load_state_dict(case.params.clone()),
        Err(LayerError::WrongShape { .. })
    ));
}

// ------------------------------------------------------------------------------------
// The layer's own load / save API (`load_state_dict`, `state_dict_bytes`, files) and
// PyG's shapes where readout keeps another view (`MemPooling`'s `conv.weight`).

use std::borrow::Cow;

use readout_layers::{Case, RawTensor};
use safetensors::tensor::{Dtype, View, serialize};

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A safetensors file of the state dict's tensors, with `name` replaced by `replace`
/// (dtype, shape, bytes) — as a PyG user's file could be.
fn file_with(sd: &StateDict, name: &str, replace: Raw) -> Vec<u8> {
    let mut tensors: Vec<(String, Raw)> = sd
        .names()
        .filter(|n| *n != name)
        .map(|n| {
            let t = sd.get(n).unwrap();
            (
                n.to_string(),
                Raw {
                    dtype: Dtype::F32,
                    shape: t.shape().to_vec(),
                    bytes: t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
                },
            )
        })
        .collect();
    tensors.push((name.to_string(), replace));
    serialize(tensors.iter().map(|(n, r)| (n.clone(), r)), None).unwrap()
}

fn two_sets() -> (Case, EquilibriumAggregation) {
    let case = load_cases(data_dir())
        .unwrap()
        .into_iter()
        .find(|c| c.name == "eq_two_sets")
        .unwrap();
    let layer = EquilibriumAggregation::new(3, 2, &[10, 10], 5, 0.1).unwrap();
    (case, layer)
}

/// The case's parameters, every value moved by `shift`, with `name` left out.
fn shifted(case: &Case, shift: f32, without: &str) -> StateDict {
    let mut sd = StateDict::new();
    for n in case.params.names().filter(|n| *n != without) {
        let t = case.params.get(n).unwrap();
        let v = t.data().iter().map(|x| x + shift).collect();
        sd.insert(n, RawTensor::new(n, t.shape().to_vec(), v).unwrap())
            .unwrap();
    }
    sd
}

#[test]
fn load_state_dict_and_save_round_trip_through_files() {
    let (case, mut layer) = two_sets();
    layer.load_state_dict(case.params.clone()).unwrap();
    for (name, t) in layer.parameters().state_dict() {
        assert_eq!(t.data(), case.params.get(name).unwrap().data(), "{name}");
    }
    let dir = std::env::temp_dir().join(format!("readout-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("eq.safetensors");
    layer.save_state_dict(&path).unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk, layer.state_dict_bytes().unwrap());
    assert_eq!(StateDict::from_bytes(&on_disk).unwrap(), case.params);

    let mut fresh = EquilibriumAggregation::new(3, 2, &[10, 10], 5, 0.1).unwrap();
    assert_ne!(fresh.parameters(), layer.parameters());
    fresh.load_state_dict_file(&path).unwrap();
    assert_eq!(fresh.parameters(), layer.parameters());
    let built = EquilibriumAggregation::new(3, 2, &[10, 10], 5, 0.1)
        .unwrap()
        .with_state_dict(StateDict::from_file(&path).unwrap())
        .unwrap();
    assert_eq!(built.parameters(), layer.parameters());
    std::fs::remove_dir_all(&dir).unwrap();

    // A missing file is an I/O error naming the path.
    match fresh.load_state_dict_file(dir.join("none.safetensors")) {
        Err(LayerError::Io { path, .. }) => assert!(path.ends_with("none.safetensors")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_load_changes_nothing_and_names_the_tensor() {
    let (case, mut layer) = two_sets();
    layer.load_state_dict(case.params.clone()).unwrap();
    let before = layer.parameters().clone();
    // `optimizer._mom` is the last parameter the loader reaches: every other tensor of
    // these (shifted) dicts would already have been accepted.
    let last = "optimizer._mom";
    assert_eq!(
        layer.parameters().iter().last().unwrap().name(),
        last,
        "the test relies on the order"
    );

    let mut misshapen = shifted(&case, 1.0, last);
    misshapen
        .insert(last, RawTensor::new(last, vec![2], vec![0.5, 0.5]).unwrap())
        .unwrap();
    assert_eq!(
        layer.load_state_dict(misshapen).unwrap_err(),
        LayerError::WrongShape {
            name: last.into(),
            expected: vec![1],
            got: vec![2]
        }
    );
    assert_eq!(layer.parameters(), &before);

    let e = layer
        .load_state_dict(shifted(&case, 1.0, last))
        .unwrap_err();
    assert_eq!(e, LayerError::MissingTensor { name: last.into() });
    assert!(e.to_string().contains(last));
    assert_eq!(layer.parameters(), &before);

    let mut extra = shifted(&case, 1.0, "");
    let t = RawTensor::new("x", vec![1], vec![1.0]).unwrap();
    extra.insert("potential.layers.9.weight", t).unwrap();
    let e = layer.load_state_dict(extra).unwrap_err();
    assert_eq!(
        e,
        LayerError::UnexpectedTensors {
            names: vec!["potential.layers.9.weight".into()]
        }
    );
    assert!(e.to_string().contains("potential.layers.9.weight"));
    assert_eq!(layer.parameters(), &before);

    // Wrong dtypes and non-finite values are refused when the file is read, naming the
    // tensor; a layer loading such a file is left as it was.
    let name = "potential.layers.0.0.bias";
    let dir = std::env::temp_dir().join(format!("readout-badw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let half = Raw {
        dtype: Dtype::F16,
        shape: vec![10],
        bytes: vec![0; 20],
    };
    let ints = Raw {
        dtype: Dtype::I64,
        shape: vec![10],
        bytes: vec![0; 80],
    };
    let mut nan = [0.25f32; 10];
    nan[6] = f32::NAN;
    let nan = Raw {
        dtype: Dtype::F32,
        shape: vec![10],
        bytes: nan.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let mut inf = [0.25f64; 10];
    inf[3] = f64::NEG_INFINITY;
    let inf = Raw {
        dtype: Dtype::F64,
        shape: vec![10],
        bytes: inf.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    for (raw, what) in [(half, "F16"), (ints, "I64"), (nan, "NaN"), (inf, "inf")] {
        let bytes = file_with(&case.params, name, raw);
        let path = dir.join("bad.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let e = layer.load_state_dict_file(&path).unwrap_err();
        match (&e, what) {
            (LayerError::WrongDtype { name: n, got, .. }, "F16" | "I64") => {
                assert_eq!(n, name);
                assert_eq!(got, what);
            }
            (
                LayerError::NonFinite {
                    name: n, position, ..
                },
                "NaN",
            ) => {
                assert_eq!((n.as_str(), *position), (name, 6));
            }
            (
                LayerError::NonFinite {
                    name: n, position, ..
                },
                "inf",
            ) => {
                assert_eq!((n.as_str(), *position), (name, 3));
            }
            _ => panic!("{what}: {e:?}"),
        }
        assert!(e.to_string().contains(name), "{e}");
        assert_eq!(layer.parameters(), &before);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_refuses_non_finite_parameters_naming_them() {
    let (_, mut layer) = two_sets();
    let i = layer
        .parameters()
        .iter()
        .position(|p| p.name() == "potential.res_trans.1.weight")
        .unwrap();
    layer.parameters_mut().at_mut(i).value_mut()[4] = f32::INFINITY;
    let e = layer.state_dict_bytes().unwrap_err();
    assert!(matches!(
        &e,
        LayerError::NonFinite { name, position: 4, .. } if name == "potential.res_trans.1.weight"
    ));
    let path = std::env::temp_dir().join(format!("readout-never-{}", std::process::id()));
    assert_eq!(layer.save_state_dict(&path).unwrap_err(), e);
    assert!(!path.exists(), "nothing is written");
}

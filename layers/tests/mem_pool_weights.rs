//! PyG weights in and out of `MemPooling`: the reference cases' `param.*` tensors load
//! under PyG's names and shapes (`conv.weight` is `[1, H, 1, 1]` in PyG, `[H]` here),
//! save back byte-for-byte equal as a state dict, and give PyG's forward output.

use readout_layers::PygWeights;
use std::path::PathBuf;

use readout_layers::{
    CaseArgs, LayerError, Mask, MemPooling, PoolArgs, PoolPath, RawTensor, StateDict, load_cases,
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[test]
fn mem_pool_cases_load_save_and_match_pyg() {
    let mut checked = 0;
    for case in load_cases(data_dir()).unwrap() {
        let CaseArgs::MemPooling(a) = &case.args else {
            continue;
        };
        let mut layer = MemPooling::new(
            a.in_channels,
            a.out_channels,
            a.heads,
            a.num_clusters,
            a.tau,
        )
        .unwrap();
        // Same keys and (PyG) shapes as PyG's state_dict.
        let mut ours: Vec<(String, Vec<usize>)> = layer
            .parameters()
            .iter()
            .map(|p| (p.name().to_string(), p.pyg_shape().to_vec()))
            .collect();
        ours.sort();
        let theirs: Vec<(String, Vec<usize>)> = case
            .params
            .names()
            .map(|n| (n.to_string(), case.params.get(n).unwrap().shape().to_vec()))
            .collect();
        assert_eq!(ours, theirs, "{}", case.name);

        layer.load_state_dict(case.params.clone()).unwrap();
        let bytes = layer.state_dict_bytes().unwrap();
        assert_eq!(
            StateDict::from_bytes(&bytes).unwrap(),
            case.params,
            "{}",
            case.name
        );

        let mut args = PoolArgs::new();
        if let Some(b) = &case.batch {
            args = args.batch(b);
        }
        if let Some(m) = &case.mask {
            args = args.mask(Mask::new([m.shape[0], m.shape[1]], &m.values).unwrap());
        }
        if let Some(n) = case.forward.max_num_nodes {
            args = args.max_num_nodes(n);
        }
        if let Some(b) = case.forward.batch_size {
            args = args.batch_size(b);
        }
        for path in [PoolPath::Ragged, PoolPath::Dense] {
            let (out, s) = layer.forward(&case.x, args.path(path)).unwrap();
            let kl = MemPooling::kl_loss(&s).unwrap();
            for (name, got) in [("out", out.data()), ("S", s.data()), ("kl_loss", &[kl][..])] {
                let (err, at) = case.compare(name, got).unwrap();
                assert!(
                    err < 1e-4,
                    "{} {path:?}: {name} error {err:e} at {at}",
                    case.name
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn a_file_for_another_configuration_is_refused() {
    let case = load_cases(data_dir())
        .unwrap()
        .into_iter()
        .find(|c| c.name == "mp_pyg_test_shape")
        .unwrap();
    // Four heads instead of three: k and conv.weight are misshapen.
    let mut layer = MemPooling::new(4, 8, 4, 2, 1.0).unwrap();
    let e = layer.load_state_dict(case.params.clone()).unwrap_err();
    assert!(
        matches!(&e, LayerError::WrongShape { name, .. } if name == "k"),
        "{e}"
    );
    // An EquilibriumAggregation file has none of the keys.
    let eq = load_cases(data_dir())
        .unwrap()
        .into_iter()
        .find(|c| c.name == "eq_two_sets")
        .unwrap();
    let mut layer = MemPooling::new(4, 8, 3, 2, 1.0).unwrap();
    let e = layer.load_state_dict(eq.params.clone()).unwrap_err();
    assert_eq!(e, LayerError::MissingTensor { name: "k".into() });
}

/// `conv.weight` in readout's own `[H]` shape is not PyG's `[1, H, 1, 1]`: refused,
/// and nothing changes.
#[test]
fn conv_weight_in_readouts_own_shape_is_refused() {
    let mut checked = 0;
    for case in load_cases(data_dir()).unwrap() {
        let CaseArgs::MemPooling(a) = &case.args else {
            continue;
        };
        let fresh = MemPooling::new(
            a.in_channels,
            a.out_channels,
            a.heads,
            a.num_clusters,
            a.tau,
        )
        .unwrap();
        let mut flat = StateDict::new();
        for n in case.params.names() {
            let t = case.params.get(n).unwrap();
            let shape = if n == "conv.weight" {
                vec![a.heads]
            } else {
                t.shape().to_vec()
            };
            flat.insert(n, RawTensor::new(n, shape, t.data().to_vec()).unwrap())
                .unwrap();
        }
        let mut untouched = fresh.clone();
        assert_eq!(
            untouched.load_state_dict(flat).unwrap_err(),
            LayerError::WrongShape {
                name: "conv.weight".into(),
                expected: vec![1, a.heads, 1, 1],
                got: vec![a.heads]
            }
        );
        assert_eq!(untouched, fresh);
        checked += 1;
    }
    assert_eq!(checked, 7);
}

//! Cases written by `layers/python/export_case.py` from a PyG model that holds both
//! layers among other modules (`layers/python/demo_model.py`: a linear layer, two
//! MemPooling layers — the second on the first's dense clusters — an
//! EquilibriumAggregation over each graph's nodes, a linear head). The parity check
//! passes on the forward-only cases (what a user checking a deployment exports) and on
//! the cases with loss weights and float64 gradients. And the whole model's
//! `state_dict`, as `safetensors.torch.save_file` writes it, holds each layer's weights
//! under its prefix.

use std::path::PathBuf;

use readout_layers::parity::{self, Precision, TOLERANCE, run_case, run_case_with};
use readout_layers::{EquilibriumAggregation, LayerKind, MemPooling, StateDict, load_cases};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[test]
fn forward_only_cases_from_a_whole_model_pass() {
    let cases = load_cases(data_dir().join("exported/forward")).unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["mem1", "mem2", "pool"]);
    for case in &cases {
        assert!(case.lossw.is_empty());
        assert!(!case.expect.keys().any(|k| k.starts_with("grad.")));
        let report = run_case(case).unwrap();
        assert!(!report.gradients_checked(), "{}", case.name);
        let w = report.worst().unwrap();
        assert!(
            report.passed(TOLERANCE),
            "{}: {:e} at {}",
            case.name,
            w.error,
            w.location()
        );
        let compared: Vec<&str> = report.errors.iter().map(|e| e.name.as_str()).collect();
        assert!(compared.contains(&"out"), "{}", case.name);
        if case.layer == LayerKind::MemPooling {
            assert!(compared.contains(&"S") && compared.contains(&"kl_loss"));
        }
        // f64: only the implementation's error is left.
        let r64 = run_case_with(case, Precision::F64).unwrap();
        assert!(r64.worst().unwrap().error <= 1e-10, "{}", case.name);
    }
}

#[test]
fn gradient_cases_from_a_whole_model_pass() {
    let cases = load_cases(data_dir().join("exported/gradients")).unwrap();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let report = run_case(case).unwrap();
        assert!(report.gradients_checked(), "{}", case.name);
        assert!(report.absent.is_empty() && report.ignored.is_empty());
        let w = report.worst().unwrap();
        assert!(
            report.passed(TOLERANCE),
            "{}: {:e} at {}",
            case.name,
            w.error,
            w.location()
        );
        let r64 = run_case_with(case, Precision::F64).unwrap();
        let w = r64.worst().unwrap();
        assert!(
            w.error <= 1e-10,
            "{}: {:e} at {}",
            case.name,
            w.error,
            w.location()
        );
        // --forward-only on the same case leaves the gradients aside.
        let fwd = parity::run_case_forward_only(case, Precision::F32).unwrap();
        assert!(!fwd.gradients_checked() && !fwd.ignored.is_empty());
    }
}

/// The tensors of `whole` under `prefix`, with the prefix removed.
fn under(whole: &StateDict, prefix: &str) -> StateDict {
    let mut sd = StateDict::new();
    for name in whole.names() {
        if let Some(key) = name.strip_prefix(prefix) {
            sd.insert(key, whole.get(name).unwrap().clone()).unwrap();
        }
    }
    sd
}

/// `weights/whole_model.safetensors` (written by torch) holds the three layers' weights under
/// `mem1.`, `mem2.` and `pool.`, beside the other modules' keys; each layer loads
/// from its part. (Loading by prefix inside the library is the weights module's job;
/// this checks the file it will be tested on.)
#[test]
fn a_whole_model_state_dict_holds_each_layer_under_its_prefix() {
    let whole = StateDict::from_file(data_dir().join("weights/whole_model.safetensors")).unwrap();
    let mut others: Vec<&str> = whole
        .names()
        .filter(|n| !["mem1.", "mem2.", "pool."].iter().any(|p| n.starts_with(p)))
        .collect();
    others.sort_unstable();
    assert_eq!(
        others,
        ["head.bias", "head.weight", "lin_in.bias", "lin_in.weight"]
    );
    let mem1 = MemPooling::new(6, 8, 2, 3, 1.0)
        .unwrap()
        .with_state_dict(under(&whole, "mem1."))
        .unwrap();
    let mem2 = MemPooling::new(8, 5, 3, 1, 0.5)
        .unwrap()
        .with_state_dict(under(&whole, "mem2."))
        .unwrap();
    let pool = EquilibriumAggregation::new(6, 4, &[8, 8], 2, 0.2)
        .unwrap()
        .with_state_dict(under(&whole, "pool."))
        .unwrap();
    for (prefix, params) in [
        ("mem1.", mem1.parameters()),
        ("mem2.", mem2.parameters()),
        ("pool.", pool.parameters()),
    ] {
        for p in params.iter() {
            let stored = whole.get(&format!("{prefix}{}", p.name())).unwrap();
            assert_eq!(p.value().data(), stored.data(), "{prefix}{}", p.name());
        }
    }
}

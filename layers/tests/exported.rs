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
use readout_layers::{
    EquilibriumAggregation, LayerKind, LoadOptions, Loaded, MemPooling, PygWeights, StateDict,
    load_cases,
};

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

/// `weights/whole_model.safetensors` (written by torch's
/// `safetensors.torch.save_file(model.state_dict())`) holds the three layers' weights
/// under `mem1.`, `mem2.` and `pool.`, beside the other modules' keys. Each layer loads
/// its part by prefix (strict within the prefix), the three save back under their
/// prefixes into one state dict with torch's values, and a non-strict load reports
/// what is missing and unexpected as PyG's `strict=False` does.
#[test]
fn a_whole_model_state_dict_loads_and_saves_by_prefix() {
    let path = data_dir().join("weights/whole_model.safetensors");
    let whole = StateDict::from_file(&path).unwrap();
    let mut others: Vec<&str> = whole
        .names()
        .filter(|n| !["mem1.", "mem2.", "pool."].iter().any(|p| n.starts_with(p)))
        .collect();
    others.sort_unstable();
    assert_eq!(
        others,
        ["head.bias", "head.weight", "lin_in.bias", "lin_in.weight"]
    );
    let by_prefix = |prefix| LoadOptions::new().prefix(prefix);
    let mut mem1 = MemPooling::new(6, 8, 2, 3, 1.0).unwrap();
    let mut mem2 = MemPooling::new(8, 5, 3, 1, 0.5).unwrap();
    let mut pool = EquilibriumAggregation::new(6, 4, &[8, 8], 2, 0.2).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let part = || StateDict::from_bytes(&bytes).unwrap();
    let none = Loaded::default();
    assert_eq!(
        mem1.load_state_dict_with(part(), by_prefix("mem1."))
            .unwrap(),
        none
    );
    assert_eq!(
        mem2.load_state_dict_with(part(), by_prefix("mem2."))
            .unwrap(),
        none
    );
    assert_eq!(
        pool.load_state_dict_with(part(), by_prefix("pool."))
            .unwrap(),
        none
    );
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

    // Saved back under the prefixes: the layers' part of torch's file, key for key and
    // value for value (conv.weight in PyG's [1, H, 1, 1] shape).
    let mut saved = mem1.state_dict("mem1.").unwrap();
    saved.merge(mem2.state_dict("mem2.").unwrap()).unwrap();
    saved.merge(pool.state_dict("pool.").unwrap()).unwrap();
    let saved_bytes = saved.to_bytes().unwrap();
    // The other direction: this file, written by readout, is committed, and torch loads
    // it into the PyG model (layers/python/test_export_case.py,
    // `test_torch_loads_the_layers_readout_saved`). READOUT_WRITE_TEST_DATA=1 rewrites it.
    let committed = data_dir().join("weights/whole_model_layers_saved_by_readout.safetensors");
    if std::env::var_os("READOUT_WRITE_TEST_DATA").is_some() {
        std::fs::write(&committed, &saved_bytes).unwrap();
    }
    assert_eq!(
        std::fs::read(&committed).unwrap(),
        saved_bytes,
        "{} differs from what readout saves now",
        committed.display()
    );
    let again = StateDict::from_bytes(&saved_bytes).unwrap();
    let layer_keys: Vec<&str> = whole.names().filter(|n| !others.contains(n)).collect();
    assert_eq!(again.names().collect::<Vec<_>>(), layer_keys);
    for key in layer_keys {
        assert_eq!(again.get(key), whole.get(key), "{key}");
    }

    // Strict loading under a prefix refuses a state dict that lacks the layer's keys
    // (naming one); non-strict reports them and leaves those parameters unchanged.
    let mut fresh = MemPooling::new(6, 8, 2, 3, 1.0).unwrap();
    let before = fresh.parameters().clone();
    let err = fresh
        .load_state_dict_with(whole.clone(), by_prefix("mem9."))
        .unwrap_err();
    assert!(err.to_string().contains("mem9.k"), "{err}");
    assert_eq!(fresh.parameters(), &before);
    let loaded = fresh
        .load_state_dict_with(whole.clone(), by_prefix("mem9.").strict(false))
        .unwrap();
    assert_eq!(
        loaded.missing,
        ["mem9.k", "mem9.conv.weight", "mem9.lin.weight"]
    );
    assert!(loaded.unexpected.is_empty());
    assert_eq!(fresh.parameters(), &before);
    let whole_len = whole.names().count();
    let loaded = fresh
        .load_state_dict_with(whole, LoadOptions::new().strict(false))
        .unwrap();
    assert_eq!(loaded.missing, ["k", "conv.weight", "lin.weight"]);
    assert_eq!(
        loaded.unexpected.len(),
        whole_len,
        "{:?}",
        loaded.unexpected
    );
}

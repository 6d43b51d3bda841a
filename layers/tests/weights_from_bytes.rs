//! The two weight loaders agree: `StateDict::from_bytes` (no `std` needed, the path a
//! microcontroller takes) and `StateDict::from_file` (`std`) give the same state dict
//! for every reference case's weights, and the same typed error for every malformed
//! input, so firmware is exactly as strict as the host.

use std::fs;
use std::path::{Path, PathBuf};

use readout_layers::PygWeights;
use readout_layers::{
    Case, CaseArgs, EquilibriumAggregation, LayerError, MemPooling, Parameters, StateDict,
};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.safetensors` file directly in `dir`, sorted.
fn safetensors_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files
}

fn fixture_files() -> Vec<PathBuf> {
    let data = manifest_dir().join("tests/data");
    let mut files = safetensors_files(&data);
    files.extend(safetensors_files(&data.join("generated")));
    assert!(files.len() >= 20, "fixtures missing: {files:?}");
    files
}

/// A scratch file of this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "readout-weights-from-bytes-{}-{name}",
            std::process::id()
        ));
        fs::write(&path, bytes).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The error with where the bytes came from left out: the only field the two loaders
/// may fill differently (`"<bytes>"` or the path).
fn without_source(e: LayerError) -> LayerError {
    match e {
        LayerError::Parse { reason, .. } => LayerError::Parse {
            source: String::new(),
            reason,
        },
        e => e,
    }
}

/// Loads `bytes` both ways and checks the results agree; the state dict, or `None`
/// when both refuse the bytes.
fn both_loaders(name: &str, bytes: &[u8]) -> Option<StateDict> {
    let scratch = Scratch::new(name, bytes);
    let from_bytes = StateDict::from_bytes(bytes);
    let from_file = StateDict::from_file(&scratch.0);
    match (&from_bytes, &from_file) {
        // Both refuse the bytes as not safetensors. The reason may name a different
        // bad tensor on each call: the parser checks a file's tensors in hash-map
        // order (found by the corpus of the 10^7-execution campaign).
        (Err(LayerError::Parse { .. }), Err(LayerError::Parse { .. })) => {}
        // Compared through `Debug`: an error may carry the offending value, and a NaN
        // is not `==` to itself.
        _ => assert_eq!(
            format!("{:?}", from_bytes.clone().map_err(without_source)),
            format!("{:?}", from_file.map_err(without_source)),
            "{name}: the loaders disagree"
        ),
    }
    from_bytes.ok()
}

/// A layer built with a case's constructor arguments (initial, not PyG's, weights).
fn layer_for(case: &Case) -> Layer {
    match &case.args {
        #[allow(clippy::cast_possible_truncation)]
        CaseArgs::Equilibrium(a) => Layer::Equilibrium(
            EquilibriumAggregation::new(
                a.in_channels,
                a.out_channels,
                &a.num_layers,
                a.grad_iter,
                a.lamb as f32,
            )
            .unwrap(),
        ),
        CaseArgs::MemPooling(a) => Layer::MemPooling(
            MemPooling::new(
                a.in_channels,
                a.out_channels,
                a.heads,
                a.num_clusters,
                a.tau,
            )
            .unwrap(),
        ),
    }
}

enum Layer {
    Equilibrium(EquilibriumAggregation),
    MemPooling(MemPooling),
}

impl Layer {
    fn load_bytes(&mut self, bytes: &[u8]) {
        let sd = StateDict::from_bytes(bytes).unwrap();
        match self {
            Layer::Equilibrium(l) => l.load_state_dict(sd),
            Layer::MemPooling(l) => l.load_state_dict(sd),
        }
        .unwrap();
    }

    fn load_file(&mut self, path: &Path) {
        match self {
            Layer::Equilibrium(l) => l.load_state_dict_file(path),
            Layer::MemPooling(l) => l.load_state_dict_file(path),
        }
        .unwrap();
    }

    fn parameters(&self) -> &Parameters {
        match self {
            Layer::Equilibrium(l) => l.parameters(),
            Layer::MemPooling(l) => l.parameters(),
        }
    }
}

/// Each case's weights, saved as PyG's `save_file(model.state_dict())` writes them, load
/// to the same state dict and the same layer from bytes as from a file; and the whole
/// case file (which also holds `I64` / `BOOL` inputs) is read the same way by both.
#[test]
fn every_fixture_loads_the_same_from_bytes_and_from_file() {
    for path in fixture_files() {
        let case = Case::from_file(&path).unwrap();
        let name = &case.name;

        let whole = fs::read(&path).unwrap();
        let _ = both_loaders(&format!("{name}-whole"), &whole);

        // The weights alone, as in a PyG state_dict file.
        let mut host = layer_for(&case);
        host.load_bytes(&case.params.to_bytes().unwrap());
        let weights = match &host {
            Layer::Equilibrium(l) => l.state_dict_bytes(),
            Layer::MemPooling(l) => l.state_dict_bytes(),
        }
        .unwrap();
        let sd = both_loaders(&format!("{name}-weights"), &weights).unwrap();
        assert_eq!(sd, case.params, "{name}: weights changed on the way");

        let mut from_bytes = layer_for(&case);
        let mut from_file = layer_for(&case);
        from_bytes.load_bytes(&weights);
        let scratch = Scratch::new(&format!("{name}-layer"), &weights);
        from_file.load_file(&scratch.0);
        assert_eq!(from_bytes.parameters(), from_file.parameters(), "{name}");
        assert_eq!(from_bytes.parameters(), host.parameters(), "{name}");
    }
}

/// Every input of the weight loader's fuzz corpus, both as the fuzz target sees it
/// (after its mode byte) and whole, plus every truncation of a valid weights file, gives
/// the same result from both loaders: the same state dict or the same typed error.
#[test]
fn every_malformed_input_is_refused_the_same_by_both_loaders() {
    let corpus = manifest_dir().join("../fuzz/corpus/state_dict_load");
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(
        !entries.is_empty(),
        "no fuzz corpus at {}",
        corpus.display()
    );
    for path in entries {
        let bytes = fs::read(&path).unwrap();
        let stem = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some((_, rest)) = bytes.split_first() {
            inputs.push((format!("{stem}-payload"), rest.to_vec()));
        }
        inputs.push((stem, bytes));
    }

    let layer = MemPooling::new(3, 2, 2, 2, 1.0).unwrap();
    let valid = layer.state_dict_bytes().unwrap();
    for n in 0..valid.len() {
        inputs.push((format!("truncated-{n}"), valid[..n].to_vec()));
    }

    let mut refused = 0;
    for (name, bytes) in &inputs {
        if both_loaders(name, bytes).is_none() {
            refused += 1;
        }
    }
    // Every truncation of a valid file is malformed, so at least those are refused.
    assert!(refused >= valid.len(), "only {refused} inputs refused");
}

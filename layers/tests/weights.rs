//! PyG weights I/O (`readout_layers::weights`): the state-dict reader's error paths on
//! files built here with the `safetensors` crate, the save → load round trip, garbage
//! bytes (never a panic), and `PygWeights` on a whole model's state dict — keys under
//! a prefix, PyG's `strict=False` — in files written from Rust.

use std::borrow::Cow;
use std::collections::HashMap;

use proptest::prelude::*;
use readout_layers::{
    Case, EquilibriumAggregation, LayerError, LoadOptions, Loaded, MemPooling, ParamView,
    PygWeights, RawTensor, StateDict, relative_error, save_params, save_params_to_file,
    save_state_dict, worst_error,
};
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

fn f32s(shape: &[usize], v: &[f32]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}
fn f64s(shape: &[usize], v: &[f64]) -> Raw {
    Raw {
        dtype: Dtype::F64,
        shape: shape.to_vec(),
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn file(tensors: &[(&str, Raw)], meta: Option<&[(&str, &str)]>) -> Vec<u8> {
    let meta = meta.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>()
    });
    serialize(tensors.iter().map(|(n, r)| (n.to_string(), r)), meta).unwrap()
}

fn lin_file() -> Vec<u8> {
    file(
        &[
            ("lin.weight", f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("lamb", f32s(&[1], &[0.1])),
        ],
        None,
    )
}

#[test]
fn take_and_finish() {
    let mut sd = StateDict::from_bytes(&lin_file()).unwrap();
    assert_eq!(sd.names().collect::<Vec<_>>(), ["lamb", "lin.weight"]);
    let w = sd.take("lin.weight", &[2, 3]).unwrap();
    assert_eq!(w.data(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let l = sd.take("lamb", &[1]).unwrap();
    assert_eq!(l.shape(), &[1]);
    sd.finish().unwrap();
}

#[test]
fn missing_tensor() {
    let mut sd = StateDict::from_bytes(&lin_file()).unwrap();
    let e = sd.take("lin.bias", &[2]).unwrap_err();
    assert_eq!(
        e,
        LayerError::MissingTensor {
            name: "lin.bias".into()
        }
    );
    assert!(e.to_string().contains("lin.bias"));
}

#[test]
fn extra_tensors() {
    let mut sd = StateDict::from_bytes(&lin_file()).unwrap();
    sd.take("lamb", &[1]).unwrap();
    let e = sd.finish().unwrap_err();
    assert_eq!(
        e,
        LayerError::UnexpectedTensors {
            names: vec!["lin.weight".into()]
        }
    );
    assert!(e.to_string().contains("`lin.weight`"));
}

#[test]
fn misshapen_tensor_stays() {
    let mut sd = StateDict::from_bytes(&lin_file()).unwrap();
    let e = sd.take("lin.weight", &[3, 2]).unwrap_err();
    assert_eq!(
        e,
        LayerError::WrongShape {
            name: "lin.weight".into(),
            expected: vec![3, 2],
            got: vec![2, 3]
        }
    );
    assert!(e.to_string().contains("[2, 3]") && e.to_string().contains("[3, 2]"));
    // Still there, so that finish() reports it too.
    assert!(sd.get("lin.weight").is_some());
    // A scalar in PyG is shape [1], not [].
    assert!(matches!(
        sd.take("lamb", &[]),
        Err(LayerError::WrongShape { .. })
    ));
}

#[test]
fn wrong_dtypes() {
    for (dtype, bytes) in [
        (Dtype::I64, 8),
        (Dtype::F16, 2),
        (Dtype::BF16, 2),
        (Dtype::BOOL, 1),
    ] {
        let f = file(
            &[(
                "k",
                Raw {
                    dtype,
                    shape: vec![1],
                    bytes: vec![0; bytes],
                },
            )],
            None,
        );
        let e = StateDict::from_bytes(&f).unwrap_err();
        assert_eq!(
            e,
            LayerError::WrongDtype {
                name: "k".into(),
                expected: "F32 or F64",
                got: format!("{dtype:?}")
            }
        );
        assert!(e.to_string().contains('k'));
    }
}

#[test]
fn non_finite_values() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let f = file(
            &[("conv.weight", f32s(&[1, 3, 1, 1], &[0.5, 1.0, bad]))],
            None,
        );
        match StateDict::from_bytes(&f).unwrap_err() {
            LayerError::NonFinite {
                name,
                position,
                value,
            } => {
                assert_eq!(name, "conv.weight");
                assert_eq!(position, 2);
                assert_eq!(value.is_nan(), bad.is_nan());
            }
            e => panic!("{e}"),
        }
    }
    // An F64 value beyond the f32 range.
    let f = file(&[("lamb", f64s(&[1], &[1e300]))], None);
    assert!(matches!(
        StateDict::from_bytes(&f),
        Err(LayerError::NonFinite { position: 0, value, .. }) if value == 1e300
    ));
}

#[test]
fn f64_files_are_accepted_and_rounded() {
    let f = file(&[("k", f64s(&[2, 1, 1], &[0.1, -2.5]))], None);
    let mut sd = StateDict::from_bytes(&f).unwrap();
    let k = sd.take("k", &[2, 1, 1]).unwrap();
    assert_eq!(k.data(), &[0.1f32, -2.5]);
}

#[test]
fn rank_four_parameters() {
    let f = file(
        &[("conv.weight", f32s(&[1, 3, 1, 1], &[0.1, 0.2, 0.3]))],
        None,
    );
    let mut sd = StateDict::from_bytes(&f).unwrap();
    // Rank 4 is kept as PyG's shape and reshaped on request.
    assert_eq!(sd.get("conv.weight").unwrap().shape(), &[1, 3, 1, 1]);
    assert!(matches!(
        sd.take("conv.weight", &[1, 3, 1, 1]),
        Err(LayerError::Core(_))
    ));
    assert!(
        sd.get("conv.weight").is_some(),
        "a failed take leaves the tensor"
    );
    assert!(matches!(
        sd.take_reshaped("conv.weight", &[1, 3, 1, 1], &[2]),
        Err(LayerError::InvalidArgument { name: "shape", .. })
    ));
    let w = sd
        .take_reshaped("conv.weight", &[1, 3, 1, 1], &[3])
        .unwrap();
    assert_eq!(w.shape(), &[3]);
    sd.finish().unwrap();
}

#[test]
fn round_trip() {
    let w = RawTensor::new("w", vec![2, 3], vec![1.0f32, -2.0, 3.5, 0.0, 1e-30, -7.25])
        .unwrap()
        .into_tensor()
        .unwrap();
    let lamb = RawTensor::new("l", vec![1], vec![0.1f32])
        .unwrap()
        .into_tensor()
        .unwrap();
    let conv = RawTensor::new("c", vec![3], vec![0.25f32, -0.5, 1.0])
        .unwrap()
        .into_tensor()
        .unwrap();
    let bytes = save_params(&[
        ParamView::of("lin.weight", &w),
        ParamView::of("lamb", &lamb),
        ParamView::with_shape("conv.weight", &[1, 3, 1, 1], &conv),
    ])
    .unwrap();
    let mut sd = StateDict::from_bytes(&bytes).unwrap();
    assert_eq!(sd.take("lin.weight", &[2, 3]).unwrap(), w);
    assert_eq!(sd.take("lamb", &[1]).unwrap(), lamb);
    assert_eq!(
        sd.take_reshaped("conv.weight", &[1, 3, 1, 1], &[3])
            .unwrap(),
        conv
    );
    sd.finish().unwrap();

    // The raw safetensors view: F32 little-endian, PyG's shapes.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("conv.weight").unwrap();
    assert_eq!(v.dtype(), Dtype::F32);
    assert_eq!(v.shape(), &[1, 3, 1, 1]);
    assert_eq!(
        v.data(),
        &[0.25f32, -0.5, 1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>()[..]
    );

    // save_state_dict and StateDict::to_bytes agree with save_params.
    let again =
        save_state_dict(&[("lin.weight".to_string(), &w), ("lamb".to_string(), &lamb)]).unwrap();
    let sd2 = StateDict::from_bytes(&again).unwrap();
    assert_eq!(
        StateDict::from_bytes(&sd2.to_bytes().unwrap()).unwrap(),
        sd2
    );

    // Through a file.
    let dir = std::env::temp_dir().join(format!("readout-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    save_params_to_file(&path, &[ParamView::of("lin.weight", &w)]).unwrap();
    let mut sd3 = StateDict::from_file(&path).unwrap();
    assert_eq!(sd3.take("lin.weight", &[2, 3]).unwrap(), w);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(
        StateDict::from_file(dir.join("nope")),
        Err(LayerError::Io { .. })
    ));
}

#[test]
fn save_refuses_bad_input() {
    let w = RawTensor::new("w", vec![2], vec![1.0f32, f32::NAN])
        .unwrap()
        .into_tensor()
        .unwrap();
    assert!(matches!(
        save_params(&[ParamView::of("w", &w)]),
        Err(LayerError::NonFinite { position: 1, .. })
    ));
    let ok = RawTensor::new("w", vec![2], vec![1.0f32, 2.0])
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_eq!(
        save_params(&[ParamView::of("a", &ok), ParamView::of("a", &ok)]).unwrap_err(),
        LayerError::DuplicateTensor { name: "a".into() }
    );
    assert!(matches!(
        save_params(&[ParamView::with_shape("a", &[3], &ok)]),
        Err(LayerError::LengthMismatch {
            expected: 3,
            got: 2,
            ..
        })
    ));
    assert!(matches!(
        save_params(&[ParamView::of("", &ok)]),
        Err(LayerError::InvalidArgument { name: "name", .. })
    ));
    let mut sd = StateDict::new();
    sd.insert("a", RawTensor::new("a", vec![1], vec![1.0]).unwrap())
        .unwrap();
    assert!(matches!(
        sd.insert("a", RawTensor::new("a", vec![1], vec![1.0]).unwrap()),
        Err(LayerError::DuplicateTensor { .. })
    ));
    assert!(RawTensor::new("r", vec![2, 2], vec![1.0f32]).is_err());
}

#[test]
fn not_safetensors() {
    // An empty table is a valid, empty file.
    assert!(
        StateDict::from_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
            .unwrap()
            .is_empty()
    );
    for bytes in [
        &b""[..],
        b"12345678",
        b"\x02\x00\x00\x00\x00\x00\x00\x00[]",
        b"\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        assert!(
            matches!(StateDict::from_bytes(bytes), Err(LayerError::Parse { .. })),
            "{bytes:?}"
        );
    }
}

fn case_file(meta: &[(&str, &str)]) -> Vec<u8> {
    file(
        &[
            ("input.x", f32s(&[2, 1], &[1.0, 2.0])),
            ("param.lamb", f32s(&[1], &[0.1])),
        ],
        Some(meta),
    )
}

const EQ_ARGS: &str =
    r#"{"in_channels": 1, "out_channels": 2, "num_layers": [], "grad_iter": 1, "lamb": 0.1}"#;

#[test]
fn case_metadata_errors() {
    let good = [
        ("layer", "EquilibriumAggregation"),
        ("args", EQ_ARGS),
        ("forward", "{}"),
        ("kl_weight", "0.0"),
        ("loss", "sum(out * lossw.out)"),
    ];
    let c = Case::from_bytes("t", &case_file(&good)).unwrap();
    assert_eq!(c.x.shape(), &[2, 1]);
    assert_eq!(c.params.len(), 1);

    let bad_key = |meta: &[(&str, &str)]| match Case::from_bytes("t", &case_file(meta)) {
        Err(LayerError::BadMetadata { key, reason }) => format!("{key}: {reason}"),
        other => panic!("{other:?}"),
    };
    let with = |k: &str, v: &str| -> String {
        let mut m: Vec<(&str, &str)> = good.iter().filter(|(kk, _)| *kk != k).copied().collect();
        m.push((k, v));
        bad_key(&m)
    };
    let args = |from: &str, to: &str| EQ_ARGS.replace(from, to);
    assert!(with("layer", "GCNConv").starts_with("layer"));
    assert!(with("args", "{").starts_with("args: invalid JSON"));
    assert!(with("args", r#"{"in_channels": 1}"#).contains("missing"));
    assert!(
        with("args", &args("\"in_channels\": 1, ", "")).starts_with("args.in_channels: missing")
    );
    assert!(with("args", &args("\"grad_iter\": 1", "\"grad_iter\": -1")).contains("-1"));
    assert!(with("args", &args("\"grad_iter\": 1", "\"grad_iter\": 1.5")).contains("1.5"));
    assert!(with("args", &args("}", ", \"heads\": 2}")).contains("heads"));
    assert!(with("forward", r#"{"batch_size": 3}"#).contains("batch_size"));
    assert!(with("kl_weight", "NaN").starts_with("kl_weight"));
    assert!(with("surprise", "1").starts_with("surprise"));
    let no_loss: Vec<(&str, &str)> = good.iter().filter(|(k, _)| *k != "loss").copied().collect();
    // A forward-only case may omit `loss` and `kl_weight`: the format's loss, weight 0.
    let c = Case::from_bytes("t", &case_file(&no_loss)).unwrap();
    assert_eq!(c.loss, "sum(out * lossw.out)");
    let bare: Vec<(&str, &str)> = good[..3].to_vec();
    assert_eq!(
        Case::from_bytes("t", &case_file(&bare)).unwrap().kl_weight,
        0.0
    );
    let mut null_dim: Vec<(&str, &str)> = good
        .iter()
        .filter(|(k, _)| *k != "forward")
        .copied()
        .collect();
    null_dim.push(("forward", r#"{"dim_size": null}"#));
    assert_eq!(
        Case::from_bytes("t", &case_file(&null_dim))
            .unwrap()
            .forward
            .dim_size,
        None
    );

    // Tensors outside the format, the wrong dtype, a mask byte other than 0/1.
    let f = file(
        &[
            ("input.x", f32s(&[1, 1], &[1.0])),
            ("junk", f32s(&[1], &[1.0])),
            ("input.batch", f32s(&[1], &[0.0])),
        ],
        Some(&good),
    );
    assert_eq!(
        Case::from_bytes("t", &f).unwrap_err(),
        LayerError::UnexpectedTensors {
            names: vec!["input.batch".into(), "junk".into()]
        }
    );
    let f = file(
        &[
            ("input.x", f32s(&[1, 1], &[1.0])),
            ("input.index", f32s(&[1], &[0.0])),
        ],
        Some(&good),
    );
    assert!(matches!(
        Case::from_bytes("t", &f),
        Err(LayerError::WrongDtype {
            expected: "I64",
            ..
        })
    ));
    let mp = [
        ("layer", "MemPooling"),
        (
            "args",
            r#"{"in_channels": 1, "out_channels": 1, "heads": 1, "num_clusters": 1, "tau": 1.0}"#,
        ),
        ("forward", "{}"),
        ("kl_weight", "0.7"),
        ("loss", "l"),
    ];
    let f = file(
        &[
            ("input.x", f32s(&[1, 2, 1], &[1.0, 2.0])),
            (
                "input.mask",
                Raw {
                    dtype: Dtype::BOOL,
                    shape: vec![1, 2],
                    bytes: vec![1, 2],
                },
            ),
        ],
        Some(&mp),
    );
    assert!(matches!(
        Case::from_bytes("t", &f),
        Err(LayerError::BadValue {
            position: 1,
            value: 2,
            ..
        })
    ));
    let f = file(&[("param.k", f32s(&[1], &[1.0]))], Some(&mp));
    assert_eq!(
        Case::from_bytes("t", &f).unwrap_err(),
        LayerError::MissingTensor {
            name: "input.x".into()
        }
    );
    let f = file(&[("input.x", f32s(&[1, 1], &[1.0]))], None);
    assert!(matches!(
        Case::from_bytes("t", &f),
        Err(LayerError::BadMetadata { .. })
    ));
}

#[test]
fn error_measure() {
    assert_eq!(
        relative_error(&[1.0f64, 2.0], &[1.0, 2.5]).unwrap(),
        (0.5 / 2.5, 1)
    );
    assert_eq!(relative_error(&[0.1f32], &[0.1]).unwrap().1, 0);
    // Small expectations are measured absolutely (max(1, ...)).
    assert_eq!(relative_error(&[0.003f64], &[0.001]).unwrap(), (0.002, 0));
    assert_eq!(relative_error::<f64>(&[], &[]).unwrap(), (0.0, 0));
    assert_eq!(
        relative_error(&[1.0f64, f64::NAN], &[1.0, 1.0]).unwrap(),
        (f64::INFINITY, 1)
    );
    assert_eq!(
        relative_error(&[1.0f64], &[1.0, 2.0]).unwrap_err(),
        LayerError::LengthMismatch {
            name: "got".into(),
            expected: 2,
            got: 1
        }
    );
    let w = worst_error([
        ("a", &[1.0f64][..], &[1.5][..]),
        ("b", &[0.0][..], &[4.0][..]),
        ("c", &[0.0][..], &[0.0][..]),
    ])
    .unwrap()
    .unwrap();
    assert_eq!((w.name.as_str(), w.error, w.position), ("b", 1.0, 0));
    assert_eq!(worst_error::<f64>([]).unwrap(), None);
    assert!(matches!(
        worst_error([("z", &[1.0f64][..], &[][..])]),
        Err(LayerError::LengthMismatch { name, .. }) if name == "z"
    ));
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mp_dense_mask.safetensors"
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = StateDict::from_bytes(&bytes);
        let _ = Case::from_bytes("fuzz", &bytes);
    }

    #[test]
    fn mutated_files_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                 cut in any::<prop::sample::Index>()) {
        let mut bytes = fixture_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = StateDict::from_bytes(&bytes);
        let _ = Case::from_bytes("fuzz", &bytes);
        let n = cut.index(bytes.len());
        let _ = Case::from_bytes("fuzz", &bytes[..n]);
    }

    #[test]
    fn header_mutations_never_panic(at in 8usize..2144, b in any::<u8>()) {
        // Edits confined to the JSON header reach the metadata and tensor-table logic.
        let mut bytes = fixture_bytes();
        bytes[at] = b;
        let _ = StateDict::from_bytes(&bytes);
        let _ = Case::from_bytes("fuzz", &bytes);
    }
}

// ------------------------------------------------------------------------------------
// A whole model's state dict: every layer under its prefix, beside other modules' keys.

/// A model like PyG's `pool = EquilibriumAggregation(...)`, `mem1 = MemPooling(...)`,
/// `mem2 = MemPooling(...)`, with its weights drawn from `seed`.
fn model(seed: u64) -> (EquilibriumAggregation, MemPooling, MemPooling) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut pool = EquilibriumAggregation::new(3, 2, &[4], 5, 0.1).unwrap();
    let mut mem1 = MemPooling::new(6, 5, 2, 3, 1.0).unwrap();
    let mut mem2 = MemPooling::new(5, 4, 3, 1, 1.0).unwrap();
    pool.reset_parameters(&mut rng);
    mem1.reset_parameters(&mut rng);
    mem2.reset_parameters(&mut rng);
    (pool, mem1, mem2)
}

/// The model's state dict as one safetensors file, with a tensor of another module.
fn model_file(seed: u64, name: &str) -> std::path::PathBuf {
    let (pool, mem1, mem2) = model(seed);
    let mut sd = pool.state_dict("pool.").unwrap();
    sd.merge(mem1.state_dict("mem1.").unwrap()).unwrap();
    sd.merge(mem2.state_dict("mem2.").unwrap()).unwrap();
    let other = RawTensor::new("lin.weight", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    sd.insert("lin.weight", other).unwrap();
    let path = std::env::temp_dir().join(format!("readout-{name}-{}.st", std::process::id()));
    std::fs::write(&path, sd.to_bytes().unwrap()).unwrap();
    path
}

#[test]
fn whole_model_state_dict_saves_and_loads_by_prefix() {
    let path = model_file(1, "whole-model");
    let sd = StateDict::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // PyG's keys and shapes under each prefix.
    assert_eq!(
        sd.get("pool.potential.layers.0.0.weight").unwrap().shape(),
        &[4, 5]
    );
    assert_eq!(sd.get("mem2.conv.weight").unwrap().shape(), &[1, 3, 1, 1]);
    assert_eq!(sd.len(), 13 + 3 + 3 + 1);

    let (pool, mem1, mem2) = model(1);
    let (mut p, mut m1, mut m2) = model(2);
    assert_ne!(p.parameters(), pool.parameters());
    let strict = |prefix| LoadOptions::new().prefix(prefix);
    // Strict on the keys under the prefix; other modules' keys are not this layer's.
    let none = Loaded::default();
    assert_eq!(
        p.load_state_dict_with(sd.clone(), strict("pool.")).unwrap(),
        none
    );
    assert_eq!(
        m1.load_state_dict_with(sd.clone(), strict("mem1."))
            .unwrap(),
        none
    );
    assert_eq!(
        m2.load_state_dict_with(sd.clone(), strict("mem2."))
            .unwrap(),
        none
    );
    assert_eq!(p.parameters(), pool.parameters());
    assert_eq!(m1.parameters(), mem1.parameters());
    assert_eq!(m2.parameters(), mem2.parameters());

    // Without the prefix the whole model is nothing this layer knows.
    let mut fresh = model(2).1;
    let e = fresh.load_state_dict(sd.clone()).unwrap_err();
    assert_eq!(e, LayerError::MissingTensor { name: "k".into() });
    // The wrong layer's prefix: a shape that is not this layer's, nothing changes.
    let e = fresh.load_state_dict_with(sd, strict("mem2.")).unwrap_err();
    assert!(
        matches!(&e, LayerError::WrongShape { name, .. } if name == "mem2.k"),
        "{e}"
    );
    assert_eq!(fresh.parameters(), model(2).1.parameters());
}

#[test]
fn strict_load_by_prefix_names_missing_and_unexpected_keys() {
    let path = model_file(3, "strict");
    let mut sd = StateDict::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut with_extra = sd.clone();
    let extra = RawTensor::new("mem1.lin.bias", vec![5], vec![0.0; 5]).unwrap();
    with_extra.insert("mem1.lin.bias", extra).unwrap();
    sd.take_raw("mem1.conv.weight", &[1, 2, 1, 1]).unwrap();

    let before = model(4).1;
    let mut m1 = before.clone();
    let opts = LoadOptions::new().prefix("mem1.");
    let e = m1.load_state_dict_with(sd, opts).unwrap_err();
    assert_eq!(
        e,
        LayerError::MissingTensor {
            name: "mem1.conv.weight".into()
        }
    );
    let e = m1.load_state_dict_with(with_extra, opts).unwrap_err();
    assert_eq!(
        e,
        LayerError::UnexpectedTensors {
            names: vec!["mem1.lin.bias".into()]
        }
    );
    // All or nothing.
    assert_eq!(m1, before);
}

#[test]
fn non_strict_load_returns_missing_and_unexpected_keys() {
    let path = model_file(5, "non-strict");
    let mut sd = StateDict::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    sd.take_raw("pool.optimizer._mom", &[1]).unwrap();
    sd.take_raw("pool.potential.res_trans.1.bias", &[1])
        .unwrap();
    let extra = RawTensor::new("pool.potential.norm.weight", vec![3], vec![1.0; 3]).unwrap();
    sd.insert("pool.potential.norm.weight", extra).unwrap();

    let (saved, ..) = model(5);
    let (mut p, ..) = model(6);
    let before = p.clone();
    let loaded = p
        .load_state_dict_with(sd.clone(), LoadOptions::new().prefix("pool.").strict(false))
        .unwrap();
    assert_eq!(
        loaded,
        Loaded {
            missing: vec![
                "pool.potential.res_trans.1.bias".into(),
                "pool.optimizer._mom".into()
            ],
            unexpected: vec!["pool.potential.norm.weight".into()],
        }
    );
    // Present keys loaded, missing ones kept.
    for (q, (s, b)) in p
        .parameters()
        .iter()
        .zip(saved.parameters().iter().zip(before.parameters().iter()))
    {
        let keep = q.name() == "optimizer._mom" || q.name() == "potential.res_trans.1.bias";
        assert_eq!(
            q.value(),
            if keep { b.value() } else { s.value() },
            "{}",
            q.name()
        );
    }

    // A misshapen tensor is an error even when not strict (as in PyG), and nothing
    // changes.
    let mut bad = sd;
    bad.take_raw("pool.lamb", &[1]).unwrap();
    bad.insert(
        "pool.lamb",
        RawTensor::new("pool.lamb", vec![2], vec![0.0; 2]).unwrap(),
    )
    .unwrap();
    let mut q = before.clone();
    let e = q
        .load_state_dict_with(bad, LoadOptions::new().prefix("pool.").strict(false))
        .unwrap_err();
    assert!(
        matches!(&e, LayerError::WrongShape { name, .. } if name == "pool.lamb"),
        "{e}"
    );
    assert_eq!(q, before);
}

#[test]
fn merging_state_dicts_refuses_a_key_twice() {
    let (pool, mem1, _) = model(7);
    let mut sd = mem1.state_dict("m.").unwrap();
    let e = sd.merge(mem1.state_dict("m.").unwrap()).unwrap_err();
    assert_eq!(
        e,
        LayerError::DuplicateTensor {
            name: "m.conv.weight".into()
        }
    );
    assert_eq!(sd.len(), 3);
    sd.merge(pool.state_dict("").unwrap()).unwrap();
    assert_eq!(sd.len(), 3 + 13);
}

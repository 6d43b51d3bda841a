//! Every class of bad input the layers and the weights loader refuse, one test per row
//! of the table in `fuzz/README.md` ("Bad inputs and what they get"): the error
//! variant, and a message that names the argument and the offending values.
//!
//! Where PyG's own tests check an error (`test/nn/aggr/test_equilibrium.py`:
//! `model(x, dim_size=0)` with ten elements and no index raises `ValueError`), the same
//! input is checked here. PyG's `test/nn/pool/test_mem_pool.py` checks no error.

use std::borrow::Cow;

use readout_core::{CoreError, Tape, Tensor};
use readout_layers::PygWeights;
use readout_layers::{
    Adam, EquilibriumAggregation, InnerGrad, LayerError, Mask, MemPooling, PoolArgs, Segments, Sgd,
    StateDict, limits,
};
use safetensors::tensor::{Dtype, View, serialize};

/// Asserts that `result` is an error accepted by `is_variant` whose message contains
/// every one of `words` (the argument's name and the offending values), and returns
/// the message.
#[track_caller]
fn refused<T: std::fmt::Debug>(
    result: Result<T, LayerError>,
    is_variant: impl Fn(&LayerError) -> bool,
    words: &[&str],
) -> String {
    let e = result.expect_err("bad input accepted");
    assert!(is_variant(&e), "unexpected variant: {e:?}");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not name {w:?}");
    }
    msg
}

fn invalid(name: &'static str) -> impl Fn(&LayerError) -> bool {
    move |e| matches!(e, LayerError::InvalidArgument { name: n, .. } if *n == name)
}

fn wrong_shape(name: &'static str) -> impl Fn(&LayerError) -> bool {
    move |e| matches!(e, LayerError::WrongShape { name: n, .. } if n == name)
}

fn length_mismatch(name: &'static str) -> impl Fn(&LayerError) -> bool {
    move |e| matches!(e, LayerError::LengthMismatch { name: n, .. } if n == name)
}

fn too_large(e: &LayerError) -> bool {
    matches!(e, LayerError::TooLarge { .. })
}

fn bad_ptr(e: &LayerError) -> bool {
    matches!(e, LayerError::Core(CoreError::BadPtr { .. }))
}

fn tensor(shape: &[usize]) -> Tensor<f32> {
    let n = shape.iter().product::<usize>();
    Tensor::from_vec(shape, (0..n).map(|i| (i as f32 * 0.3).sin()).collect()).unwrap()
}

fn eq() -> EquilibriumAggregation {
    EquilibriumAggregation::new(3, 2, &[4], 2, 0.1).unwrap()
}

fn pool() -> MemPooling {
    MemPooling::new(3, 2, 2, 2, 1.0).unwrap()
}

// ---- EquilibriumAggregation: constructor ----

#[test]
fn eq_zero_channels_or_hidden_size() {
    refused(
        EquilibriumAggregation::new(0, 2, &[4], 2, 0.1),
        invalid("in_channels"),
        &["in_channels", "0", "≥ 1"],
    );
    refused(
        EquilibriumAggregation::new(3, 0, &[4], 2, 0.1),
        invalid("out_channels"),
        &["out_channels", "0"],
    );
    refused(
        EquilibriumAggregation::new(3, 2, &[4, 0], 2, 0.1),
        invalid("num_layers"),
        &["num_layers", "[4, 0]", "hidden size 1 is 0"],
    );
}

#[test]
fn eq_non_finite_lamb_and_too_many_steps() {
    refused(
        EquilibriumAggregation::new(3, 2, &[4], 2, f32::NAN),
        invalid("lamb"),
        &["lamb", "NaN", "finite"],
    );
    refused(
        EquilibriumAggregation::new(3, 2, &[4], limits::MAX_GRAD_ITER + 1, 0.1),
        invalid("grad_iter"),
        &["grad_iter", "10001", "10000"],
    );
}

#[test]
fn eq_absurd_sizes() {
    refused(
        EquilibriumAggregation::new(3, 2, &[1 << 40], 2, 0.1),
        too_large,
        &["1099511627776", "limit"],
    );
}

// ---- EquilibriumAggregation: forward ----

#[test]
fn eq_x_of_the_wrong_shape() {
    let layer = eq();
    refused(
        layer.forward(&tensor(&[5, 2]), Segments::One, None),
        wrong_shape("x"),
        &["x", "[5, 2]", "[5, 3]"],
    );
    refused(
        layer.forward(&tensor(&[2, 5, 3]), Segments::One, None),
        wrong_shape("x"),
        &["x", "[2, 5, 3]"],
    );
}

/// PyG's `test_equilibrium` and `test_equilibrium_batch`: `model(x, dim_size=0)` with
/// ten elements and no index raises `ValueError`.
#[test]
fn eq_dim_size_zero_for_one_set_as_pyg_tests() {
    let layer = EquilibriumAggregation::new(3, 2, &[10, 10], 1, 0.1).unwrap();
    let x = tensor(&[10, 3]);
    refused(
        layer.forward(&x, Segments::One, Some(0)),
        invalid("dim_size"),
        &["dim_size", "0", "≥ 1"],
    );
    // PyG's next line: dim_size = 3 is fine, the extra sets are 0.
    let y = layer.forward(&x, Segments::One, Some(3)).unwrap();
    assert_eq!(y.shape(), &[3, 2]);
    assert!(y.data()[2..].iter().all(|&v| v == 0.0));
}

#[test]
fn eq_index_of_the_wrong_length() {
    refused(
        eq().forward(&tensor(&[4, 3]), Segments::Index(&[0, 1, 0]), None),
        length_mismatch("index"),
        &["index", "3 values", "expected 4"],
    );
}

#[test]
fn eq_negative_index() {
    refused(
        eq().forward(&tensor(&[3, 3]), Segments::Index(&[0, 1, -1]), None),
        invalid("index"),
        &["index", "-1 at position 2", "≥ 0"],
    );
}

#[test]
fn eq_dim_size_below_the_index() {
    refused(
        eq().forward(&tensor(&[3, 3]), Segments::Index(&[0, 4, 1]), Some(2)),
        invalid("dim_size"),
        &["dim_size", "2", "max(index) + 1 = 5"],
    );
}

#[test]
fn eq_absurd_index_or_dim_size() {
    let layer = eq();
    let x = tensor(&[2, 3]);
    refused(
        layer.forward(&x, Segments::Index(&[0, 1 << 40]), None),
        too_large,
        &["max(index) + 1", "1099511627777"],
    );
    refused(
        layer.forward(&x, Segments::Index(&[0, 0]), Some(usize::MAX)),
        too_large,
        &["dim_size", &usize::MAX.to_string()],
    );
}

#[test]
fn eq_bad_ptr() {
    let layer = eq();
    let x = tensor(&[4, 3]);
    refused(
        layer.forward(&x, Segments::Ptr(&[0, 2, 3]), None),
        invalid("ptr"),
        &["ptr", "3 at position 2", "N = 4"],
    );
    refused(
        layer.forward(&x, Segments::Ptr(&[0, -2, 4]), None),
        invalid("ptr"),
        &["ptr", "-2 at position 1", "≥ 0"],
    );
    refused(
        layer.forward(&x, Segments::Ptr(&[0, 3, 1, 4]), None),
        bad_ptr,
        &["ptr[2]", "= 1", "must not decrease"],
    );
    refused(
        layer.forward(&x, Segments::Ptr(&[1, 2, 4]), None),
        bad_ptr,
        &["ptr", "1"],
    );
    refused(
        layer.forward(&tensor(&[0, 3]), Segments::Ptr(&[]), None),
        bad_ptr,
        &["ptr"],
    );
    refused(
        layer.forward(&x, Segments::Ptr(&[0, 1, 4]), Some(1)),
        invalid("dim_size"),
        &["dim_size", "1", "2 sets"],
    );
}

#[test]
fn eq_parameters_of_another_layer() {
    let layer = eq();
    let other = EquilibriumAggregation::new(3, 2, &[4, 4], 2, 0.1).unwrap();
    let mut tape = Tape::<f32>::new();
    let p = other.parameters().bind(&mut tape, true);
    let x = tape.constant(tensor(&[3, 3]));
    refused(
        layer.forward_on(&mut tape, &p, x, Segments::One, None, InnerGrad::Record),
        length_mismatch("params"),
        &["params", "expected"],
    );
}

/// Non-finite features are not refused (PyG does not check them either, and a check
/// would cost a pass over `x`): they reach only the outputs of their own set.
#[test]
fn eq_non_finite_x_stays_in_its_set() {
    let mut x = tensor(&[4, 3]);
    x.data_mut()[0] = f32::NAN;
    let y = eq()
        .forward(&x, Segments::Index(&[0, 0, 1, 1]), None)
        .unwrap();
    assert!(y.data()[..2].iter().all(|v| v.is_nan()), "{y:?}");
    assert!(y.data()[2..].iter().all(|v| v.is_finite()), "{y:?}");
}

// ---- MemPooling: constructor ----

#[test]
fn mp_zero_sizes_and_bad_tau() {
    for (args, name) in [
        ((0, 2, 2, 2), "in_channels"),
        ((3, 0, 2, 2), "out_channels"),
        ((3, 2, 0, 2), "heads"),
        ((3, 2, 2, 0), "num_clusters"),
    ] {
        refused(
            MemPooling::new(args.0, args.1, args.2, args.3, 1.0),
            invalid(name),
            &[name, "0", "≥ 1"],
        );
    }
    for tau in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        refused(
            MemPooling::new(3, 2, 2, 2, tau),
            invalid("tau"),
            &["tau", &tau.to_string(), "finite and > 0"],
        );
    }
    refused(
        MemPooling::new(1 << 40, 2, 2, 2, 1.0),
        too_large,
        &["1099511627776", "limit"],
    );
}

// ---- MemPooling: forward ----

#[test]
fn mp_x_of_the_wrong_shape() {
    let p = pool();
    refused(
        p.forward(&tensor(&[5, 4]), PoolArgs::new()),
        wrong_shape("x"),
        &["x", "[5, 4]", "[5, 3]"],
    );
    refused(
        p.forward(&tensor(&[2, 5, 4]), PoolArgs::new()),
        wrong_shape("x"),
        &["x", "[2, 5, 4]", "[2, 5, 3]"],
    );
    refused(
        p.forward(&tensor(&[6]), PoolArgs::new()),
        invalid("x"),
        &["x", "[6]", "[N, 3]", "[B, N, 3]"],
    );
    refused(
        p.forward(&tensor(&[0, 4, 3]), PoolArgs::new()),
        invalid("x"),
        &["x", "[0, 4, F]", "at least one graph"],
    );
}

#[test]
fn mp_bad_batch() {
    let p = pool();
    let x = tensor(&[4, 3]);
    refused(
        p.forward(&x, PoolArgs::new().batch(&[0, 0, 1])),
        length_mismatch("batch"),
        &["batch", "3 values", "expected 4"],
    );
    refused(
        p.forward(&x, PoolArgs::new().batch(&[0, 0, -1, 1])),
        invalid("batch"),
        &["batch", "-1 at position 2", "≥ 0"],
    );
    refused(
        p.forward(&x, PoolArgs::new().batch(&[0, 1, 0, 1])),
        invalid("batch"),
        &["batch", "0 at position 2 after 1", "sorted"],
    );
    refused(
        p.forward(&x, PoolArgs::new().batch(&[0, 0, 1, 3]).batch_size(2)),
        invalid("batch_size"),
        &["batch_size", "2", "max(batch) + 1 = 4"],
    );
    refused(
        p.forward(&tensor(&[0, 3]), PoolArgs::new().batch(&[])),
        invalid("batch"),
        &["batch", "empty", "batch_size ≥ 1"],
    );
    refused(
        p.forward(&x, PoolArgs::new().batch_size(0)),
        invalid("batch_size"),
        &["batch_size", "0", "≥ 1"],
    );
}

#[test]
fn mp_absurd_sizes() {
    let p = pool();
    let x = tensor(&[4, 3]);
    refused(
        p.forward(&x, PoolArgs::new().batch(&[0, 0, 1, 1 << 40])),
        too_large,
        &["1099511627777", "limit"],
    );
    refused(
        p.forward(&x, PoolArgs::new().max_num_nodes(1 << 40)),
        too_large,
        &["1099511627776", "limit"],
    );
    refused(
        p.forward(&x, PoolArgs::new().batch_size(usize::MAX)),
        too_large,
        &[&usize::MAX.to_string(), "limit"],
    );
}

#[test]
fn mp_bad_masks() {
    let p = pool();
    refused(
        Mask::new([2, 3], &[true; 5]),
        length_mismatch("mask"),
        &["mask", "5 values", "expected 6"],
    );
    let mask = [true, true, false, true, false, false];
    refused(
        p.forward(
            &tensor(&[2, 2, 3]),
            PoolArgs::new().mask(Mask::new([2, 3], &mask).unwrap()),
        ),
        wrong_shape("mask"),
        &["mask", "[2, 3]", "[2, 2]"],
    );
    refused(
        p.forward(
            &tensor(&[4, 3]),
            PoolArgs::new().mask(Mask::new([2, 3], &mask).unwrap()),
        ),
        invalid("mask"),
        &["mask", "[2, 3]", "dense [B, N, F] input only"],
    );
}

#[test]
fn mp_node_arguments_with_dense_x() {
    let p = pool();
    let x = tensor(&[2, 2, 3]);
    refused(
        p.forward(&x, PoolArgs::new().batch(&[0, 1])),
        invalid("batch"),
        &["batch", "[N, F] node input only"],
    );
    refused(
        p.forward(&x, PoolArgs::new().max_num_nodes(2)),
        invalid("max_num_nodes"),
        &["max_num_nodes", "[N, F] node input only"],
    );
    refused(
        p.forward(&x, PoolArgs::new().batch_size(2)),
        invalid("batch_size"),
        &["batch_size", "[N, F] node input only"],
    );
}

#[test]
fn mp_kl_loss_of_a_bad_s() {
    refused(
        MemPooling::kl_loss(&tensor(&[4, 2])),
        invalid("S"),
        &["S", "[4, 2]", "[B, N, K]"],
    );
    refused(
        MemPooling::kl_loss(&tensor(&[0, 4, 2])),
        invalid("S"),
        &["S", "[0, 4, 2]", "B ≥ 1"],
    );
}

#[test]
fn mp_parameters_of_another_layer() {
    let p = pool();
    let other = MemPooling::new(3, 2, 2, 3, 1.0).unwrap();
    let mut tape = Tape::<f32>::new();
    let bound = other.parameters().bind(&mut tape, true);
    let x = tape.constant(tensor(&[4, 3]));
    refused(
        p.forward_on(&mut tape, &bound, x, PoolArgs::new())
            .map(|_| ()),
        wrong_shape("k"),
        &["k", "[2, 3, 3]", "[2, 2, 3]"],
    );
}

/// Non-finite features are not refused (as in PyG): they reach their own graph's
/// outputs only.
#[test]
fn mp_non_finite_x_stays_in_its_graph() {
    let mut x = tensor(&[4, 3]);
    x.data_mut()[0] = f32::INFINITY;
    let (out, s) = pool()
        .forward(&x, PoolArgs::new().batch(&[0, 0, 1, 1]))
        .unwrap();
    let half = out.data().len() / 2;
    assert!(out.data()[..half].iter().any(|v| !v.is_finite()), "{out:?}");
    assert!(out.data()[half..].iter().all(|v| v.is_finite()), "{out:?}");
    assert!(s.data()[s.data().len() / 2..].iter().all(|v| v.is_finite()));
}

// ---- Optimisers ----

#[test]
fn optimiser_hyperparameters() {
    refused(Adam::new(-0.1), invalid("lr"), &["lr", "-0.1"]);
    refused(Adam::new(f64::NAN), invalid("lr"), &["lr", "NaN"]);
    refused(
        Sgd::new(0.1, -0.5, 0.0),
        invalid("momentum"),
        &["momentum", "-0.5"],
    );
}

// ---- Weights files ----

/// A tensor for [`file`]: dtype, shape, little-endian bytes.
struct Raw(Dtype, Vec<usize>, Vec<u8>);

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.2)
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

fn f32s(shape: &[usize], v: &[f32]) -> Raw {
    Raw(
        Dtype::F32,
        shape.to_vec(),
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// A safetensors file of `tensors`.
fn file(tensors: &[(String, Raw)]) -> Vec<u8> {
    serialize(tensors.iter().map(|(n, r)| (n.clone(), r)), None).unwrap()
}

/// MemPooling(3, 2, 2, 2)'s own weights file, as `(name, shape, values)`.
fn mp_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let p = pool();
    let sd = StateDict::from_bytes(&p.state_dict_bytes().unwrap()).unwrap();
    sd.names()
        .map(|n| {
            let t = sd.get(n).unwrap();
            (n.to_string(), t.shape().to_vec(), t.data().to_vec())
        })
        .collect()
}

/// [`mp_tensors`] edited by `edit`, as a file.
fn mp_file(edit: impl FnOnce(&mut Vec<(String, Raw)>)) -> Vec<u8> {
    let mut tensors: Vec<(String, Raw)> = mp_tensors()
        .into_iter()
        .map(|(n, s, v)| (n, f32s(&s, &v)))
        .collect();
    edit(&mut tensors);
    file(&tensors)
}

/// Loads `bytes` into a fresh MemPooling, as a user would.
#[allow(
    clippy::result_large_err,
    reason = "the layers' own error type, as their loading functions return it"
)]
fn load(bytes: &[u8]) -> Result<(), LayerError> {
    pool().load_state_dict(StateDict::from_bytes(bytes)?)
}

#[test]
fn file_that_is_not_safetensors() {
    refused(
        load(b"not a safetensors file"),
        |e| matches!(e, LayerError::Parse { .. }),
        &["<bytes>", "not a valid safetensors file"],
    );
    let good = mp_file(|_| {});
    refused(
        load(&good[..good.len() - 3]),
        |e| matches!(e, LayerError::Parse { .. }),
        &["not a valid safetensors file"],
    );
    assert_eq!(load(&good), Ok(()));
}

#[test]
fn file_missing_or_unreadable() {
    let path = std::env::temp_dir().join("readout-bad-inputs-no-such-file.safetensors");
    refused(
        StateDict::from_file(&path),
        |e| matches!(e, LayerError::Io { .. }),
        &["readout-bad-inputs-no-such-file.safetensors"],
    );
}

#[test]
fn file_with_a_missing_or_extra_tensor() {
    refused(
        load(&mp_file(|t| t.retain(|(n, _)| n != "lin.weight"))),
        |e| matches!(e, LayerError::MissingTensor { name } if name == "lin.weight"),
        &["lin.weight", "missing"],
    );
    refused(
        load(&mp_file(|t| {
            t.push(("extra.bias".into(), f32s(&[1], &[0.0])))
        })),
        |e| matches!(e, LayerError::UnexpectedTensors { .. }),
        &["extra.bias", "unexpected"],
    );
}

#[test]
fn file_with_a_misshapen_tensor() {
    refused(
        load(&mp_file(|t| {
            let at = t.iter().position(|(n, _)| n == "lin.weight").unwrap();
            t[at].1 = f32s(&[3, 2], &[0.0; 6]);
        })),
        wrong_shape("lin.weight"),
        &["lin.weight", "[3, 2]", "[2, 3]"],
    );
}

#[test]
fn file_with_a_wrong_dtype() {
    refused(
        load(&mp_file(|t| {
            let at = t.iter().position(|(n, _)| n == "lin.weight").unwrap();
            t[at].1 = Raw(Dtype::I32, vec![2, 3], vec![0; 24]);
        })),
        |e| matches!(e, LayerError::WrongDtype { name, .. } if name == "lin.weight"),
        &["lin.weight", "I32", "F32 or F64"],
    );
}

#[test]
fn file_with_non_finite_values() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        refused(
            load(&mp_file(|t| {
                let at = t.iter().position(|(n, _)| n == "lin.weight").unwrap();
                t[at].1 = f32s(&[2, 3], &[0.0, 0.0, 0.0, 0.0, bad, 0.0]);
            })),
            |e| matches!(e, LayerError::NonFinite { name, position: 4, .. } if name == "lin.weight"),
            &["lin.weight", &f64::from(bad).to_string(), "position 4"],
        );
    }
    // An F64 value beyond f32's range would become infinite.
    let big = Raw(
        Dtype::F64,
        vec![2, 3],
        [0.0, 1e300, 0.0, 0.0, 0.0, 0.0]
            .iter()
            .flat_map(|x: &f64| x.to_le_bytes())
            .collect(),
    );
    refused(
        load(&mp_file(|t| {
            let at = t.iter().position(|(n, _)| n == "lin.weight").unwrap();
            t[at].1 = big;
        })),
        |e| matches!(e, LayerError::NonFinite { name, position: 1, .. } if name == "lin.weight"),
        // (The value is printed in full: "1000…000", 301 digits.)
        &["lin.weight", "1000000000000000", "position 1"],
    );
}

//! Test helpers: reading the PyG reference cases (`tests/data/*.safetensors`, format in
//! `tests/data/README.md` / the shared fixtures README) with the `safetensors` crate,
//! the error measure, and a small seeded generator.
#![allow(dead_code)]

pub mod equilibrium;
pub mod mem_pool;

use readout_layers::PygWeights;
use std::collections::HashMap;
use std::path::PathBuf;

use readout_core::{Tape, Tensor, Var};
use readout_layers::MemPooling;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

/// One tensor of a case file, converted: floats to `f64`, integers to `i64`, bools.
#[derive(Clone, Debug)]
pub enum Value {
    F(Vec<usize>, Vec<f64>),
    I(Vec<usize>, Vec<i64>),
    B(Vec<usize>, Vec<bool>),
}

/// A reference case: its tensors and its `__metadata__`.
pub struct Case {
    pub name: String,
    pub tensors: HashMap<String, Value>,
    pub meta: HashMap<String, String>,
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

impl Case {
    pub fn load(name: &str) -> Case {
        let path = data_dir().join(format!("{name}.safetensors"));
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).expect("a valid safetensors file");
        let (_, md) = SafeTensors::read_metadata(&bytes).expect("a header");
        let meta = md.metadata().clone().unwrap_or_default();
        let mut tensors = HashMap::new();
        for (n, v) in st.tensors() {
            let shape = v.shape().to_vec();
            let d = v.data();
            let val = match v.dtype() {
                Dtype::F32 => Value::F(
                    shape,
                    d.chunks_exact(4)
                        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                        .collect(),
                ),
                Dtype::F64 => Value::F(
                    shape,
                    d.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::I64 => Value::I(
                    shape,
                    d.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::BOOL => Value::B(shape, d.iter().map(|&b| b != 0).collect()),
                other => panic!("{name}: tensor {n} has unexpected dtype {other:?}"),
            };
            tensors.insert(n, val);
        }
        Case {
            name: name.into(),
            tensors,
            meta,
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// A float tensor's shape and values.
    pub fn f(&self, key: &str) -> (&[usize], &[f64]) {
        match self.tensors.get(key) {
            Some(Value::F(s, d)) => (s, d),
            other => panic!("{}: `{key}` is not a float tensor: {other:?}", self.name),
        }
    }

    pub fn i(&self, key: &str) -> Option<&[i64]> {
        match self.tensors.get(key) {
            Some(Value::I(_, d)) => Some(d),
            None => None,
            other => panic!("{}: `{key}` is not an integer tensor: {other:?}", self.name),
        }
    }

    pub fn b(&self, key: &str) -> Option<(&[usize], &[bool])> {
        match self.tensors.get(key) {
            Some(Value::B(s, d)) => Some((s, d)),
            None => None,
            other => panic!("{}: `{key}` is not a bool tensor: {other:?}", self.name),
        }
    }

    /// A float tensor as an `f64` tensor (shapes of rank > 3, i.e. `conv.weight`
    /// `[1, H, 1, 1]`, flattened to one dimension as the layer holds them).
    pub fn tensor(&self, key: &str) -> Tensor<f64> {
        let (s, d) = self.f(key);
        Tensor::from_vec(&layer_shape(s), d.to_vec()).unwrap()
    }

    /// A numeric field of a JSON object held in a metadata string (`args`, `forward`).
    pub fn meta_num(&self, entry: &str, field: &str) -> Option<f64> {
        let text = self.meta.get(entry)?;
        json_number(text, field)
    }

    pub fn kl_weight(&self) -> f64 {
        self.meta["kl_weight"].trim().parse().unwrap()
    }

    /// The layer of a MemPooling case, with the case's parameters.
    pub fn mem_pooling(&self) -> MemPooling {
        let arg = |f: &str| {
            self.meta_num("args", f)
                .unwrap_or_else(|| panic!("args.{f}"))
        };
        let mut layer = MemPooling::new(
            arg("in_channels") as usize,
            arg("out_channels") as usize,
            arg("heads") as usize,
            arg("num_clusters") as usize,
            arg("tau"),
        )
        .unwrap();
        for p in layer.parameters_mut().iter_mut() {
            let key = format!("param.{}", p.name());
            let (s, d) = self.f(&key);
            assert_eq!(
                s.iter().product::<usize>(),
                p.value().numel(),
                "{}: {key}",
                self.name
            );
            let shape = p.value().shape().to_vec();
            let v = Tensor::from_vec(&shape, d.iter().map(|&v| v as f32).collect()).unwrap();
            p.set_value(v).unwrap();
        }
        layer
    }
}

/// The shape the layer holds a tensor of PyG shape `s` in: rank > 3 flattened.
pub fn layer_shape(s: &[usize]) -> Vec<usize> {
    if s.len() > 3 {
        vec![s.iter().product()]
    } else {
        s.to_vec()
    }
}

/// A number in a flat JSON object `{"a": 1, "b": 2.5, ...}`; `None` if absent or null.
pub fn json_number(text: &str, field: &str) -> Option<f64> {
    let body = text.trim().trim_start_matches('{').trim_end_matches('}');
    for part in body.split(',') {
        let mut kv = part.splitn(2, ':');
        let k = kv.next()?.trim().trim_matches('"');
        let v = kv.next()?.trim();
        if k == field {
            return v.parse().ok();
        }
    }
    None
}

/// The project's error measure, [`readout_layers::relative_error`]:
/// `max |got − expect| / max(1, max |expect|)`, infinite for a non-finite `got`.
pub fn rel_err(got: &[f64], expect: &[f64]) -> f64 {
    readout_layers::relative_error(got, expect)
        .expect("same lengths")
        .0
}

/// `Σ a·w` on the tape for a constant `w` of `a`'s shape.
pub fn weighted_sum(tape: &mut Tape<f64>, a: Var, w: &[f64]) -> Var {
    let shape = tape.value(a).unwrap().shape().to_vec();
    let prod = tape
        .mask_mul(a, Tensor::from_vec(&shape, w.to_vec()).unwrap())
        .unwrap();
    tape.sum(prod).unwrap()
}

/// Splitmix64: a small seeded generator for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

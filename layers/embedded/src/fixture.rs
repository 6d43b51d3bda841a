//! The embedded inputs and PyG's expected outputs (a safetensors file made by
//! `build.rs`), decoded with the `safetensors` crate's `no_std` parser, and the
//! fixtures' error measure.

use alloc::string::ToString;
use alloc::vec::Vec;

use readout_core::Tensor;
use readout_layers::LayerError;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// A parsed inputs-and-outputs file.
pub struct Fixture<'a> {
    tensors: SafeTensors<'a>,
}

impl<'a> Fixture<'a> {
    /// Parses the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, LayerError> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| LayerError::Parse {
            source: "<fixture>".to_string(),
            reason: e.to_string(),
        })?;
        Ok(Fixture { tensors })
    }

    fn view(&self, name: &str, dtype: Dtype) -> Result<Option<TensorView<'a>>, LayerError> {
        let Ok(view) = self.tensors.tensor(name) else {
            return Ok(None);
        };
        if view.dtype() != dtype {
            return Err(LayerError::WrongDtype {
                name: name.to_string(),
                expected: dtype_name(dtype),
                got: alloc::format!("{:?}", view.dtype()),
            });
        }
        Ok(Some(view))
    }

    fn required(&self, name: &str, dtype: Dtype) -> Result<TensorView<'a>, LayerError> {
        self.view(name, dtype)?
            .ok_or_else(|| LayerError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// An `F32` tensor.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor<f32>, LayerError> {
        let view = self.required(name, Dtype::F32)?;
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Tensor::from_vec(view.shape(), values)?)
    }

    /// An `I64` tensor's values, if present.
    pub fn optional_i64(&self, name: &str) -> Result<Option<Vec<i64>>, LayerError> {
        Ok(self.view(name, Dtype::I64)?.map(|view| {
            view.data()
                .chunks_exact(8)
                .map(le_bytes)
                .map(i64::from_le_bytes)
                .collect()
        }))
    }

    /// An `F64` tensor's values.
    pub fn values_f64(&self, name: &str) -> Result<Vec<f64>, LayerError> {
        Ok(self.tensor_f64(name)?.1)
    }

    /// An `F64` tensor's shape and values.
    pub fn tensor_f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>), LayerError> {
        let view = self.required(name, Dtype::F64)?;
        let values = view
            .data()
            .chunks_exact(8)
            .map(le_bytes)
            .map(f64::from_le_bytes)
            .collect();
        Ok((view.shape().to_vec(), values))
    }
}

fn le_bytes(c: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(c);
    b
}

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::I64 => "I64",
        _ => "another type",
    }
}

/// `max |got − expect| / max(1, max |expect|)`, the fixtures' measure; infinite when
/// `got` holds a NaN or an infinity.
pub fn worst_error(got: &[f32], expect: &[f64]) -> Result<f64, LayerError> {
    if got.len() != expect.len() {
        return Err(LayerError::LengthMismatch {
            name: "output".to_string(),
            expected: expect.len(),
            got: got.len(),
        });
    }
    let scale = expect.iter().fold(1.0f64, |m, e| m.max(e.abs()));
    let mut worst = 0.0f64;
    for (&g, &e) in got.iter().zip(expect) {
        let g = f64::from(g);
        if !g.is_finite() {
            return Ok(f64::INFINITY);
        }
        worst = worst.max((g - e).abs());
    }
    Ok(worst / scale)
}

/// The rows of PyG's padded `S [B, N_max, K]` that belong to the `n` nodes, in node
/// order (node `i` is row `i − first node of its graph` of graph `batch[i]`): what the
/// ragged forward returns. Nodes beyond `N_max` are dropped, as PyG drops them.
pub fn padded_rows_of_nodes(
    (shape, values): &(Vec<usize>, Vec<f64>),
    batch: Option<&[i64]>,
    n: usize,
) -> Result<Vec<f64>, LayerError> {
    let &[graphs, max_nodes, k] = shape.as_slice() else {
        return Err(LayerError::WrongShape {
            name: "expect.S".to_string(),
            expected: alloc::vec![0, 0, 0],
            got: shape.clone(),
        });
    };
    let mut rows = Vec::with_capacity(n * k);
    let (mut graph, mut position) = (0usize, 0usize);
    for i in 0..n {
        let b = batch.map_or(Ok(0), |batch| usize::try_from(batch[i]));
        let b = b.map_err(|_| LayerError::BadValue {
            name: "input.batch".to_string(),
            position: i,
            value: i128::from(batch.map_or(0, |batch| batch[i])),
            reason: "a graph index must not be negative",
        })?;
        if b != graph {
            (graph, position) = (b, 0);
        }
        if b < graphs && position < max_nodes {
            let at = (b * max_nodes + position) * k;
            rows.extend_from_slice(&values[at..at + k]);
        }
        position += 1;
    }
    Ok(rows)
}

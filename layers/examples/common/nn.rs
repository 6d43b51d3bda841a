//! Small building blocks on the tape shared by the examples: linear layers, a
//! multi-layer perceptron and PyTorch's `LeakyReLU`.

// Each example uses only part of this module.
#![allow(dead_code, clippy::result_large_err)]
use rand::Rng;
use readout_core::{Tape, Tensor, Var};
use readout_layers::{Bound, LayerError, Parameter, Parameters, init};

/// `x·Wᵀ + b` for `x [N, in]`, `W [out, in]`, `b [out]`.
pub fn linear(tape: &mut Tape<f32>, x: Var, w: Var, b: Option<Var>) -> Result<Var, LayerError> {
    let y = tape.matmul_with(x, w, false, true)?;
    Ok(match b {
        Some(b) => tape.add(y, b)?,
        None => y,
    })
}

/// PyTorch's `LeakyReLU(negative_slope)`: `x` where `x > 0`, `slope·x` elsewhere. The
/// gradient is the same piecewise-constant factor, so a constant mask carries it.
pub fn leaky_relu(tape: &mut Tape<f32>, x: Var, slope: f32) -> Result<Var, LayerError> {
    let v = tape.value(x)?;
    let mask: Vec<f32> = v
        .data()
        .iter()
        .map(|&e| if e > 0.0 { 1.0 } else { slope })
        .collect();
    let mask = Tensor::from_vec(v.shape(), mask)?;
    Ok(tape.mask_mul(x, mask)?)
}

/// The non-linearity between an [`Mlp`]'s layers.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// `tanh`.
    Tanh,
    /// `LeakyReLU(0.01)`, PyTorch's default slope.
    LeakyRelu,
}

/// Linear layers of the given sizes with an activation between them (none after the
/// last), initialised as `torch.nn.Linear` is. Parameters are named
/// `{prefix}.{i}.weight` / `{prefix}.{i}.bias`.
#[derive(Clone, Debug)]
pub struct Mlp {
    params: Parameters,
    act: Act,
}

impl Mlp {
    /// `sizes = [in, hidden.., out]`.
    pub fn new<R: Rng + ?Sized>(prefix: &str, sizes: &[usize], act: Act, rng: &mut R) -> Self {
        let mut list = Vec::new();
        for (i, pair) in sizes.windows(2).enumerate() {
            let (w, b) = init::linear(rng, pair[0], pair[1]);
            list.push(Parameter::new(format!("{prefix}.{i}.weight"), w));
            list.push(Parameter::new(format!("{prefix}.{i}.bias"), b));
        }
        Mlp {
            params: Parameters::new(list),
            act,
        }
    }

    /// The parameters (weight, bias per layer).
    pub fn parameters(&self) -> &Parameters {
        &self.params
    }

    /// The parameters, mutable (for optimisers).
    pub fn parameters_mut(&mut self) -> &mut Parameters {
        &mut self.params
    }

    /// The output for `x [N, in]`, with the parameters bound at `bound`.
    pub fn forward(&self, tape: &mut Tape<f32>, bound: &Bound, x: Var) -> Result<Var, LayerError> {
        let layers = bound.vars().len() / 2;
        let mut h = x;
        for i in 0..layers {
            h = linear(tape, h, bound.var(2 * i), Some(bound.var(2 * i + 1)))?;
            if i + 1 < layers {
                h = match self.act {
                    Act::Tanh => tape.tanh(h)?,
                    Act::LeakyRelu => leaky_relu(tape, h, 0.01)?,
                };
            }
        }
        Ok(h)
    }
}

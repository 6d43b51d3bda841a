//! PyTorch's parameter modules as the two layers use them: `Linear`, `LayerNorm` and
//! `Conv2d` with a 1×1 kernel.
//!
//! A module is generic over what it holds in each parameter slot, `P`:
//!
//! - [`Parameter`] — the layer's own values, under PyG's `state_dict` key, as built by
//!   the module's `new` with PyTorch's initialisation;
//! - [`Var`] — the same parameters placed on a tape, for the module's `forward`;
//! - `&[T]` or `Vec<T>` — plain values, for the fused engines, which read each weight
//!   by field (`block.norm.weight`) rather than by position.
//!
//! A layer's parameter list is a walk over its modules in PyTorch's `state_dict` order
//! (each module's `push_slots`), and a flat list in that order (a [`Bound`]'s handles,
//! the values of [`Parameters`]) is turned back into modules by their `from_slots`, in
//! the same order.
//!
//! [`Bound`]: crate::param::Bound
//! [`Parameters`]: crate::param::Parameters

use alloc::format;
use alloc::vec::Vec;

use rand::Rng;
use readout_core::{Real, Shape, Tape, Tensor, Var};

use crate::error::LayerError;
use crate::init;
use crate::param::Parameter;

/// PyTorch's `LayerNorm` default epsilon.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Hands out the entries of a flat, `state_dict`-ordered list to the modules that own
/// them.
pub(crate) struct Slots<I> {
    iter: I,
}

impl<P, I: Iterator<Item = P>> Slots<I> {
    /// Slots read from `iter`, in `state_dict` order.
    pub(crate) fn new(iter: I) -> Self {
        Slots { iter }
    }

    /// The next slot; `None` when the list is too short (the layers compare the
    /// lengths first and report [`LayerError::LengthMismatch`]).
    pub(crate) fn next(&mut self) -> Option<P> {
        self.iter.next()
    }
}

/// `torch.nn.Linear(in_features, out_features, bias)`: `y = x·Wᵀ + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<P> {
    /// `weight [out_features, in_features]`.
    pub weight: P,
    /// `bias [out_features]`, absent for `bias=False`.
    pub bias: Option<P>,
}

impl Linear<Parameter> {
    /// A linear map under `key` (`key.weight`, `key.bias`), initialised as
    /// `torch.nn.Linear.reset_parameters` does: the weight by kaiming-uniform with
    /// `a = √5`, which is `U(−1/√in, 1/√in)`, then the bias from `U(−1/√in, 1/√in)`
    /// (its bound from the weight's own fan-in), drawn in that order.
    pub fn new<R: Rng + ?Sized>(
        key: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let bound = init::fan_in_bound(in_features);
        let weight = init::uniform(rng, Shape::d2(out_features, in_features), bound);
        let bias = bias.then(|| {
            let b = init::uniform(rng, Shape::d1(out_features), bound);
            Parameter::new(format!("{key}.bias"), b)
        });
        Linear {
            weight: Parameter::new(format!("{key}.weight"), weight),
            bias,
        }
    }
}

impl<P> Linear<P> {
    /// The module from the next slots of a flat list (the bias only when `bias`).
    pub(crate) fn from_slots<I: Iterator<Item = P>>(
        slots: &mut Slots<I>,
        bias: bool,
    ) -> Option<Self> {
        let weight = slots.next()?;
        let bias = if bias { Some(slots.next()?) } else { None };
        Some(Linear { weight, bias })
    }

    /// Appends the slots in `state_dict` order: `weight`, `bias`.
    pub(crate) fn push_slots(self, out: &mut Vec<P>) {
        out.push(self.weight);
        out.extend(self.bias);
    }
}

impl Linear<Var> {
    /// `x·Wᵀ + b` for `x [M, in_features]`.
    ///
    /// # Errors
    /// [`LayerError::Core`] when the shapes do not fit.
    pub fn forward<T: Real>(&self, tape: &mut Tape<T>, x: Var) -> Result<Var, LayerError> {
        let y = tape.matmul_with(x, self.weight, false, true)?;
        match self.bias {
            Some(b) => Ok(tape.add(y, b)?),
            None => Ok(y),
        }
    }
}

/// `torch.nn.LayerNorm(size)` over the last dimension, with an affine weight and bias.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm<P> {
    /// `weight [size]` (γ).
    pub weight: P,
    /// `bias [size]` (β).
    pub bias: P,
    /// Added to the variance, PyTorch's default [`LAYER_NORM_EPS`].
    pub eps: f64,
}

impl LayerNorm<Parameter> {
    /// A layer norm under `key` (`key.weight`, `key.bias`), initialised as PyTorch
    /// does: weight 1, bias 0 (no random draw).
    pub fn new(key: &str, size: usize) -> Self {
        LayerNorm {
            weight: Parameter::new(
                format!("{key}.weight"),
                Tensor::filled(Shape::d1(size), 1.0),
            ),
            bias: Parameter::new(format!("{key}.bias"), Tensor::filled(Shape::d1(size), 0.0)),
            eps: LAYER_NORM_EPS,
        }
    }
}

impl<P> LayerNorm<P> {
    /// The module from the next slots of a flat list, with PyTorch's default epsilon.
    pub(crate) fn from_slots<I: Iterator<Item = P>>(slots: &mut Slots<I>) -> Option<Self> {
        Some(LayerNorm {
            weight: slots.next()?,
            bias: slots.next()?,
            eps: LAYER_NORM_EPS,
        })
    }

    /// Appends the slots in `state_dict` order: `weight`, `bias`.
    pub(crate) fn push_slots(self, out: &mut Vec<P>) {
        out.push(self.weight);
        out.push(self.bias);
    }
}

impl LayerNorm<Var> {
    /// `(x − mean) / √(var + eps) · weight + bias` over each row of `x`.
    ///
    /// # Errors
    /// [`LayerError::Core`] when the shapes do not fit.
    pub fn forward<T: Real>(&self, tape: &mut Tape<T>, x: Var) -> Result<Var, LayerError> {
        let eps = T::from_f64(self.eps);
        Ok(tape.layer_norm(x, Some((self.weight, self.bias)), eps)?)
    }
}

/// `torch.nn.Conv2d(in_channels, 1, kernel_size=1, bias=False)`: a weighted sum over
/// the channel axis. Its weight is `[1, C, 1, 1]` in PyTorch and held here as `[C]`
/// (same values, the shape PyG stores is kept by the [`Parameter`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelMix<P> {
    /// `weight`, `[C]` here, `[1, C, 1, 1]` in PyG's `state_dict`.
    pub weight: P,
}

impl ChannelMix<Parameter> {
    /// The convolution under `key` (`key.weight`), initialised as `Conv2d` is:
    /// kaiming-uniform with `a = √5` and fan-in `C·1·1`, i.e. `U(−1/√C, 1/√C)`.
    pub fn new<R: Rng + ?Sized>(key: &str, channels: usize, rng: &mut R) -> Self {
        let w = init::uniform(rng, Shape::d1(channels), init::fan_in_bound(channels));
        ChannelMix {
            weight: Parameter::with_pyg_shape(
                format!("{key}.weight"),
                w,
                alloc::vec![1, channels, 1, 1],
            ),
        }
    }
}

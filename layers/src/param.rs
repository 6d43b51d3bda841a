//! Named parameters with their gradients, and how a layer's parameters meet a tape.

use alloc::string::String;
use alloc::vec::Vec;

use readout_core::{Gradients, Real, Tape, Tensor, Var};

use crate::error::LayerError;

/// A named, trainable tensor and its accumulated gradient. Names are PyG's
/// `state_dict` keys (`potential.layers.0.0.weight`, `k`, `lin.weight`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    name: String,
    value: Tensor<f32>,
    grad: Tensor<f32>,
    /// The shape PyG stores it under, where readout keeps a lower-rank view of the
    /// same values (`MemPooling`'s `conv.weight`: `[1, H, 1, 1]` in PyG, `[H]` here).
    pyg_shape: Option<Vec<usize>>,
    /// Whether it is trained (PyTorch's `requires_grad`); see [`Parameter::set_requires_grad`].
    requires_grad: bool,
}

impl Parameter {
    /// A parameter with a zero gradient.
    pub fn new(name: impl Into<String>, value: Tensor<f32>) -> Self {
        let grad = Tensor::filled(value.dims(), 0.0);
        Parameter {
            name: name.into(),
            value,
            grad,
            pyg_shape: None,
            requires_grad: true,
        }
    }

    /// A parameter that PyG stores under another shape with the same values
    /// (`pyg_shape` must hold as many elements as `value`; the modules that use this
    /// build both from the same sizes).
    pub(crate) fn with_pyg_shape(
        name: impl Into<String>,
        value: Tensor<f32>,
        pyg_shape: Vec<usize>,
    ) -> Self {
        debug_assert_eq!(pyg_shape.iter().product::<usize>(), value.numel());
        Parameter {
            pyg_shape: Some(pyg_shape),
            ..Parameter::new(name, value)
        }
    }

    /// The shape of this tensor in PyG's `state_dict`: its own shape, except where
    /// readout keeps a lower-rank view (`MemPooling`'s `conv.weight`, `[1, H, 1, 1]`
    /// in PyG and `[H]` here).
    pub fn pyg_shape(&self) -> &[usize] {
        self.pyg_shape
            .as_deref()
            .unwrap_or_else(|| self.value.shape())
    }

    /// Whether it is trained (true unless frozen).
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// Freezes (`false`) or unfreezes it, like PyTorch's `requires_grad_`: a frozen
    /// parameter is placed on a tape as a constant, so it gets no gradient, and the
    /// optimisers leave it (and its optimiser state) untouched.
    pub fn set_requires_grad(&mut self, requires_grad: bool) {
        self.requires_grad = requires_grad;
    }

    /// Its `state_dict` key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its value.
    pub fn value(&self) -> &Tensor<f32> {
        &self.value
    }

    /// Its value, mutable (the shape cannot change through this).
    pub fn value_mut(&mut self) -> &mut [f32] {
        self.value.data_mut()
    }

    /// Its accumulated gradient.
    pub fn grad(&self) -> &Tensor<f32> {
        &self.grad
    }

    /// Replaces the value by a tensor of the same shape.
    ///
    /// # Errors
    /// [`LayerError::WrongShape`] if the shapes differ.
    pub fn set_value(&mut self, value: Tensor<f32>) -> Result<(), LayerError> {
        if value.shape() != self.value.shape() {
            return Err(LayerError::WrongShape {
                name: self.name.clone(),
                expected: self.value.shape().to_vec(),
                got: value.shape().to_vec(),
            });
        }
        self.value = value;
        Ok(())
    }

    /// Its accumulated gradient, mutable (for gradient clipping).
    pub fn grad_mut(&mut self) -> &mut [f32] {
        self.grad.data_mut()
    }

    /// Values and gradient together, for optimisers.
    pub fn value_and_grad_mut(&mut self) -> (&mut [f32], &[f32]) {
        (self.value.data_mut(), self.grad.data())
    }
}

/// A layer's parameters, in PyG's `state_dict` order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Parameters {
    list: Vec<Parameter>,
}

/// A layer's parameters placed on a tape: one handle per parameter, in order.
#[derive(Clone, Debug)]
pub struct Bound {
    vars: Vec<Var>,
}

impl Bound {
    /// Handles placed on a tape by the caller, one per parameter in `state_dict` order
    /// (e.g. `f64` values not representable as the layer's `f32` parameters, for
    /// gradient checks). The layer checks their shapes when it uses them.
    pub fn from_vars(vars: Vec<Var>) -> Self {
        Bound { vars }
    }

    /// The handle of parameter `i`.
    ///
    /// # Panics
    /// If `i` is not below the number of handles (the layers check the count first and
    /// return [`LayerError::LengthMismatch`]).
    pub fn var(&self, i: usize) -> Var {
        self.vars[i]
    }

    /// Every handle, in parameter order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }
}

impl Parameters {
    /// Parameters from a list, in order.
    pub fn new(list: Vec<Parameter>) -> Self {
        Parameters { list }
    }

    /// Every parameter.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Parameter> {
        self.list.iter()
    }

    /// Every parameter, mutable (for optimisers).
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = &mut Parameter> {
        self.list.iter_mut()
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Parameter `i` in `state_dict` order.
    ///
    /// # Panics
    /// If `i` is not below [`Parameters::len`] (like slice indexing; [`Parameters::get`]
    /// looks a parameter up by name without panicking).
    pub fn at(&self, i: usize) -> &Parameter {
        &self.list[i]
    }

    /// Parameter `i`, mutable.
    ///
    /// # Panics
    /// If `i` is not below [`Parameters::len`].
    pub fn at_mut(&mut self, i: usize) -> &mut Parameter {
        &mut self.list[i]
    }

    /// The parameter with this `state_dict` key.
    pub fn get(&self, name: &str) -> Option<&Parameter> {
        self.list.iter().find(|p| p.name == name)
    }

    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.list.iter().map(|p| p.value.numel()).sum()
    }

    /// Places every parameter on `tape` (converted to `T`): as variables when
    /// `trainable` and the parameter is not frozen, so that gradients flow to them,
    /// else as constants.
    pub fn bind<T: Real>(&self, tape: &mut Tape<T>, trainable: bool) -> Bound {
        let vars = self
            .list
            .iter()
            .map(|p| {
                let v = p.value.cast::<T>();
                if trainable && p.requires_grad {
                    tape.variable(v)
                } else {
                    tape.constant(v)
                }
            })
            .collect();
        Bound { vars }
    }

    /// Checks that `bound` holds one handle per parameter, each with the parameter's
    /// shape (handles placed by [`Bound::from_vars`] may come from anywhere).
    ///
    /// # Errors
    /// [`LayerError::LengthMismatch`] named `params` for another count,
    /// [`LayerError::WrongShape`] naming the parameter whose handle has another shape,
    /// [`LayerError::Core`] for a handle the tape does not hold.
    pub fn check_bound<T: Real>(&self, tape: &Tape<T>, bound: &Bound) -> Result<(), LayerError> {
        if bound.vars.len() != self.list.len() {
            return Err(LayerError::LengthMismatch {
                name: "params".into(),
                expected: self.list.len(),
                got: bound.vars.len(),
            });
        }
        for (p, &v) in self.list.iter().zip(&bound.vars) {
            let got = tape.value(v)?.shape();
            if got != p.value.shape() {
                return Err(LayerError::WrongShape {
                    name: p.name.clone(),
                    expected: p.value.shape().to_vec(),
                    got: got.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Adds the gradients of a backward pass to the parameters' gradients.
    pub fn accumulate<T: Real>(&mut self, bound: &Bound, grads: &Gradients<T>) {
        for (p, &v) in self.list.iter_mut().zip(&bound.vars) {
            if let Some(g) = grads.get(v) {
                for (acc, &gi) in p.grad.data_mut().iter_mut().zip(g.data()) {
                    *acc += gi.to_f64() as f32;
                }
            }
        }
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        for p in &mut self.list {
            p.grad.data_mut().fill(0.0);
        }
    }

    /// `(key, value)` pairs in PyG's `state_dict` order.
    pub fn state_dict(&self) -> Vec<(&str, &Tensor<f32>)> {
        self.list
            .iter()
            .map(|p| (p.name.as_str(), &p.value))
            .collect()
    }
}

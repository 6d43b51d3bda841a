//! Nodes whose backward rule is supplied from outside the tape.
//!
//! Some computations have an adjoint that is cheaper to compute by other means than
//! recording every step: EquilibriumAggregation's unrolled inner optimisation, for
//! instance, is reversed step by step with Hessian-vector products computed on short
//! tapes. A custom node stands in for such a computation: it holds its value and a
//! [`CustomBackward`] rule that turns the gradient of its output into gradients of its
//! inputs. The rule runs in eager backward passes only; recording it
//! (`create_graph = true`) is an error, because its result would not be differentiable.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::op::Op;
use crate::{CoreError, Real, Tape, Tensor, Var};

/// A backward rule computed outside the tape (see [`Tape::custom`]).
pub trait CustomBackward<T>: Send + Sync {
    /// The op's name, for error messages.
    fn name(&self) -> &'static str;

    /// Given `grad`, the gradient flowing into the node's output, returns one entry per
    /// input, in the order the inputs were given to [`Tape::custom`]: its gradient (of
    /// the input's shape), or `None` when the output does not depend on it.
    ///
    /// # Errors
    /// Whatever the rule's own computation reports.
    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>, CoreError>;
}

/// A custom node's inputs and rule.
pub(crate) struct CustomOp<T> {
    inputs: Vec<Var>,
    rule: Box<dyn CustomBackward<T>>,
}

impl<T> fmt::Debug for CustomOp<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Custom({}, {} inputs)",
            self.rule.name(),
            self.inputs.len()
        )
    }
}

impl<T> CustomOp<T> {
    pub(crate) fn inputs(&self) -> &[Var] {
        &self.inputs
    }
}

impl<T: Real> CustomOp<T> {
    /// Runs the rule for the gradient `g` and puts each input's gradient on the tape
    /// as a constant.
    pub(crate) fn run_backward(
        &self,
        tape: &mut Tape<T>,
        g: Var,
    ) -> Result<Vec<(Var, Var)>, CoreError> {
        let name = self.rule.name();
        if tape.is_recording() {
            return Err(CoreError::NotRecordable { op: name });
        }
        let grads = self.rule.backward(tape.val(g))?;
        if grads.len() != self.inputs.len() {
            return Err(CoreError::CustomRule {
                op: name,
                input: grads.len(),
                why: "list does not have one entry per input",
            });
        }
        let mut out = Vec::new();
        for (i, (&input, grad)) in self.inputs.iter().zip(grads).enumerate() {
            let Some(grad) = grad else { continue };
            if grad.dims() != tape.val(input).dims() {
                return Err(CoreError::CustomRule {
                    op: name,
                    input: i,
                    why: "does not have the input's shape",
                });
            }
            let c = tape.constant(grad);
            out.push((input, c));
        }
        Ok(out)
    }
}

impl<T: Real> Tape<T> {
    /// A node with the given value whose gradient with respect to `inputs` is computed
    /// by `rule` (see [`CustomBackward`]). Gradients flow through it in eager backward
    /// passes ([`Tape::backward`], [`Tape::grad`] with `create_graph = false`).
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if an input is not on this tape.
    pub fn custom(
        &mut self,
        inputs: &[Var],
        value: Tensor<T>,
        rule: Box<dyn CustomBackward<T>>,
    ) -> Result<Var, CoreError> {
        for &v in inputs {
            self.check("custom", v)?;
        }
        let requires = self.recording && inputs.iter().any(|v| self.nodes[v.id()].requires_grad);
        if !requires {
            return Ok(self.constant(value));
        }
        let op = Op::Custom(Arc::new(CustomOp {
            inputs: inputs.to_vec(),
            rule,
        }));
        Ok(self.push_custom(op, value))
    }
}

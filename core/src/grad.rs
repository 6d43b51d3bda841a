//! The backward sweep: [`Tape::grad`] (gradients as handles, optionally recorded) and
//! [`Tape::backward`] (gradients of every variable leaf as tensors).

use alloc::vec;
use alloc::vec::Vec;

use crate::op::{Op, backward_rule};
use crate::{CoreError, Real, Tape, Tensor, Var};

/// Gradients of a loss with respect to the variable leaves of a tape, as tensors.
#[derive(Clone, Debug, Default)]
pub struct Gradients<T> {
    entries: Vec<(Var, Tensor<T>)>,
}

impl<T: Real> Gradients<T> {
    /// The gradient with respect to `leaf`, if the loss depends on it.
    pub fn get(&self, leaf: Var) -> Option<&Tensor<T>> {
        self.entries
            .binary_search_by_key(&leaf, |e| e.0)
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// Every (leaf, gradient) pair, in tape order.
    pub fn iter(&self) -> impl Iterator<Item = &(Var, Tensor<T>)> {
        self.entries.iter()
    }
}

impl<T: Real> Tape<T> {
    /// Gradients of `output` with respect to each of `wrt`, as handles on this tape —
    /// PyTorch's `torch.autograd.grad(output, wrt, seed, create_graph)`.
    ///
    /// `seed` is the gradient flowing into `output` (same shape); without one, `output`
    /// must hold one value and the seed is 1. With `create_graph = true` the backward
    /// rules are recorded on the tape, so the returned gradients can be differentiated
    /// again; with `false` they are computed eagerly, every intermediate is freed, and
    /// the returned handles are constants. A `wrt` that `output` does not depend on
    /// gets a zero gradient.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] for a handle not on this tape, [`CoreError::NotScalar`]
    /// without a seed for a multi-valued output, [`CoreError::ShapeMismatch`] for a
    /// seed whose shape differs from the output's.
    pub fn grad(
        &mut self,
        output: Var,
        seed: Option<Var>,
        wrt: &[Var],
        create_graph: bool,
    ) -> Result<Vec<Var>, CoreError> {
        self.check("grad", output)?;
        for &w in wrt {
            self.check("grad", w)?;
        }
        let mark = self.mark();
        let grads = self.sweep("grad", output, seed, Some(wrt), create_graph)?;
        if create_graph {
            let mut out = Vec::with_capacity(wrt.len());
            for &w in wrt {
                let g = match grads.get(w.id()).copied().flatten() {
                    Some(g) => g,
                    None => self.constant(Tensor::filled(self.val(w).dims(), T::ZERO)),
                };
                out.push(g);
            }
            return Ok(out);
        }
        // Eager: keep the gradient values, drop every temporary, re-add them as constants.
        let values: Vec<Tensor<T>> = wrt
            .iter()
            .map(|&w| match grads.get(w.id()).copied().flatten() {
                Some(g) => self.val(g).clone(),
                None => Tensor::filled(self.val(w).dims(), T::ZERO),
            })
            .collect();
        self.truncate(mark);
        Ok(values.into_iter().map(|t| self.constant(t)).collect())
    }

    /// Gradients of `loss` (one value) with respect to every variable leaf it depends
    /// on, as tensors; the tape keeps only what it held before the call.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `loss` is not on this tape, [`CoreError::NotScalar`]
    /// if it holds more than one value.
    pub fn backward(&mut self, loss: Var) -> Result<Gradients<T>, CoreError> {
        self.check("backward", loss)?;
        let mark = self.mark();
        let grads = self.sweep("backward", loss, None, None, false)?;
        let mut entries = Vec::new();
        for (id, g) in grads.iter().enumerate() {
            if let Some(g) = g {
                let node = &self.nodes[id];
                if node.requires_grad && node.op.is_leaf() {
                    entries.push((Var(id as u32), self.val(*g).clone()));
                }
            }
        }
        self.truncate(mark);
        Ok(Gradients { entries })
    }

    /// Runs the backward rules from `output` down to the leaves and returns, for every
    /// node up to `output`, the handle of its accumulated gradient. `op` names the
    /// public entry point in errors. Only the rules on a path from one of `wrt` (every
    /// variable leaf when `None`) to `output` run.
    fn sweep(
        &mut self,
        op: &'static str,
        output: Var,
        seed: Option<Var>,
        wrt: Option<&[Var]>,
        create_graph: bool,
    ) -> Result<Vec<Option<Var>>, CoreError> {
        let out_shape = self.val(output).dims();
        let seed = match seed {
            Some(s) => {
                let s_shape = self.check(op, s)?.dims();
                if s_shape != out_shape {
                    return Err(CoreError::ShapeMismatch {
                        op,
                        arg: "seed",
                        got: s_shape,
                        other: out_shape,
                        why: "the seed must have the output's shape",
                    });
                }
                s
            }
            None => {
                if out_shape.numel() != 1 {
                    return Err(CoreError::NotScalar {
                        op,
                        shape: out_shape,
                    });
                }
                self.constant(Tensor::filled(out_shape, T::ONE))
            }
        };
        let was_recording = self.set_recording(create_graph);
        let on_path = self.on_paths(output, wrt);
        // Only `backward` (eager, every leaf) reads nothing but the leaves' gradients
        // afterwards, so only there may the other temporaries be freed on the way.
        let free_dead = !create_graph && wrt.is_none();
        let result = self.sweep_rules(output, seed, &on_path, free_dead);
        self.set_recording(was_recording);
        result
    }

    /// For every node up to `output`, whether a gradient has to flow through it: it
    /// requires a gradient and is one of `wrt` or depends on one (when `wrt` is `None`,
    /// every node that requires a gradient). Without this pruning, `grad(e, [y])` inside
    /// an unrolled loop would also run (and, with `create_graph`, record) the rules
    /// towards every parameter `e` depends on, only to drop their results.
    fn on_paths(&self, output: Var, wrt: Option<&[Var]>) -> Vec<bool> {
        let n = output.id() + 1;
        let Some(wrt) = wrt else {
            return self.nodes[..n]
                .iter()
                .map(|node| node.requires_grad)
                .collect();
        };
        let mut on = vec![false; n];
        for w in wrt {
            if w.id() < n && self.nodes[w.id()].requires_grad {
                on[w.id()] = true;
            }
        }
        for id in 0..n {
            let node = &self.nodes[id];
            if !on[id] && node.requires_grad && node.inputs().any(|p| on[p.id()]) {
                on[id] = true;
            }
        }
        on
    }

    /// Runs the rules from `output` down. With `free_dead`, a temporary's value goes
    /// back to the buffer pool as soon as nothing can read it again: the nodes a rule
    /// creates besides its contributions right after the rule, a node's incoming
    /// gradient once its rule has run, a partial sum once it has been added to. (A
    /// recorded sweep keeps everything: its nodes are part of the new graph.) Without
    /// this, the backward of a recorded inner loop held every intermediate gradient
    /// until the end, twice the memory of the graph itself.
    fn sweep_rules(
        &mut self,
        output: Var,
        seed: Var,
        on_path: &[bool],
        free_dead: bool,
    ) -> Result<Vec<Option<Var>>, CoreError> {
        let mut grads: Vec<Option<Var>> = vec![None; output.id() + 1];
        grads[output.id()] = Some(seed);
        let mut dead = Dead::new(self.nodes.len(), free_dead);
        for id in (0..=output.id()).rev() {
            let Some(g) = grads[id] else { continue };
            let node = &self.nodes[id];
            if !on_path[id] || node.op.is_leaf() {
                continue;
            }
            let op = node.op.clone();
            let before = self.nodes.len();
            let mut updates: Vec<(Var, Var)> = Vec::new();
            if let Op::Custom(custom) = &op {
                for (input, c) in custom.run_backward(self, g)? {
                    if on_path[input.id()] {
                        updates.push((input, c));
                    }
                }
            } else {
                let parents = node.parents;
                let mut needs = [false; 3];
                for (i, p) in parents.get().enumerate() {
                    needs[i] = on_path[p.id()];
                }
                let contributions = backward_rule(self, Var(id as u32), &op, &parents, needs, g)?;
                for (i, p) in parents.get().enumerate() {
                    match contributions[i] {
                        Some(c) if needs[i] => updates.push((p, c)),
                        _ => {}
                    }
                }
            }
            if dead.on {
                // The rule's own intermediates: only its contributions live on.
                for k in before..self.nodes.len() {
                    let v = Var(k as u32);
                    if !updates.iter().any(|&(_, c)| c == v) {
                        self.free_value(v);
                    }
                }
            }
            for (p, c) in updates {
                dead.hold(c);
                let sum = match grads[p.id()] {
                    None => c,
                    Some(old) => {
                        let sum = self.add(old, c)?;
                        dead.hold(sum);
                        dead.release(self, old);
                        dead.release(self, c);
                        sum
                    }
                };
                grads[p.id()] = Some(sum);
            }
            if dead.on {
                grads[id] = None;
                dead.release(self, g);
            }
        }
        Ok(grads)
    }
}

/// How many gradient slots hold each temporary of an eager `backward` sweep (the nodes
/// from `start` on), to free a temporary's value when none does.
struct Dead {
    on: bool,
    start: usize,
    held: Vec<u32>,
}

impl Dead {
    fn new(start: usize, on: bool) -> Self {
        Dead {
            on,
            start,
            held: Vec::new(),
        }
    }

    fn hold(&mut self, v: Var) {
        if !self.on || v.id() < self.start {
            return;
        }
        let k = v.id() - self.start;
        if self.held.len() <= k {
            self.held.resize(k + 1, 0);
        }
        self.held[k] += 1;
    }

    fn release<T: Real>(&mut self, tape: &mut Tape<T>, v: Var) {
        if !self.on || v.id() < self.start {
            return;
        }
        let k = v.id() - self.start;
        self.held[k] -= 1;
        if self.held[k] == 0 {
            tape.free_value(v);
        }
    }
}

//! The tape: an arena of nodes, each holding its op, its parents and its value.
//!
//! Ops append nodes and return small `Copy` handles ([`Var`]). A node records its op
//! and parents only when it *requires a gradient*: when the tape is recording and one
//! of its parents requires one. Otherwise it is stored as a constant, which is how the
//! eager (`create_graph = false`) backward pass and the inference paths avoid building
//! a graph they will never differentiate.

use alloc::vec::Vec;
use core::cell::RefCell;

use crate::op::Op;
use crate::pool::BufferPool;
use readout_kernels::elementwise::Broadcast;

use crate::{CoreError, Real, Tensor};

/// A handle to a node of a [`Tape`]: cheap to copy, valid until the tape is truncated
/// below it or cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Var(pub(crate) u32);

impl Var {
    /// The node's position on its tape.
    pub fn id(self) -> usize {
        self.0 as usize
    }
}

/// Up to three parent handles, without allocating.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Parents {
    ids: [u32; 3],
    len: u8,
}

impl Parents {
    pub(crate) fn new(ps: &[Var]) -> Self {
        let mut p = Parents::default();
        for (slot, v) in p.ids.iter_mut().zip(ps) {
            *slot = v.0;
        }
        p.len = ps.len().min(3) as u8;
        p
    }

    pub(crate) fn get(&self) -> impl Iterator<Item = Var> + '_ {
        self.ids[..self.len as usize].iter().map(|&i| Var(i))
    }

    pub(crate) fn at(&self, i: usize) -> Var {
        Var(self.ids[i])
    }
}

/// One node: its op, its parents and its value.
pub(crate) struct Node<T> {
    pub(crate) op: Op<T>,
    pub(crate) parents: Parents,
    pub(crate) value: Tensor<T>,
    pub(crate) requires_grad: bool,
}

impl<T> Node<T> {
    /// The node's inputs: its parents, or a custom op's input list.
    pub(crate) fn inputs(&self) -> impl Iterator<Item = Var> + '_ {
        let custom = match &self.op {
            Op::Custom(c) => c.inputs(),
            _ => &[],
        };
        self.parents.get().chain(custom.iter().copied())
    }
}

/// What a tape holds right now (see [`Tape::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapeStats {
    /// Nodes on the tape.
    pub nodes: usize,
    /// Nodes that record an op and its parents (the differentiable graph).
    pub recorded: usize,
    /// Bytes held by the nodes' values.
    pub value_bytes: usize,
    /// Bytes held by the node arena itself.
    pub node_bytes: usize,
    /// Bytes of freed values kept for reuse (see [`Tape::clear`]).
    pub pooled_bytes: usize,
}

impl TapeStats {
    /// Total bytes held.
    pub fn bytes(&self) -> usize {
        self.value_bytes + self.node_bytes + self.pooled_bytes
    }
}

/// A position on a tape, to [`Tape::truncate`] back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark(pub(crate) usize);

/// A reverse-mode autodiff tape over `f32` or `f64` values.
///
/// Leaves come from [`Tape::variable`] (requires a gradient: parameters, inputs to
/// differentiate) and [`Tape::constant`]. Ops are methods that check shapes, compute
/// the value through `readout-kernels` and append a node. Gradients come from
/// [`Tape::grad`] (as handles, optionally themselves differentiable) and
/// [`Tape::backward`] (as tensors).
///
/// A tape reused across steps ([`Tape::clear`] at the start of each) recycles the
/// buffers of the previous step instead of asking the allocator again.
pub struct Tape<T> {
    pub(crate) nodes: Vec<Node<T>>,
    pub(crate) recording: bool,
    /// Freed values, for ops to write their outputs into. A `RefCell` so that an op
    /// can take a buffer while it holds references to its inputs' values.
    pool: RefCell<BufferPool<T>>,
    /// Bytes the nodes' values hold now (kept up to date on every push and free, so
    /// the pool's limit follows the most they ever held, backward temporaries
    /// included).
    held: usize,
}

impl<T: Real> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> Tape<T> {
    /// An empty tape, recording.
    pub fn new() -> Self {
        Tape {
            nodes: Vec::new(),
            recording: true,
            pool: RefCell::new(BufferPool::default()),
            held: 0,
        }
    }

    /// A leaf that requires a gradient (a parameter, or an input to differentiate).
    pub fn variable(&mut self, value: Tensor<T>) -> Var {
        self.push_leaf(value, true)
    }

    /// A leaf that does not require a gradient (data, masks, constants).
    pub fn constant(&mut self, value: Tensor<T>) -> Var {
        self.push_leaf(value, false)
    }

    /// A constant holding a copy of `value`, in a buffer recycled from the tape's
    /// earlier values when one fits. For data that stays with the caller from step to
    /// step (a fixed mask, a target): [`Tape::constant`] of a clone would allocate the
    /// copy afresh on every step.
    pub fn constant_copied(&mut self, value: &Tensor<T>) -> Var {
        let n = value.numel();
        let mut data = self.buffer_overwritten(n);
        // A copy (split over threads when long).
        readout_kernels::layout::expand(value.data(), Broadcast::Same, 1, n, &mut data);
        self.constant(Tensor::raw(value.dims(), data))
    }

    /// `len` zeros in a buffer recycled from the tape's earlier values when one fits
    /// (see [`Tape::clear`]): for the value of a custom node ([`Tape::custom`])
    /// without a fresh allocation on every step. A long buffer is zeroed on every
    /// thread of the rayon pool.
    pub fn recycled_zeros(&self, len: usize) -> Vec<T> {
        let mut v = self.buffer_overwritten(len);
        readout_kernels::layout::expand(&[T::ZERO], Broadcast::Scalar, 1, len, &mut v);
        v
    }

    /// A rank-0 constant.
    pub fn scalar(&mut self, v: T) -> Var {
        self.constant(Tensor::scalar(v))
    }

    /// The value of a node.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `v` is not on this tape.
    pub fn value(&self, v: Var) -> Result<&Tensor<T>, CoreError> {
        self.check("value", v)
    }

    /// Whether gradients flow to this node from the leaves created with
    /// [`Tape::variable`].
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `v` is not on this tape.
    pub fn requires_grad(&self, v: Var) -> Result<bool, CoreError> {
        self.check("requires_grad", v)?;
        Ok(self.nodes[v.id()].requires_grad)
    }

    /// Turns recording on or off and returns the previous setting. While off, every
    /// new node is a constant (like PyTorch's `no_grad`): values are computed, no
    /// graph is kept.
    pub fn set_recording(&mut self, on: bool) -> bool {
        core::mem::replace(&mut self.recording, on)
    }

    /// Whether new nodes record their op (see [`Tape::set_recording`]).
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tape has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes and bytes held, so users can watch the tape grow (an unrolled inner loop
    /// adds about `grad_iter × (forward + backward)` nodes).
    pub fn stats(&self) -> TapeStats {
        debug_assert_eq!(
            self.held,
            self.nodes.iter().map(|n| n.value.bytes()).sum::<usize>(),
            "the running count of the values' bytes"
        );
        let recorded = self.nodes.iter().filter(|n| n.requires_grad).count();
        TapeStats {
            nodes: self.nodes.len(),
            recorded,
            value_bytes: self.held,
            node_bytes: self.nodes.capacity() * core::mem::size_of::<Node<T>>(),
            pooled_bytes: self.pool.borrow().bytes(),
        }
    }

    /// The current end of the tape.
    pub fn mark(&self) -> Mark {
        Mark(self.nodes.len())
    }

    /// Drops every node from `mark` on; their values' buffers are kept for the ops
    /// that follow. Handles to dropped nodes become invalid (ops on them report
    /// [`CoreError::UnknownVar`] until new nodes reuse their positions — do not keep
    /// them).
    ///
    /// The kept buffers never exceed the most bytes of values the tape has held at
    /// once, so a loop that truncates does not grow.
    pub fn truncate(&mut self, mark: Mark) {
        let at = mark.0.min(self.nodes.len());
        let pool = self.pool.get_mut();
        for node in self.nodes.drain(at..) {
            self.held -= node.value.bytes();
            pool.give(node.value.into_vec());
        }
    }

    /// Drops every node and keeps their values' buffers for the next step: the way
    /// to start each step of a loop on the same tape. Buffers that no op took during
    /// the step just ended are freed, so the tape settles at what a step uses.
    /// [`Tape::release`] frees everything.
    pub fn clear(&mut self) {
        self.pool.get_mut().next_generation();
        self.truncate(Mark(0));
    }

    /// Drops every node and frees all the memory the tape holds.
    pub fn release(&mut self) {
        self.nodes = Vec::new();
        self.held = 0;
        self.pool.get_mut().release();
    }

    /// Gives the value of node `v` back to the buffer pool, leaving an empty value: for
    /// temporaries of an eager backward sweep that nothing refers to any more.
    pub(crate) fn free_value(&mut self, v: Var) {
        let empty = Tensor::raw(crate::Shape::d1(0), Vec::new());
        let value = core::mem::replace(&mut self.nodes[v.id()].value, empty);
        self.held -= value.bytes();
        self.pool.get_mut().give(value.into_vec());
    }

    /// Counts a new node's value as held, and lets the pool keep as much as the
    /// values have ever held at once (a backward pass's peak included: with only the
    /// values held between steps as the limit, a step's last temporaries were freed
    /// and allocated afresh, page faults and all, on every step).
    fn hold(&mut self, value: &Tensor<T>) {
        self.held += value.bytes();
        self.pool.get_mut().raise_limit(self.held);
    }

    /// A buffer of `len` zeros for an op's output, recycled when the tape has one.
    pub(crate) fn buffer(&self, len: usize) -> Vec<T> {
        self.pool.borrow_mut().take(len)
    }

    /// A buffer of `len` values for an op whose kernel writes every one of them (its
    /// old contents are not cleared).
    pub(crate) fn buffer_overwritten(&self, len: usize) -> Vec<T> {
        self.pool.borrow_mut().take_any(len)
    }

    pub(crate) fn push_leaf(&mut self, value: Tensor<T>, requires_grad: bool) -> Var {
        self.hold(&value);
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            op: Op::Leaf,
            parents: Parents::default(),
            value,
            requires_grad,
        });
        Var(id)
    }

    /// Appends an op node. It records its op and parents only if the tape is recording
    /// and a parent requires a gradient; otherwise it is a constant.
    pub(crate) fn push(&mut self, op: Op<T>, parents: &[Var], value: Tensor<T>) -> Var {
        let requires = self.recording && parents.iter().any(|p| self.nodes[p.id()].requires_grad);
        if !requires {
            return self.push_leaf(value, false);
        }
        self.hold(&value);
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            op,
            parents: Parents::new(parents),
            value,
            requires_grad: true,
        });
        Var(id)
    }

    /// Appends a custom node (its inputs are in the op); it requires a gradient.
    pub(crate) fn push_custom(&mut self, op: Op<T>, value: Tensor<T>) -> Var {
        self.hold(&value);
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            op,
            parents: Parents::default(),
            value,
            requires_grad: true,
        });
        Var(id)
    }

    /// The value of a node already known to be on the tape.
    pub(crate) fn val(&self, v: Var) -> &Tensor<T> {
        &self.nodes[v.id()].value
    }

    /// Checks that `v` is on this tape and returns its value.
    pub(crate) fn check(&self, op: &'static str, v: Var) -> Result<&Tensor<T>, CoreError> {
        match self.nodes.get(v.id()) {
            Some(n) => Ok(&n.value),
            None => Err(CoreError::UnknownVar {
                op,
                id: v.id(),
                len: self.nodes.len(),
            }),
        }
    }
}

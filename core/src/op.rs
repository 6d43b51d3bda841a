//! The primitive ops a node can record, and the dispatch to their backward rules.
//!
//! Every backward rule is written in tape ops on handles (see the `ops` modules), so
//! the same rule computes eagerly when the tape is not recording and appends a
//! differentiable graph when it is (`create_graph = true`).

use alloc::sync::Arc;

use readout_kernels::elementwise::{Binary, Broadcast, Unary};

use crate::tape::Parents;
use crate::{CoreError, Real, Tape, Var};

/// A recorded op with what its backward rule needs besides the parents' values.
#[derive(Clone, Debug)]
pub(crate) enum Op<T> {
    /// An input, parameter or constant.
    Leaf,
    /// `op(a)·op(b)`, rank 2 or batched rank 3.
    MatMul { trans_a: bool, trans_b: bool },
    /// `a ∘ b` with `b` broadcast.
    Binary { op: Binary, bcast: Broadcast },
    /// `f(x)` elementwise.
    Unary(Unary<T>),
    /// `x` where the mask is set, zero elsewhere (a selection, not a product).
    Select(Arc<[bool]>),
    /// Sum of all values.
    SumAll,
    /// Sum over the last axis.
    SumRows,
    /// Sum over all leading axes (one value per column).
    SumCols,
    /// Broadcast of a scalar, a column (one value per row) or a row (one value per column).
    Expand(Broadcast),
    /// Same values, another shape.
    Reshape,
    /// Swap of the last two axes.
    Transpose,
    /// Permutation of the three axes of a rank-3 tensor.
    Permute([usize; 3]),
    /// `out[i] = x[index[i]]` over the first axis.
    Gather(Arc<[usize]>),
    /// `out[index[i]] += x[i]` over the first axis.
    ScatterAdd(Arc<[usize]>),
    /// Sum over CSR segments of the first axis.
    SegmentSum(Arc<[usize]>),
    /// Repeat of each segment's row over its CSR segment (adjoint of `SegmentSum`).
    ExpandPtr(Arc<[usize]>),
    /// `out_g = a_gᵀ·c_g` over CSR segments of rows: `[N, P], [N, Q] → [B, P, Q]`.
    SegmentMatMulTN(Arc<[usize]>),
    /// `y_g = a_g·op(b_g)` over CSR segments of rows: `[N, P], [B, ·, ·] → [N, Q]`.
    SegmentMatMul { ptr: Arc<[usize]>, trans_b: bool },
    /// Columns of `a` then columns of `b`.
    ConcatCols,
    /// Columns `start .. start + width` (width = the node's own column count).
    SliceCols { start: usize },
    /// Zero padding that puts `x` at columns `start ..` of a wider matrix.
    PadCols { start: usize },
    /// Softmax over the last axis.
    Softmax,
    /// Layer norm over the last axis, with weight and bias parents when `affine`.
    LayerNorm { eps: T, affine: bool },
    /// A node whose backward rule is supplied from outside (see [`crate::CustomBackward`]);
    /// its inputs live in the op, not in the node's three parent slots.
    Custom(Arc<crate::ops::custom::CustomOp<T>>),
}

impl<T> Op<T> {
    pub(crate) fn is_leaf(&self) -> bool {
        matches!(self, Op::Leaf)
    }
}

/// Up to three gradient contributions, one per parent.
pub(crate) type Contributions = [Option<Var>; 3];

/// Runs the backward rule of node `y` (op `op`, parents `ps`) for the incoming gradient
/// `g`; `needs[i]` says whether parent `i` wants a gradient.
pub(crate) fn backward_rule<T: Real>(
    tape: &mut Tape<T>,
    y: Var,
    op: &Op<T>,
    ps: &Parents,
    needs: [bool; 3],
    g: Var,
) -> Result<Contributions, CoreError> {
    use crate::ops::*;
    match op {
        Op::Leaf => Ok([None; 3]),
        Op::MatMul { trans_a, trans_b } => {
            linalg::matmul_backward(tape, ps, *trans_a, *trans_b, needs, g)
        }
        Op::Binary { op, bcast } => arith::binary_backward(tape, y, ps, *op, *bcast, needs, g),
        Op::Unary(u) => {
            arith::unary_backward(tape, y, ps.at(0), *u, g).map(|d| [Some(d), None, None])
        }
        Op::Select(mask) => Ok([Some(tape.select(g, mask.clone())), None, None]),
        Op::SumAll | Op::SumRows | Op::SumCols | Op::Expand(_) => {
            reduce::backward(tape, op, ps.at(0), g).map(|d| [Some(d), None, None])
        }
        Op::Reshape
        | Op::Transpose
        | Op::Permute(_)
        | Op::SliceCols { .. }
        | Op::PadCols { .. } => {
            layout::unary_backward(tape, op, ps.at(0), g).map(|d| [Some(d), None, None])
        }
        Op::ConcatCols => layout::concat_backward(tape, ps, g),
        Op::Gather(_) | Op::ScatterAdd(_) | Op::SegmentSum(_) | Op::ExpandPtr(_) => {
            index::backward(tape, op, ps.at(0), g).map(|d| [Some(d), None, None])
        }
        Op::SegmentMatMulTN(_) | Op::SegmentMatMul { .. } => {
            segment_matmul::backward(tape, op, ps, needs, g)
        }
        Op::Softmax => softmax::backward(tape, y, g).map(|d| [Some(d), None, None]),
        Op::LayerNorm { eps, affine } => layer_norm::backward(tape, ps, *eps, *affine, needs, g),
        // Custom nodes are handled by the sweep itself (they have any number of inputs).
        Op::Custom(_) => Ok([None; 3]),
    }
}

//! The core's error type: every shape or index problem is reported, never a panic.

use core::fmt;

use crate::Shape;

/// An error from a tensor constructor or a tape op. Each variant names the op and the
/// argument at fault, and carries the offending shapes or values.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreError {
    /// A shape with more than three dimensions was asked for.
    RankTooHigh {
        /// The op or constructor.
        op: &'static str,
        /// How many dimensions were given.
        rank: usize,
    },
    /// The data does not hold as many values as the shape needs.
    DataLength {
        /// The op or constructor.
        op: &'static str,
        /// The shape asked for.
        shape: Shape,
        /// Values given.
        len: usize,
    },
    /// Two shapes do not fit together.
    ShapeMismatch {
        /// The op.
        op: &'static str,
        /// The argument whose shape is at fault.
        arg: &'static str,
        /// Its shape.
        got: Shape,
        /// The shape it was checked against (the other operand's, or the one expected).
        other: Shape,
        /// Why they do not fit.
        why: &'static str,
    },
    /// An argument has a rank the op does not take.
    BadRank {
        /// The op.
        op: &'static str,
        /// The argument.
        arg: &'static str,
        /// Its shape.
        got: Shape,
        /// What the op takes, in words.
        expected: &'static str,
    },
    /// An index is outside its bound.
    IndexOutOfRange {
        /// The op.
        op: &'static str,
        /// The index argument.
        arg: &'static str,
        /// Position of the bad entry in the index.
        position: usize,
        /// The bad entry.
        value: usize,
        /// The exclusive upper bound.
        bound: usize,
    },
    /// An index has the wrong number of entries.
    IndexLength {
        /// The op.
        op: &'static str,
        /// The index argument.
        arg: &'static str,
        /// Entries given.
        len: usize,
        /// Entries expected.
        expected: usize,
    },
    /// A CSR `ptr` is not a valid segment boundary list.
    BadPtr {
        /// The op.
        op: &'static str,
        /// Position of the offending entry.
        position: usize,
        /// The offending entry.
        value: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A scalar argument has an invalid value.
    InvalidValue {
        /// The op.
        op: &'static str,
        /// The argument.
        arg: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        why: &'static str,
    },
    /// A handle does not name a node of this tape (made by another tape, or dropped
    /// by [`crate::Tape::truncate`]).
    UnknownVar {
        /// The op.
        op: &'static str,
        /// The handle's id.
        id: usize,
        /// Nodes on the tape.
        len: usize,
    },
    /// A custom backward rule (see [`crate::CustomBackward`]) cannot be recorded, so
    /// the gradient through it cannot be differentiated again.
    NotRecordable {
        /// The custom op's name.
        op: &'static str,
    },
    /// A custom backward rule returned gradients that do not fit its inputs.
    CustomRule {
        /// The custom op's name.
        op: &'static str,
        /// Which input (position in the inputs list).
        input: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A result's element count overflows `usize`, or its bytes exceed what one
    /// allocation can hold (`isize::MAX`): refused instead of panicking in the
    /// allocator (shapes with a zero dimension can hold absurd other dimensions).
    TooLarge {
        /// The op or constructor.
        op: &'static str,
        /// The shape asked for.
        shape: Shape,
    },
    /// A backward pass without a seed needs a one-element output.
    NotScalar {
        /// The op.
        op: &'static str,
        /// The output's shape.
        shape: Shape,
    },
}

impl CoreError {
    /// [`CoreError::BadRank`]: argument `arg` of `op` has shape `got`, and `op` takes
    /// `expected` (in words).
    pub(crate) fn bad_rank(
        op: &'static str,
        arg: &'static str,
        got: Shape,
        expected: &'static str,
    ) -> Self {
        CoreError::BadRank {
            op,
            arg,
            got,
            expected,
        }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::RankTooHigh { op, rank } => {
                write!(
                    f,
                    "{op}: a shape of rank {rank} was asked for; tensors have rank 0 to 3"
                )
            }
            CoreError::DataLength { op, shape, len } => write!(
                f,
                "{op}: shape {shape} needs {} values but {len} were given",
                shape.numel()
            ),
            CoreError::ShapeMismatch {
                op,
                arg,
                got,
                other,
                why,
            } => {
                write!(
                    f,
                    "{op}: argument `{arg}` has shape {got}, which does not fit {other}: {why}"
                )
            }
            CoreError::BadRank {
                op,
                arg,
                got,
                expected,
            } => {
                write!(
                    f,
                    "{op}: argument `{arg}` has shape {got}; expected {expected}"
                )
            }
            CoreError::IndexOutOfRange {
                op,
                arg,
                position,
                value,
                bound,
            } => write!(
                f,
                "{op}: `{arg}[{position}]` = {value} is out of range (must be < {bound})"
            ),
            CoreError::IndexLength {
                op,
                arg,
                len,
                expected,
            } => {
                write!(f, "{op}: `{arg}` has {len} entries, expected {expected}")
            }
            CoreError::BadPtr {
                op,
                position,
                value,
                why,
            } => {
                write!(f, "{op}: `ptr[{position}]` = {value}: {why}")
            }
            CoreError::InvalidValue {
                op,
                arg,
                value,
                why,
            } => {
                write!(f, "{op}: `{arg}` = {value}: {why}")
            }
            CoreError::UnknownVar { op, id, len } => write!(
                f,
                "{op}: variable #{id} is not on this tape (it holds {len} nodes; was it truncated away or made by another tape?)"
            ),
            CoreError::NotRecordable { op } => write!(
                f,
                "{op}: its backward rule is computed outside the tape and cannot be recorded; call grad with create_graph = false (or use a recorded mode of the layer)"
            ),
            CoreError::CustomRule { op, input, why } => {
                write!(f, "{op}: the gradient returned for input {input} {why}")
            }
            CoreError::TooLarge { op, shape } => write!(
                f,
                "{op}: a result of shape {shape} is too large to allocate"
            ),
            CoreError::NotScalar { op, shape } => write!(
                f,
                "{op}: the output has shape {shape}; without a seed gradient it must hold exactly one value"
            ),
        }
    }
}

/// `core::error::Error` (stable since Rust 1.81) works without `std` too. A core error
/// has no underlying cause, so `source()` is `None`.
impl core::error::Error for CoreError {}

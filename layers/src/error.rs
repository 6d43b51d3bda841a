//! The layers' error type: every bad file, bad tensor and bad argument is reported as a
//! value naming what is at fault and the offending values; nothing in this crate panics on
//! bad input.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use readout_core::CoreError;

/// An error from loading or saving weights, reading a reference case, or calling a layer.
///
/// Every variant names the argument, file entry or tensor at fault and carries the
/// offending values, so that the `Display` text alone tells the user what to fix.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LayerError {
    /// An error from `readout-core` (a tensor constructor or a tape op).
    Core(CoreError),
    /// The bytes are not a valid safetensors file.
    Parse {
        /// Where the bytes came from (a path, or `"<bytes>"`).
        source: String,
        /// What the safetensors parser reported.
        reason: String,
    },
    /// A file could not be read or written.
    Io {
        /// The path.
        path: String,
        /// What the operating system reported.
        reason: String,
    },
    /// A tensor that must be present is not.
    MissingTensor {
        /// Its name.
        name: String,
    },
    /// Tensors were present that nothing asked for (the state dict of another layer or
    /// configuration, or a misspelt key).
    UnexpectedTensors {
        /// Their names, sorted.
        names: Vec<String>,
    },
    /// The same tensor name was given twice.
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A tensor has another shape than the one required.
    WrongShape {
        /// The tensor's name.
        name: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// Two sequences that must have the same length do not.
    LengthMismatch {
        /// The sequence at fault.
        name: String,
        /// The length required.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// A tensor is stored with an element type this reader does not take.
    WrongDtype {
        /// The tensor's name.
        name: String,
        /// The element type(s) accepted, in safetensors' spelling (e.g. `"F32 or F64"`).
        expected: &'static str,
        /// The element type found.
        got: String,
    },
    /// A tensor holds a NaN or an infinity.
    NonFinite {
        /// The tensor's name.
        name: String,
        /// The flat (row-major) position of the first such value.
        position: usize,
        /// The value, as stored (before any conversion to `f32`).
        value: f64,
    },
    /// A tensor holds a value outside the range it must have (a BOOL byte other than
    /// 0 or 1, for example).
    BadValue {
        /// The tensor's name.
        name: String,
        /// The flat position of the first bad value.
        position: usize,
        /// The value.
        value: i128,
        /// What it must be.
        reason: &'static str,
    },
    /// A `__metadata__` entry is missing or malformed.
    BadMetadata {
        /// The metadata key (`args`, `args.num_layers`, ...).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size is above its cap ([`crate::limits`]): refused before allocating.
    TooLarge {
        /// The argument (or the buffer it implies, naming the arguments).
        name: String,
        /// The factors whose product is too large.
        dims: Vec<usize>,
        /// The cap on that product.
        limit: usize,
    },
    /// A reference case holds no `expect.*` tensor the parity check computes.
    NothingToCompare {
        /// The case's name.
        case: String,
    },
    /// A layer or function argument has an invalid value.
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// The value given, formatted.
        value: String,
        /// What it must be.
        reason: String,
    },
}

impl LayerError {
    /// Shorthand for [`LayerError::InvalidArgument`].
    pub fn invalid_argument(
        name: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        LayerError::InvalidArgument {
            name,
            value: alloc::format!("{value}"),
            reason: reason.into(),
        }
    }
}

impl From<CoreError> for LayerError {
    fn from(e: CoreError) -> Self {
        LayerError::Core(e)
    }
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::Core(e) => write!(f, "{e}"),
            LayerError::Parse { source, reason } => {
                write!(f, "{source}: not a valid safetensors file: {reason}")
            }
            LayerError::Io { path, reason } => write!(f, "{path}: {reason}"),
            LayerError::MissingTensor { name } => write!(f, "tensor `{name}` is missing"),
            LayerError::UnexpectedTensors { names } => {
                write!(f, "unexpected tensor(s) nothing asked for: ")?;
                for (i, n) in names.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}`{n}`")?;
                }
                Ok(())
            }
            LayerError::DuplicateTensor { name } => {
                write!(f, "tensor `{name}` is given more than once")
            }
            LayerError::WrongShape {
                name,
                expected,
                got,
            } => write!(
                f,
                "tensor `{name}` has shape {got:?}, expected {expected:?}"
            ),
            LayerError::LengthMismatch {
                name,
                expected,
                got,
            } => write!(f, "`{name}` has {got} values, expected {expected}"),
            LayerError::WrongDtype {
                name,
                expected,
                got,
            } => write!(
                f,
                "tensor `{name}` has element type {got}, expected {expected}"
            ),
            LayerError::NonFinite {
                name,
                position,
                value,
            } => write!(
                f,
                "tensor `{name}` holds the non-finite value {value} at flat position {position}"
            ),
            LayerError::BadValue {
                name,
                position,
                value,
                reason,
            } => write!(
                f,
                "tensor `{name}` holds {value} at flat position {position}: {reason}"
            ),
            LayerError::BadMetadata { key, reason } => {
                write!(f, "metadata `{key}`: {reason}")
            }
            LayerError::TooLarge { name, dims, limit } => {
                write!(f, "`{name}` is too large: ")?;
                for (i, d) in dims.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " × " };
                    write!(f, "{sep}{d}")?;
                }
                write!(f, " values, above the limit of {limit}")
            }
            LayerError::NothingToCompare { case } => write!(
                f,
                "case `{case}` holds no expect.* tensor to compare (expected at least expect.out)"
            ),
            LayerError::InvalidArgument {
                name,
                value,
                reason,
            } => write!(f, "argument `{name}` = {value}: {reason}"),
        }
    }
}

/// `core::error::Error` (stable since Rust 1.81) works without `std` too. A
/// [`LayerError::Core`] has the core error as its `source()`.
impl core::error::Error for LayerError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LayerError::Core(e) => Some(e),
            _ => None,
        }
    }
}

//! The tape's ops, one family per module. Each module adds `Tape` methods that check
//! shapes, compute through `readout-kernels` and push a node, and holds the family's
//! backward rules, written in tape ops.

pub(crate) mod arith;
pub(crate) mod custom;
pub mod index;
pub(crate) mod layer_norm;
pub(crate) mod layout;
pub(crate) mod linalg;
pub(crate) mod reduce;
pub(crate) mod segment_matmul;
pub(crate) mod segment_max;
pub(crate) mod segment_softmax;
pub(crate) mod softmax;

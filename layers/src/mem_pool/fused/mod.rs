//! The fused engines: `MemPooling`'s maths written straight over slices, with no tape.
//! Each step names, in a comment, the tape op(s) of the reference path
//! ([`super::reference`]) it replaces; the tests hold both to the reference in `f64`.

pub(crate) mod backward;
pub(crate) mod forward;
pub(crate) mod kl;
pub(crate) mod pad;

//! `MemPooling`'s parameters, held in PyG's modules: the keys `k`, the 1×1 `conv` over
//! the heads (no bias) and `lin` (no bias), in PyG's `state_dict` order.
//!
//! Generic over the parameter slot (see [`crate::module`]): the layer's own
//! [`Parameter`]s, handles on a tape, or plain values for the fused engine.

use alloc::vec::Vec;

use rand::Rng;
use readout_core::Shape;

use crate::error::LayerError;
use crate::init;
use crate::module::{ChannelMix, Linear, Slots};
use crate::param::Parameter;

/// Every parameter of a `MemPooling`, in PyG's `state_dict` order: `k`,
/// `conv.weight`, `lin.weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct MemPoolParams<P> {
    /// `k [H, K, F]`: the cluster keys of every head.
    pub k: P,
    /// `conv`: `Conv2d(H, 1, kernel_size=1, bias=False)`, the head mix.
    pub conv: ChannelMix<P>,
    /// `lin`: `Linear(F, F', bias=False)`.
    pub lin: Linear<P>,
}

/// How many parameter tensors a `MemPooling` has.
const COUNT: usize = 3;

impl MemPoolParams<Parameter> {
    /// Every parameter as PyG's `reset_parameters` draws it, in its order:
    /// `k ~ U(−1, 1)`, then `conv` and `lin` with their modules' defaults.
    pub(crate) fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        heads: usize,
        num_clusters: usize,
        rng: &mut R,
    ) -> Self {
        let k = init::uniform(rng, Shape::d3(heads, num_clusters, in_channels), 1.0);
        MemPoolParams {
            k: Parameter::new("k", k),
            conv: ChannelMix::new("conv", heads, rng),
            lin: Linear::new("lin", in_channels, out_channels, false, rng),
        }
    }
}

impl<P> MemPoolParams<P> {
    /// The modules from a flat list in `state_dict` order (a [`crate::Bound`]'s
    /// handles, the values of [`crate::Parameters`]).
    ///
    /// # Errors
    /// [`LayerError::LengthMismatch`] named `params` for a list of another length.
    pub(crate) fn from_list<L>(list: L) -> Result<Self, LayerError>
    where
        L: IntoIterator<Item = P>,
        L::IntoIter: ExactSizeIterator,
    {
        let list = list.into_iter();
        let mismatch = LayerError::LengthMismatch {
            name: "params".into(),
            expected: COUNT,
            got: list.len(),
        };
        if list.len() != COUNT {
            return Err(mismatch);
        }
        let mut slots = Slots::new(list);
        let params = (|| {
            Some(MemPoolParams {
                k: slots.next()?,
                conv: ChannelMix {
                    weight: slots.next()?,
                },
                lin: Linear::from_slots(&mut slots, false)?,
            })
        })();
        params.ok_or(mismatch)
    }

    /// The flat list in `state_dict` order.
    pub(crate) fn into_list(self) -> Vec<P> {
        let mut out = Vec::with_capacity(COUNT);
        out.push(self.k);
        out.push(self.conv.weight);
        self.lin.push_slots(&mut out);
        out
    }
}

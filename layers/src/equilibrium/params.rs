//! `EquilibriumAggregation`'s parameters, held in PyG's modules: the regulariser's
//! `lamb`, the `ResNetPotential` (`Sequential(Linear, LayerNorm, Tanh)` blocks, a final
//! `Linear(→ 1)` and the `res_trans` skips) and the `MomentumOptimizer`'s `_lr`, `_mom`.
//!
//! Each struct is generic over its parameter slot (see [`crate::module`]): the layer's
//! own [`Parameter`]s, handles on a tape, or plain values for the fused engines.

use alloc::format;
use alloc::vec::Vec;

use rand::Rng;
use readout_core::{Shape, Tensor};

use crate::error::LayerError;
use crate::module::{LayerNorm, Linear, Slots};
use crate::param::Parameter;

/// PyG's `MomentumOptimizer` defaults.
const INITIAL_LR: f32 = 0.1;
const INITIAL_MOM: f32 = 0.9;

/// The layer's sizes: what its modules' shapes follow from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// `in_channels`, the width of `x`.
    pub(crate) cin: usize,
    /// `out_channels`, the width of `y`.
    pub(crate) cout: usize,
    /// The potential's hidden sizes (PyG's `num_layers`).
    pub(crate) hidden: Vec<usize>,
}

impl Sizes {
    /// The potential's input width, `[x, y]`.
    pub(crate) fn inp(&self) -> usize {
        self.cin + self.cout
    }

    /// How many parameter tensors the layer has: `lamb`, four per block, the final
    /// linear's two, two per `res_trans`, `_lr` and `_mom`.
    pub(crate) fn count(&self) -> usize {
        let l = self.hidden.len();
        1 + 4 * l + 2 + 2 * (l + 1) + 2
    }
}

/// One of PyG's `Sequential(Linear, LayerNorm, Tanh)` blocks
/// (`potential.layers.{i}.0.*`, `potential.layers.{i}.1.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Block<P> {
    /// The block's `Linear`.
    pub linear: Linear<P>,
    /// The block's `LayerNorm`.
    pub norm: LayerNorm<P>,
}

/// PyG's `ResNetPotential(in_channels + out_channels, 1, num_layers)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNetPotential<P> {
    /// `layers[0 .. L]`: one block per hidden size.
    pub blocks: Vec<Block<P>>,
    /// `layers[L]`: the final `Linear(h_L → 1)` (`Linear(in + out → 1)` without
    /// hidden layers).
    pub out: Linear<P>,
    /// `res_trans[j]`: `Linear(in + out → h_{j+1})`, the last one `→ 1`.
    pub res_trans: Vec<Linear<P>>,
}

/// PyG's `MomentumOptimizer`: the inner loop's step size `softplus(_lr)` and momentum
/// `sigmoid(_mom)` (`optimizer._lr`, `optimizer._mom`).
#[derive(Clone, Debug, PartialEq)]
pub struct MomentumOptimizer<P> {
    /// `_lr [1]`, η.
    pub lr: P,
    /// `_mom [1]`, μ.
    pub mom: P,
}

/// Every parameter of an `EquilibriumAggregation`, in PyG's `state_dict` order:
/// `lamb`, `potential.*`, `optimizer.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct EquilibriumParams<P> {
    /// `lamb [1]`, λ: the regulariser's weight is `softplus(λ)`.
    pub lamb: P,
    /// `potential`.
    pub potential: ResNetPotential<P>,
    /// `optimizer`.
    pub optimizer: MomentumOptimizer<P>,
}

fn scalar(key: &str, value: f32) -> Parameter {
    Parameter::new(key, Tensor::filled(Shape::d1(1), value))
}

impl ResNetPotential<Parameter> {
    /// The potential for inputs `[x, y]` of width `inp`, initialised as PyG's
    /// `reset(self.potential)` does: every module in registration order (blocks, final
    /// linear, `res_trans`), so the random draws come in `state_dict` order.
    pub fn new<R: Rng + ?Sized>(inp: usize, hidden: &[usize], rng: &mut R) -> Self {
        let mut prev = inp;
        let mut blocks = Vec::with_capacity(hidden.len());
        for (i, &h) in hidden.iter().enumerate() {
            blocks.push(Block {
                linear: Linear::new(&format!("potential.layers.{i}.0"), prev, h, true, rng),
                norm: LayerNorm::new(&format!("potential.layers.{i}.1"), h),
            });
            prev = h;
        }
        let l = hidden.len();
        let out = Linear::new(&format!("potential.layers.{l}"), prev, 1, true, rng);
        let res_trans = hidden
            .iter()
            .chain(core::iter::once(&1))
            .enumerate()
            .map(|(j, &h)| Linear::new(&format!("potential.res_trans.{j}"), inp, h, true, rng))
            .collect();
        ResNetPotential {
            blocks,
            out,
            res_trans,
        }
    }
}

impl<P> ResNetPotential<P> {
    /// The linear map that reads the raw input `[x, y]`: the first block's, or the final
    /// one when there is no hidden layer.
    pub(crate) fn input_linear(&self) -> &Linear<P> {
        self.blocks.first().map_or(&self.out, |b| &b.linear)
    }

    fn from_slots<I: Iterator<Item = P>>(slots: &mut Slots<I>, layers: usize) -> Option<Self> {
        let mut blocks = Vec::with_capacity(layers);
        for _ in 0..layers {
            blocks.push(Block {
                linear: Linear::from_slots(slots, true)?,
                norm: LayerNorm::from_slots(slots)?,
            });
        }
        let out = Linear::from_slots(slots, true)?;
        let res_trans = (0..=layers)
            .map(|_| Linear::from_slots(slots, true))
            .collect::<Option<_>>()?;
        Some(ResNetPotential {
            blocks,
            out,
            res_trans,
        })
    }

    fn push_slots(self, out: &mut Vec<P>) {
        for b in self.blocks {
            b.linear.push_slots(out);
            b.norm.push_slots(out);
        }
        self.out.push_slots(out);
        for r in self.res_trans {
            r.push_slots(out);
        }
    }
}

impl EquilibriumParams<Parameter> {
    /// Every parameter as PyG's `reset_parameters` sets it: `lamb` to its initial
    /// value, the potential's linears `U(−1/√fan_in, 1/√fan_in)` and LayerNorms 1 and 0,
    /// `_lr = 0.1`, `_mom = 0.9`.
    pub(crate) fn new<R: Rng + ?Sized>(sizes: &Sizes, lamb: f32, rng: &mut R) -> Self {
        EquilibriumParams {
            lamb: scalar("lamb", lamb),
            potential: ResNetPotential::new(sizes.inp(), &sizes.hidden, rng),
            optimizer: MomentumOptimizer {
                lr: scalar("optimizer._lr", INITIAL_LR),
                mom: scalar("optimizer._mom", INITIAL_MOM),
            },
        }
    }
}

impl<P> EquilibriumParams<P> {
    /// The modules from a flat list in `state_dict` order (a [`crate::Bound`]'s
    /// handles, the values of [`crate::Parameters`]).
    ///
    /// # Errors
    /// [`LayerError::LengthMismatch`] named `params` when the list does not hold
    /// exactly this configuration's parameters.
    pub(crate) fn from_list<L>(sizes: &Sizes, list: L) -> Result<Self, LayerError>
    where
        L: IntoIterator<Item = P>,
        L::IntoIter: ExactSizeIterator,
    {
        let list = list.into_iter();
        let got = list.len();
        let mismatch = LayerError::LengthMismatch {
            name: "params".into(),
            expected: sizes.count(),
            got,
        };
        if got != sizes.count() {
            return Err(mismatch);
        }
        let mut slots = Slots::new(list);
        let params = (|| {
            Some(EquilibriumParams {
                lamb: slots.next()?,
                potential: ResNetPotential::from_slots(&mut slots, sizes.hidden.len())?,
                optimizer: MomentumOptimizer {
                    lr: slots.next()?,
                    mom: slots.next()?,
                },
            })
        })();
        params.ok_or(mismatch)
    }

    /// The flat list in `state_dict` order.
    pub(crate) fn into_list(self) -> Vec<P> {
        let mut out = Vec::new();
        out.push(self.lamb);
        self.potential.push_slots(&mut out);
        out.push(self.optimizer.lr);
        out.push(self.optimizer.mom);
        out
    }
}

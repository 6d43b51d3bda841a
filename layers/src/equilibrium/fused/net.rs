//! The potential's weights laid out for the fused engines, shared by the inference
//! engine ([`super::forward`]) and the HVP engine ([`super::hvp`]).
//!
//! Both engines split every map that reads the raw input `[x, y]` (the first block's
//! linear and every `res_trans`) into its `x` and `y` columns and stack them, so that
//! one GEMM per forward gives `x·W_xᵀ + b` of every map and one per inner step gives
//! `y·W_yᵀ`. The other weights are borrowed as they are.

use alloc::vec;
use alloc::vec::Vec;

use readout_core::Real;

use super::super::params::{ResNetPotential, Sizes};

/// A linear map's weights, borrowed: `weight [out, in]` row-major, `bias [out]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinearRef<'a, T> {
    pub(crate) weight: &'a [T],
    pub(crate) bias: &'a [T],
}

/// A LayerNorm's affine weights, borrowed: `weight [h]`, `bias [h]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormRef<'a, T> {
    pub(crate) weight: &'a [T],
    pub(crate) bias: &'a [T],
}

/// PyG's `ResNetPotential`, laid out for the fused engines: the input maps split and
/// stacked (copied), the other weights borrowed.
pub(crate) struct PotentialNet<'p, T> {
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    /// The hidden sizes `h_1 .. h_L`.
    pub(crate) hidden: Vec<usize>,
    /// Total width `H` of the maps that read the raw input.
    pub(crate) width: usize,
    /// Column of `res_trans[j]` in `A = [x, y]·W_inᵀ + b_in` (the first block's map
    /// is at 0).
    pub(crate) res_off: Vec<usize>,
    /// `W_x` of every input map stacked: `[H, cin]`.
    pub(crate) wx: Vec<T>,
    /// `W_y` stacked: `[H, cout]`.
    pub(crate) wy: Vec<T>,
    /// Their biases: `[H]`.
    pub(crate) b_in: Vec<T>,
    /// Linear `i ≥ 1` of the hidden blocks, `[h_i, h_{i−1}]`, at index `i` (index 0,
    /// the first block's map, is in the stacked maps; its entry is empty).
    pub(crate) lin: Vec<LinearRef<'p, T>>,
    /// LayerNorm weight and bias of block `i`.
    pub(crate) norms: Vec<NormRef<'p, T>>,
    /// The final `Linear(h_L → 1)`'s weight `[h_L]`: empty without hidden blocks (then
    /// the final map reads the raw input and is stacked). Its bias does not move
    /// `∇_y F`, so no engine reads it.
    pub(crate) w_final: &'p [T],
}

impl<'p, T: Real> PotentialNet<'p, T> {
    /// The layout of `pot`, a potential of the configuration `sizes`.
    pub(crate) fn new<V: AsRef<[T]>>(sizes: &Sizes, pot: &'p ResNetPotential<V>) -> Self {
        let (cin, cout) = (sizes.cin, sizes.cout);
        let c = cin + cout;
        let bias = |b: &'p Option<V>| b.as_ref().map_or(&[][..], AsRef::as_ref);
        // The input maps, in column order: the first layer's, then every res_trans.
        let maps = core::iter::once(pot.input_linear()).chain(&pot.res_trans);
        let (mut wx, mut wy, mut b_in, mut offs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for map in maps {
            offs.push(b_in.len());
            for row in map.weight.as_ref().chunks_exact(c) {
                wx.extend_from_slice(&row[..cin]);
                wy.extend_from_slice(&row[cin..]);
            }
            b_in.extend_from_slice(bias(&map.bias));
        }
        let empty = LinearRef {
            weight: &[][..],
            bias: &[][..],
        };
        let mut lin = vec![empty];
        for block in pot.blocks.iter().skip(1) {
            lin.push(LinearRef {
                weight: block.linear.weight.as_ref(),
                bias: bias(&block.linear.bias),
            });
        }
        let norms = pot
            .blocks
            .iter()
            .map(|b| NormRef {
                weight: b.norm.weight.as_ref(),
                bias: b.norm.bias.as_ref(),
            })
            .collect();
        let w_final = if pot.blocks.is_empty() {
            &[]
        } else {
            pot.out.weight.as_ref()
        };
        PotentialNet {
            cin,
            cout,
            hidden: sizes.hidden.clone(),
            width: b_in.len(),
            res_off: offs[1..].to_vec(),
            wx,
            wy,
            b_in,
            lin,
            norms,
            w_final,
        }
    }
}

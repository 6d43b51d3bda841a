//! Every input check of `EquilibriumAggregation`, in one place: the constructor's
//! arguments and the forward's `x` and segments. Sizes are checked against
//! [`limits`](crate::limits) before anything is allocated.

use alloc::format;

use super::params::Sizes;
use crate::error::LayerError;
use crate::limits;
use crate::segments::{Layout, Segments};

/// Checks the constructor's arguments and returns the layer's sizes.
///
/// # Errors
/// As [`super::EquilibriumAggregation::new`].
pub(crate) fn new_args(
    in_channels: usize,
    out_channels: usize,
    num_layers: &[usize],
    grad_iter: usize,
    lamb: f32,
) -> Result<Sizes, LayerError> {
    if in_channels == 0 {
        return Err(LayerError::invalid_argument(
            "in_channels",
            0,
            "must be ≥ 1",
        ));
    }
    if out_channels == 0 {
        return Err(LayerError::invalid_argument(
            "out_channels",
            0,
            "must be ≥ 1",
        ));
    }
    if let Some(i) = num_layers.iter().position(|&h| h == 0) {
        return Err(LayerError::invalid_argument(
            "num_layers",
            format!("{num_layers:?}"),
            format!("hidden size {i} is 0"),
        ));
    }
    if !lamb.is_finite() {
        return Err(LayerError::invalid_argument("lamb", lamb, "must be finite"));
    }
    if grad_iter > limits::MAX_GRAD_ITER {
        return Err(LayerError::invalid_argument(
            "grad_iter",
            grad_iter,
            format!(
                "must be ≤ {} (limits::MAX_GRAD_ITER)",
                limits::MAX_GRAD_ITER
            ),
        ));
    }
    let inp = limits::elements(
        "in_channels + out_channels",
        &[in_channels.saturating_add(out_channels)],
    )?;
    // Every weight against the element cap, and all of them against the parameter cap,
    // before the parameters are allocated (the biases and LayerNorms are no larger).
    let mut total = 3usize; // lamb, _lr, _mom
    let mut linear = |key: &str, fan_in: usize, fan_out: usize| {
        let n = limits::elements(key, &[fan_out, fan_in])?;
        total = total.saturating_add(n).saturating_add(fan_out);
        Ok::<(), LayerError>(())
    };
    let mut prev = inp;
    for (i, &h) in num_layers.iter().enumerate() {
        linear(&format!("potential.layers.{i}.0.weight"), prev, h)?;
        prev = h;
    }
    let l = num_layers.len();
    linear(&format!("potential.layers.{l}.weight"), prev, 1)?;
    for (j, &h) in num_layers.iter().chain(core::iter::once(&1)).enumerate() {
        linear(&format!("potential.res_trans.{j}.weight"), inp, h)?;
    }
    let norms = num_layers
        .iter()
        .fold(0usize, |a, &h| a.saturating_add(h.saturating_mul(2)));
    limits::check(
        "parameters",
        &[total.saturating_add(norms)],
        limits::MAX_PARAMETERS,
    )?;
    Ok(Sizes {
        cin: in_channels,
        cout: out_channels,
        hidden: num_layers.to_vec(),
    })
}

/// An upper bound on the widest row a forward allocates per element or per set: the
/// inputs `[x, y]`, the maps that read them (the first block and every `res_trans`,
/// whose widths add up in the fused engine) and the hidden layers.
fn row_width(sizes: &Sizes) -> usize {
    let first = sizes.hidden.first().copied().unwrap_or(1);
    let hidden: usize = sizes
        .hidden
        .iter()
        .fold(0usize, |a, &h| a.saturating_add(h));
    (sizes.cin.saturating_add(sizes.cout))
        .saturating_add(first)
        .saturating_add(hidden)
        .saturating_add(1)
}

/// Checks `x`'s shape `xs` and the segments, and returns the layout of the sets.
///
/// # Errors
/// As [`super::EquilibriumAggregation::forward_on`].
pub(crate) fn input(
    sizes: &Sizes,
    xs: &[usize],
    segments: Segments<'_>,
    dim_size: Option<usize>,
) -> Result<Layout, LayerError> {
    if xs.len() != 2 || xs[1] != sizes.cin {
        return Err(LayerError::WrongShape {
            name: "x".into(),
            expected: alloc::vec![xs.first().copied().unwrap_or(0), sizes.cin],
            got: xs.to_vec(),
        });
    }
    let width = row_width(sizes);
    limits::elements("x rows × row width", &[xs[0], width])?;
    Layout::new(segments, xs[0], dim_size, width)
}

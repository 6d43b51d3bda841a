//! Which element belongs to which set: an unsorted `index`, CSR `ptr`, or one set.

use alloc::vec;
use alloc::vec::Vec;

use readout_core::{Real, Tape, Var};

use crate::error::LayerError;
use crate::limits;

/// How the `N` elements of `x` are grouped into sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segments<'a> {
    /// All elements form one set (PyG's `index = None`).
    One,
    /// `index[i]` is the set of element `i`, in any order (PyG's `index`).
    Index(&'a [i64]),
    /// Set `s` holds elements `ptr[s] .. ptr[s+1]` (CSR). PyG's
    /// `EquilibriumAggregation` refuses `ptr`; here it gives the same result as the
    /// equivalent `index`.
    Ptr(&'a [i64]),
}

/// A validated grouping of `n` elements into `dim_size` sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Unsorted set index, one entry per element.
    Index { index: Vec<usize>, dim_size: usize },
    /// CSR boundaries, `dim_size + 1` entries.
    Ptr { ptr: Vec<usize> },
}

fn to_usize(name: &'static str, v: &[i64]) -> Result<Vec<usize>, LayerError> {
    v.iter()
        .enumerate()
        .map(|(i, &e)| {
            usize::try_from(e).map_err(|_| {
                LayerError::invalid_argument(
                    name,
                    alloc::format!("{e} at position {i}"),
                    "entries must be ≥ 0",
                )
            })
        })
        .collect()
}

impl Layout {
    /// Checks `segments` against `n` elements and the requested `dim_size`.
    ///
    /// `dim_size` defaults to `max(index) + 1` (0 for an empty index), to
    /// `ptr.len() − 1`, or to 1 for one set; a larger one adds empty sets at the end.
    /// The sets times `row_width` (the widest per-set row the caller allocates) must
    /// stay within [`crate::limits::MAX_ELEMENTS`]; that is checked before anything is
    /// allocated.
    pub(crate) fn new(
        segments: Segments<'_>,
        n: usize,
        dim_size: Option<usize>,
        row_width: usize,
    ) -> Result<Layout, LayerError> {
        let cap = |name: &str, sets: usize| limits::elements(name, &[sets, row_width]);
        match segments {
            Segments::Index(index) => {
                if index.len() != n {
                    return Err(LayerError::LengthMismatch {
                        name: "index".into(),
                        expected: n,
                        got: index.len(),
                    });
                }
                let index = to_usize("index", index)?;
                let needed = index.iter().max().map_or(0, |&m| m.saturating_add(1));
                cap("max(index) + 1 sets × row width", needed)?;
                let dim_size = dim_size.unwrap_or(needed);
                cap("dim_size × row width", dim_size)?;
                if dim_size < needed {
                    return Err(LayerError::invalid_argument(
                        "dim_size",
                        dim_size,
                        alloc::format!("is smaller than max(index) + 1 = {needed}"),
                    ));
                }
                Ok(Layout::Index { index, dim_size })
            }
            Segments::Ptr(ptr) => {
                let mut ptr = to_usize("ptr", ptr)?;
                if let Some(&last) = ptr.last()
                    && last != n
                {
                    return Err(LayerError::invalid_argument(
                        "ptr",
                        alloc::format!("{last} at position {}", ptr.len() - 1),
                        alloc::format!("the last entry must be N = {n}, the number of rows of x"),
                    ));
                }
                readout_core::check_ptr("EquilibriumAggregation", &ptr, n)?;
                let sets = ptr.len() - 1;
                let dim_size = dim_size.unwrap_or(sets);
                cap("dim_size × row width", dim_size)?;
                if dim_size < sets {
                    return Err(LayerError::invalid_argument(
                        "dim_size",
                        dim_size,
                        alloc::format!("is smaller than the {sets} sets that ptr describes"),
                    ));
                }
                ptr.resize(dim_size + 1, n);
                Ok(Layout::Ptr { ptr })
            }
            Segments::One => {
                let dim_size = dim_size.unwrap_or(1);
                cap("dim_size × row width", dim_size)?;
                if dim_size == 0 && n > 0 {
                    return Err(LayerError::invalid_argument(
                        "dim_size",
                        0,
                        "must be ≥ 1 when x has elements and there is one set",
                    ));
                }
                let mut ptr = vec![0, n];
                ptr.resize(dim_size + 1, n);
                ptr.truncate(dim_size + 1);
                Ok(Layout::Ptr { ptr })
            }
        }
    }

    /// The number of sets.
    pub(crate) fn dim_size(&self) -> usize {
        match self {
            Layout::Index { dim_size, .. } => *dim_size,
            Layout::Ptr { ptr } => ptr.len() - 1,
        }
    }

    /// Row `s` of `per_set` for every element of set `s`: `[S, C] → [N, C]`.
    pub(crate) fn spread<T: Real>(
        &self,
        tape: &mut Tape<T>,
        per_set: Var,
    ) -> Result<Var, LayerError> {
        Ok(match self {
            Layout::Index { index, .. } => tape.gather_rows(per_set, index)?,
            Layout::Ptr { ptr } => tape.repeat_segments(per_set, ptr)?,
        })
    }

    /// Mean over each set's elements, zero for empty sets: `[N, C] → [S, C]`.
    pub(crate) fn mean<T: Real>(
        &self,
        tape: &mut Tape<T>,
        per_element: Var,
    ) -> Result<Var, LayerError> {
        Ok(match self {
            Layout::Index { index, dim_size } => {
                tape.scatter_mean(per_element, index, *dim_size)?
            }
            Layout::Ptr { ptr } => tape.segment_mean(per_element, ptr)?,
        })
    }
}

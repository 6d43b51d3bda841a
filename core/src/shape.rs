//! Tensor shapes: rank 0 to 3, row-major.

use core::fmt;

/// The largest rank a [`crate::Tensor`] can have.
pub const MAX_RANK: usize = 3;

/// A tensor's dimensions, rank 0 (a scalar) to 3.
///
/// The last dimension is the *columns*; all leading dimensions together are the *rows*
/// of the row-major matrix view that most ops work on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

impl Shape {
    /// The shape of a scalar (rank 0, one element).
    pub const SCALAR: Shape = Shape {
        dims: [0; MAX_RANK],
        rank: 0,
    };

    /// A shape from its dimensions; `None` when there are more than [`MAX_RANK`].
    pub fn new(dims: &[usize]) -> Option<Shape> {
        if dims.len() > MAX_RANK {
            return None;
        }
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Some(Shape {
            dims: d,
            rank: dims.len() as u8,
        })
    }

    /// A rank-1 shape.
    pub const fn d1(n: usize) -> Shape {
        Shape {
            dims: [n, 0, 0],
            rank: 1,
        }
    }

    /// A rank-2 shape.
    pub const fn d2(rows: usize, cols: usize) -> Shape {
        Shape {
            dims: [rows, cols, 0],
            rank: 2,
        }
    }

    /// A rank-3 shape.
    pub const fn d3(a: usize, b: usize, c: usize) -> Shape {
        Shape {
            dims: [a, b, c],
            rank: 3,
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// The number of elements (1 for a scalar). Saturates instead of overflowing.
    pub fn numel(&self) -> usize {
        self.dims().iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// The number of elements, or `None` when it overflows `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        self.dims()
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Size of the last dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }

    /// Product of the leading dimensions (1 for rank 0 and 1).
    pub fn rows(&self) -> usize {
        let r = self.rank();
        self.dims[..r.saturating_sub(1)]
            .iter()
            .fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// The shape without its last dimension (a scalar for rank 0 and 1).
    pub fn without_last(&self) -> Shape {
        let r = self.rank();
        Shape {
            dims: self.dims,
            rank: r.saturating_sub(1) as u8,
        }
        .normalized()
    }

    /// The same shape with its last dimension replaced.
    pub fn with_last(&self, last: usize) -> Shape {
        let mut s = *self;
        if s.rank == 0 {
            s.rank = 1;
        }
        s.dims[s.rank() - 1] = last;
        s
    }

    /// The same shape with its first dimension replaced (rank ≥ 1).
    pub(crate) fn with_first(&self, first: usize) -> Shape {
        let mut s = *self;
        if s.rank == 0 {
            s.rank = 1;
        }
        s.dims[0] = first;
        s
    }

    /// The first dimension, or 1 for a scalar.
    pub(crate) fn first(&self) -> usize {
        if self.rank == 0 { 1 } else { self.dims[0] }
    }

    /// Zeroes the unused dimensions so that derived equality is shape equality.
    fn normalized(mut self) -> Shape {
        for d in self.dims.iter_mut().skip(self.rank as usize) {
            *d = 0;
        }
        self
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

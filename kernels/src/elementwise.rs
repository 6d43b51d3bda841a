//! Elementwise kernels: unary maps and broadcasting binary arithmetic.

use crate::Real;

/// A unary elementwise function. Parameters are carried in the variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary<T> {
    /// `-x`
    Neg,
    /// `x²`
    Square,
    /// `√x` (NaN below 0)
    Sqrt,
    /// `1 / x`
    Recip,
    /// `eˣ`
    Exp,
    /// `ln x` (NaN below 0, `-inf` at 0)
    Ln,
    /// `tanh x`
    Tanh,
    /// `1 / (1 + e⁻ˣ)`
    Sigmoid,
    /// PyTorch's softplus with beta 1 and threshold 20: `x` above 20, else
    /// `max(x, 0) + ln(1 + e^(−|x|))`.
    Softplus,
    /// `x^p`
    Powf(T),
    /// `c·x`
    Scale(T),
    /// `x + c`
    AddScalar(T),
    /// `max(x, c)`; NaN stays NaN.
    ClampMin(T),
    /// The indicator `x ≥ c` as 1 or 0 (the derivative mask of [`Unary::ClampMin`]).
    StepGe(T),
    /// The Student-t kernel `(1 + x/τ)^(−(1+τ)/2)` of MemPooling, for `x ≥ 0`.
    StudentT(T),
}

impl<T: Real> Unary<T> {
    /// Applies the function to one value: the scalar reference definition.
    pub fn apply(self, x: T) -> T {
        let half = T::from_f64(0.5);
        match self {
            Unary::Neg => -x,
            Unary::Square => x * x,
            Unary::Sqrt => x.sqrt(),
            Unary::Recip => T::ONE / x,
            Unary::Exp => x.exp(),
            Unary::Ln => x.ln(),
            Unary::Tanh => x.tanh(),
            Unary::Sigmoid => {
                if x >= T::ZERO {
                    T::ONE / (T::ONE + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (T::ONE + e)
                }
            }
            Unary::Softplus => {
                if x > T::from_f64(20.0) || x.is_nan() {
                    x
                } else {
                    let pos = if x > T::ZERO { x } else { T::ZERO };
                    pos + (-x.abs()).exp().ln_1p()
                }
            }
            Unary::Powf(p) => x.powf(p),
            Unary::Scale(c) => c * x,
            Unary::AddScalar(c) => x + c,
            Unary::ClampMin(c) => {
                if x.is_nan() || x >= c {
                    x
                } else {
                    c
                }
            }
            Unary::StepGe(c) => {
                if x >= c {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            Unary::StudentT(tau) => (T::ONE + x / tau).powf(-(T::ONE + tau) * half),
        }
    }
}

/// `out[i] = op(x[i])`.
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn unary<T: Real>(op: Unary<T>, x: &[T], out: &mut [T]) {
    assert_eq!(x.len(), out.len(), "unary: x and out differ in length");
    T::unary_hook(op, x, out)
}

/// `x[i] = op(x[i])` in place.
pub fn unary_inplace<T: Real>(op: Unary<T>, x: &mut [T]) {
    for v in x.iter_mut() {
        *v = op.apply(*v);
    }
}

/// A binary arithmetic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a · b`
    Mul,
    /// `a / b`
    Div,
}

impl Binary {
    /// Applies the operation to two values.
    #[inline]
    pub fn apply<T: Real>(self, a: T, b: T) -> T {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
        }
    }
}

/// How the right operand `b` of a binary kernel is broadcast over `a`, seen as a
/// row-major `[rows, cols]` matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broadcast {
    /// `b` has `a`'s shape.
    Same,
    /// `b` is one value.
    Scalar,
    /// `b` has `cols` values, applied to every row.
    Row,
    /// `b` has `rows` values, one per row.
    Col,
}

impl Broadcast {
    /// The number of values `b` must hold for an `a` of `rows × cols`.
    pub fn b_len(self, rows: usize, cols: usize) -> usize {
        match self {
            Broadcast::Same => rows * cols,
            Broadcast::Scalar => 1,
            Broadcast::Row => cols,
            Broadcast::Col => rows,
        }
    }
}

/// `out = a ∘ b` with `b` broadcast as `bcast` says; `a` and `out` are `[rows, cols]`
/// with `rows = a.len() / cols`.
///
/// # Panics
/// If the lengths do not fit (`cols` must divide `a.len()` unless `a` is empty).
pub fn binary<T: Real>(op: Binary, a: &[T], b: &[T], bcast: Broadcast, cols: usize, out: &mut [T]) {
    assert_eq!(a.len(), out.len(), "binary: a and out differ in length");
    if a.is_empty() {
        return;
    }
    assert!(
        cols > 0 && a.len() % cols == 0,
        "binary: cols {} does not divide {}",
        cols,
        a.len()
    );
    let rows = a.len() / cols;
    assert_eq!(
        b.len(),
        bcast.b_len(rows, cols),
        "binary: b has the wrong length for {bcast:?}"
    );
    match bcast {
        Broadcast::Same => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = op.apply(x, y);
            }
        }
        Broadcast::Scalar => {
            let y = b[0];
            for (o, &x) in out.iter_mut().zip(a) {
                *o = op.apply(x, y);
            }
        }
        Broadcast::Row => {
            for (orow, arow) in out.chunks_exact_mut(cols).zip(a.chunks_exact(cols)) {
                for ((o, &x), &y) in orow.iter_mut().zip(arow).zip(b) {
                    *o = op.apply(x, y);
                }
            }
        }
        Broadcast::Col => {
            for ((orow, arow), &y) in out.chunks_exact_mut(cols).zip(a.chunks_exact(cols)).zip(b) {
                for (o, &x) in orow.iter_mut().zip(arow) {
                    *o = op.apply(x, y);
                }
            }
        }
    }
}

/// `y += alpha · x`.
///
/// # Panics
/// If `x` and `y` differ in length.
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "axpy: x and y differ in length");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Scalar reference implementations of the accelerated elementwise kernels.
pub mod reference {
    use super::Unary;
    use crate::Real;

    /// `out[i] = op(x[i])`, one value at a time.
    pub fn unary<T: Real>(op: Unary<T>, x: &[T], out: &mut [T]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = op.apply(v);
        }
    }
}

//! Elementwise arithmetic: broadcasting `add` / `sub` / `mul` / `div`, and unary
//! functions (`neg`, `scale`, `square`, `sqrt`, `powf`, `exp`, `ln`, `tanh`,
//! `sigmoid`, `softplus`, `clamp_min`, ...).

use alloc::sync::Arc;

use readout_kernels::elementwise::{Binary, Broadcast, Unary, binary, unary};

use crate::op::{Contributions, Op};
use crate::tape::Parents;
use crate::{CoreError, Real, Shape, Tape, Tensor, Var};

/// How `b` broadcasts over `a` (NumPy's rules, restricted to the cases the layers use):
/// same shape; one value; a row (`[C]`, `[1, C]`, `[1, 1, C]`) applied to every row;
/// a column (`a`'s shape with last dimension 1) applied to every column.
fn infer_broadcast(a: Shape, b: Shape) -> Option<Broadcast> {
    if a == b {
        return Some(Broadcast::Same);
    }
    if b.numel() == 1 && b.rank() <= a.rank().max(1) {
        return Some(Broadcast::Scalar);
    }
    let (ad, bd) = (a.dims(), b.dims());
    if !bd.is_empty() && bd.len() <= ad.len() {
        let (lead, last) = bd.split_at(bd.len() - 1);
        if last[0] == a.cols() && lead.iter().all(|&d| d == 1) {
            return Some(Broadcast::Row);
        }
        if bd.len() == ad.len() && last[0] == 1 && lead == &ad[..ad.len() - 1] {
            return Some(Broadcast::Col);
        }
    }
    None
}

impl<T: Real> Tape<T> {
    /// `a + b`, with `b` broadcast over `a` (same shape, one value, a row, or a column
    /// of shape `[.., 1]`).
    ///
    /// # Errors
    /// [`CoreError::ShapeMismatch`] if `b` does not broadcast to `a`.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var, CoreError> {
        self.binary_op("add", Binary::Add, a, b)
    }

    /// `a − b`, broadcasting as [`Tape::add`].
    ///
    /// # Errors
    /// [`CoreError::ShapeMismatch`] if `b` does not broadcast to `a`.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var, CoreError> {
        self.binary_op("sub", Binary::Sub, a, b)
    }

    /// `a · b` elementwise, broadcasting as [`Tape::add`].
    ///
    /// # Errors
    /// [`CoreError::ShapeMismatch`] if `b` does not broadcast to `a`.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var, CoreError> {
        self.binary_op("mul", Binary::Mul, a, b)
    }

    /// `a / b` elementwise, broadcasting as [`Tape::add`].
    ///
    /// # Errors
    /// [`CoreError::ShapeMismatch`] if `b` does not broadcast to `a`.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var, CoreError> {
        self.binary_op("div", Binary::Div, a, b)
    }

    /// `x · mask` for a constant `mask` of `x`'s shape (or broadcastable to it): the
    /// gradient is masked the same way and nothing flows into the mask.
    ///
    /// # Errors
    /// [`CoreError::ShapeMismatch`] if the mask does not broadcast to `x`.
    pub fn mask_mul(&mut self, x: Var, mask: Tensor<T>) -> Result<Var, CoreError> {
        let m = self.constant(mask);
        self.binary_op("mask_mul", Binary::Mul, x, m)
    }

    fn binary_op(
        &mut self,
        name: &'static str,
        op: Binary,
        a: Var,
        b: Var,
    ) -> Result<Var, CoreError> {
        let sa = self.check(name, a)?.dims();
        let sb = self.check(name, b)?.dims();
        let bcast = infer_broadcast(sa, sb).ok_or(CoreError::ShapeMismatch {
            op: name,
            arg: "b",
            got: sb,
            other: sa,
            why: "b must have a's shape, one value, a's last dimension (a row), or a's shape with last dimension 1 (a column)",
        })?;
        Ok(self.binary_bc(op, bcast, a, b))
    }

    /// `a ∘ b` with an explicit broadcast; the caller guarantees the lengths fit.
    pub(crate) fn binary_bc(&mut self, op: Binary, bcast: Broadcast, a: Var, b: Var) -> Var {
        let sa = self.val(a).dims();
        let mut out = self.buffer_overwritten(sa.numel());
        binary(
            op,
            self.val(a).data(),
            self.val(b).data(),
            bcast,
            sa.cols(),
            &mut out,
        );
        self.push(Op::Binary { op, bcast }, &[a, b], Tensor::raw(sa, out))
    }

    /// Applies a unary function.
    fn unary_op(&mut self, name: &'static str, u: Unary<T>, x: Var) -> Result<Var, CoreError> {
        let t = self.check(name, x)?;
        let shape = t.dims();
        let mut out = self.buffer_overwritten(shape.numel());
        unary(u, t.data(), &mut out);
        Ok(self.push(Op::Unary(u), &[x], Tensor::raw(shape, out)))
    }

    /// `−x`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape (likewise for every unary op).
    pub fn neg(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("neg", Unary::Neg, x)
    }

    /// `c · x` for a constant `c`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn scale(&mut self, x: Var, c: T) -> Result<Var, CoreError> {
        self.unary_op("scale", Unary::Scale(c), x)
    }

    /// `x + c` for a constant `c`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn add_scalar(&mut self, x: Var, c: T) -> Result<Var, CoreError> {
        self.unary_op("add_scalar", Unary::AddScalar(c), x)
    }

    /// `x²`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn square(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("square", Unary::Square, x)
    }

    /// `√x`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn sqrt(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("sqrt", Unary::Sqrt, x)
    }

    /// `x^p` for a constant exponent `p`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn powf(&mut self, x: Var, p: T) -> Result<Var, CoreError> {
        self.unary_op("powf", Unary::Powf(p), x)
    }

    /// `1 / x`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn recip(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("recip", Unary::Recip, x)
    }

    /// `eˣ`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn exp(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("exp", Unary::Exp, x)
    }

    /// `ln x`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn ln(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("ln", Unary::Ln, x)
    }

    /// `tanh x`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn tanh(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("tanh", Unary::Tanh, x)
    }

    /// `1 / (1 + e⁻ˣ)`.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("sigmoid", Unary::Sigmoid, x)
    }

    /// PyTorch's `softplus` (beta 1, threshold 20): `ln(1 + eˣ)`, and `x` above 20.
    /// Its derivative is `sigmoid(x)` everywhere (PyTorch uses exactly 1 above the
    /// threshold; the two differ by less than `2.1e-9`).
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn softplus(&mut self, x: Var) -> Result<Var, CoreError> {
        self.unary_op("softplus", Unary::Softplus, x)
    }

    /// `max(x, c)` for a constant `c`; the gradient passes where `x ≥ c`, as in PyTorch.
    ///
    /// # Errors
    /// [`CoreError::UnknownVar`] if `x` is not on this tape.
    pub fn clamp_min(&mut self, x: Var, c: T) -> Result<Var, CoreError> {
        self.unary_op("clamp_min", Unary::ClampMin(c), x)
    }

    /// MemPooling's Student-t kernel `(1 + x/τ)^(−(1+τ)/2)` for distances `x ≥ 0`.
    ///
    /// # Errors
    /// [`CoreError::InvalidValue`] unless `tau` is finite and positive.
    pub fn student_t(&mut self, x: Var, tau: T) -> Result<Var, CoreError> {
        if !(tau > T::ZERO && tau.is_finite()) {
            return Err(CoreError::InvalidValue {
                op: "student_t",
                arg: "tau",
                value: tau.to_f64(),
                why: "must be finite and > 0",
            });
        }
        self.unary_op("student_t", Unary::StudentT(tau), x)
    }

    /// `x` where `mask` is set and 0 elsewhere; `mask` has one entry per element of `x`.
    /// Its own adjoint.
    pub(crate) fn select(&mut self, x: Var, mask: Arc<[bool]>) -> Var {
        let t = self.val(x);
        let shape = t.dims();
        debug_assert_eq!(mask.len(), t.numel());
        let out = t
            .data()
            .iter()
            .zip(mask.iter())
            .map(|(&v, &m)| if m { v } else { T::ZERO })
            .collect();
        self.push(Op::Select(mask), &[x], Tensor::raw(shape, out))
    }

    /// Elementwise unary op by kernel code (for rules that already know it applies).
    pub(crate) fn map(&mut self, u: Unary<T>, x: Var) -> Var {
        let t = self.val(x);
        let shape = t.dims();
        let mut out = self.buffer_overwritten(shape.numel());
        unary(u, t.data(), &mut out);
        self.push(Op::Unary(u), &[x], Tensor::raw(shape, out))
    }
}

/// Reduces a gradient of `a`'s shape to the shape of the broadcast operand `b`.
fn reduce_to<T: Real>(
    tape: &mut Tape<T>,
    g: Var,
    bcast: Broadcast,
    b: Var,
) -> Result<Var, CoreError> {
    let b_shape = tape.val(b).dims();
    let r = match bcast {
        Broadcast::Same => return Ok(g),
        Broadcast::Scalar => tape.sum(g)?,
        Broadcast::Row => tape.sum_cols(g)?,
        Broadcast::Col => tape.sum_rows(g)?,
    };
    tape.reshape(r, b_shape.dims())
}

pub(crate) fn binary_backward<T: Real>(
    tape: &mut Tape<T>,
    y: Var,
    ps: &Parents,
    op: Binary,
    bcast: Broadcast,
    needs: [bool; 3],
    g: Var,
) -> Result<Contributions, CoreError> {
    let (a, b) = (ps.at(0), ps.at(1));
    let (da, db) = match op {
        Binary::Add => {
            let db = if needs[1] {
                Some(reduce_to(tape, g, bcast, b)?)
            } else {
                None
            };
            (Some(g), db)
        }
        Binary::Sub => {
            let db = if needs[1] {
                let r = reduce_to(tape, g, bcast, b)?;
                Some(tape.neg(r)?)
            } else {
                None
            };
            (Some(g), db)
        }
        Binary::Mul => {
            let da = if needs[0] {
                Some(tape.binary_bc(Binary::Mul, bcast, g, b))
            } else {
                None
            };
            let db = if needs[1] {
                let ga = tape.binary_bc(Binary::Mul, Broadcast::Same, g, a);
                Some(reduce_to(tape, ga, bcast, b)?)
            } else {
                None
            };
            (da, db)
        }
        Binary::Div => {
            let da = if needs[0] {
                Some(tape.binary_bc(Binary::Div, bcast, g, b))
            } else {
                None
            };
            // d(a/b)/db = −(a/b)/b = −y/b
            let db = if needs[1] {
                let gy = tape.binary_bc(Binary::Mul, Broadcast::Same, g, y);
                let gyb = tape.binary_bc(Binary::Div, bcast, gy, b);
                let r = reduce_to(tape, gyb, bcast, b)?;
                Some(tape.neg(r)?)
            } else {
                None
            };
            (da, db)
        }
    };
    Ok([if needs[0] { da } else { None }, db, None])
}

/// A zero constant of `x`'s shape: the gradient through a constant function, zero even
/// where the incoming gradient is infinite or NaN (as PyTorch's `zeros_like`).
fn zeros_like<T: Real>(tape: &mut Tape<T>, x: Var) -> Var {
    let shape = tape.val(x).dims();
    tape.constant(Tensor::filled(shape, T::ZERO))
}

/// The derivative of `y = f(x)` times `g`, written in tape ops so it can be recorded.
pub(crate) fn unary_backward<T: Real>(
    tape: &mut Tape<T>,
    y: Var,
    x: Var,
    u: Unary<T>,
    g: Var,
) -> Result<Var, CoreError> {
    let same =
        |tape: &mut Tape<T>, a: Var, b: Var| tape.binary_bc(Binary::Mul, Broadcast::Same, a, b);
    let one = T::ONE;
    Ok(match u {
        Unary::Neg => tape.map(Unary::Neg, g),
        Unary::Scale(c) => tape.map(Unary::Scale(c), g),
        Unary::AddScalar(_) => g,
        // 2·x·g
        Unary::Square => {
            let gx = same(tape, g, x);
            tape.map(Unary::Scale(T::from_f64(2.0)), gx)
        }
        // g / (2·y)
        Unary::Sqrt => {
            let y2 = tape.map(Unary::Scale(T::from_f64(2.0)), y);
            tape.binary_bc(Binary::Div, Broadcast::Same, g, y2)
        }
        // x⁰ is constant: zero, as in PyTorch (0·x^(−1) would be NaN at x = 0, which
        // the second derivative of x¹ and the third of x² reach).
        Unary::Powf(p) if p == T::ZERO => zeros_like(tape, x),
        // p·x^(p−1)·g
        Unary::Powf(p) => {
            let xp = tape.map(Unary::Powf(p - one), x);
            let d = tape.map(Unary::Scale(p), xp);
            same(tape, g, d)
        }
        // −g·y²
        Unary::Recip => {
            let y2 = tape.map(Unary::Square, y);
            let gy2 = same(tape, g, y2);
            tape.map(Unary::Neg, gy2)
        }
        Unary::Exp => same(tape, g, y),
        Unary::Ln => tape.binary_bc(Binary::Div, Broadcast::Same, g, x),
        // g·(1 − y²)
        Unary::Tanh => {
            let y2 = tape.map(Unary::Square, y);
            let d = tape.map(Unary::Scale(-one), y2);
            let d = tape.map(Unary::AddScalar(one), d);
            same(tape, g, d)
        }
        // g·y·(1 − y)
        Unary::Sigmoid => {
            let omy = tape.map(Unary::Scale(-one), y);
            let omy = tape.map(Unary::AddScalar(one), omy);
            let d = same(tape, y, omy);
            same(tape, g, d)
        }
        // g·sigmoid(x)
        Unary::Softplus => {
            let s = tape.map(Unary::Sigmoid, x);
            same(tape, g, s)
        }
        // g where x ≥ c, else 0 — selected, not multiplied by a 0/1 mask, so that an
        // infinite incoming gradient (`sqrt(clamp_min(x, 0))` below 0) gives 0 and not
        // NaN, as PyTorch's `where(x >= c, g, 0)`.
        Unary::ClampMin(c) => {
            let mask: Arc<[bool]> = tape.val(x).data().iter().map(|&v| v >= c).collect();
            tape.select(g, mask)
        }
        // A step function: zero almost everywhere.
        Unary::StepGe(_) => zeros_like(tape, x),
        // d/dx (1 + x/τ)^p = p/τ · (1 + x/τ)^(p−1) = p/τ · y / (1 + x/τ), p = −(1+τ)/2:
        // written with the output `y` instead of a second power, which would cost a
        // scalar `powf` per element (there is no SIMD `powf`).
        Unary::StudentT(tau) => {
            let half = T::from_f64(0.5);
            let base = tape.map(Unary::Scale(one / tau), x);
            let base = tape.map(Unary::AddScalar(one), base);
            let y_over_base = tape.binary_bc(Binary::Div, Broadcast::Same, y, base);
            let d = tape.map(Unary::Scale(-(one + tau) * half / tau), y_over_base);
            same(tape, g, d)
        }
    })
}

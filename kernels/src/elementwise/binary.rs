//! The broadcasting binary kernel: `out = a ∘ b` for `∘` one of `+ − · /`.
//!
//! Every operation is a single IEEE operation, so the SIMD paths give the same bits
//! as the scalar reference.

use crate::Real;
use crate::dispatch::{self, Kernel, Path};
use crate::simd::{LANES, Simd, map};

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
///
/// A long call is split over the rayon pool at row boundaries
/// ([`crate::parallel`]); the result does not depend on the split.
pub fn binary<T: Real>(op: Binary, a: &[T], b: &[T], bcast: Broadcast, cols: usize, out: &mut [T]) {
    let Some(call) = BinaryArgs::new(op, a, b, bcast, cols, out) else {
        return;
    };
    let BinaryArgs { a, b, out, .. } = call;
    // Parts of whole rows when `b` goes by rows; else of any length (one row each).
    let by_rows = matches!(bcast, Broadcast::Row | Broadcast::Col);
    let unit = if by_rows { cols } else { 1 };
    crate::parallel::for_each_part(out, unit, |start, out| {
        let end = start + out.len();
        let (b, cols) = match bcast {
            Broadcast::Same => (&b[start..end], out.len()),
            Broadcast::Scalar => (b, out.len()),
            Broadcast::Row => (b, cols),
            Broadcast::Col => (&b[start / cols..end / cols], cols),
        };
        if let Some(part) = BinaryArgs::new(op, &a[start..end], b, bcast, cols, out) {
            T::run_kernel::<BinaryKernel>(part)
        }
    });
}

/// [`binary`] for `f32` on a given [`Path`] instead of the dispatched one (tests,
/// benchmarks).
///
/// # Panics
/// As [`binary`], and if `path` is not available here (unless `a` is empty).
pub fn binary_with(
    path: Path,
    op: Binary,
    a: &[f32],
    b: &[f32],
    bcast: Broadcast,
    cols: usize,
    out: &mut [f32],
) {
    if let Some(call) = BinaryArgs::new(op, a, b, bcast, cols, out) {
        dispatch::run::<BinaryKernel>(path, call)
    }
}

/// The arguments of one [`binary`] call: lengths checked, `a` not empty, `cols > 0`.
pub(crate) struct BinaryArgs<'a, T> {
    op: Binary,
    a: &'a [T],
    b: &'a [T],
    bcast: Broadcast,
    cols: usize,
    out: &'a mut [T],
}

impl<'a, T> BinaryArgs<'a, T> {
    /// Checks the lengths; `None` when there is nothing to compute (`a` empty).
    fn new(
        op: Binary,
        a: &'a [T],
        b: &'a [T],
        bcast: Broadcast,
        cols: usize,
        out: &'a mut [T],
    ) -> Option<Self> {
        assert_eq!(a.len(), out.len(), "binary: a and out differ in length");
        if a.is_empty() {
            return None;
        }
        assert!(
            cols > 0 && a.len().is_multiple_of(cols),
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
        Some(BinaryArgs {
            op,
            a,
            b,
            bcast,
            cols,
            out,
        })
    }
}

/// The broadcasting binary kernel (see [`crate::dispatch`]).
pub(crate) struct BinaryKernel;

impl Kernel for BinaryKernel {
    type Args<'a, T: Real> = BinaryArgs<'a, T>;
    type Output = ();

    /// One value at a time.
    fn reference<T: Real>(call: BinaryArgs<'_, T>) {
        let (op, a, b, out) = (call.op, call.a, call.b, call.out);
        let (bcast, cols) = (call.bcast, call.cols);
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
                for ((orow, arow), &y) in
                    out.chunks_exact_mut(cols).zip(a.chunks_exact(cols)).zip(b)
                {
                    for (o, &x) in orow.iter_mut().zip(arow) {
                        *o = op.apply(x, y);
                    }
                }
            }
        }
    }

    /// 8 lanes at a time; a broadcast scalar (`Scalar`, `Col`) is splatted once.
    #[inline(always)]
    fn run<S: Simd>(s: S, call: BinaryArgs<'_, f32>) {
        let (op, a, b, out) = (call.op, call.a, call.b, call.out);
        let (bcast, cols) = (call.bcast, call.cols);
        match bcast {
            Broadcast::Same => zip_map(s, op, a, b, out),
            Broadcast::Scalar => scalar_map(s, op, a, b[0], out),
            Broadcast::Row => {
                for (ar, or) in a.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
                    zip_map(s, op, ar, b, or);
                }
            }
            Broadcast::Col => {
                let rows = a.chunks_exact(cols).zip(out.chunks_exact_mut(cols));
                for ((ar, or), &y) in rows.zip(b) {
                    scalar_map(s, op, ar, y, or);
                }
            }
        }
    }
}

/// `out = a ∘ b` for one operation, 8 lanes at a time; every operation is a single
/// IEEE operation, so the result is bit-identical to the scalar code.
#[inline(always)]
fn zip_map<S: Simd>(s: S, op: Binary, a: &[f32], b: &[f32], out: &mut [f32]) {
    let mut xs = a.chunks_exact(LANES);
    let mut ys = b.chunks_exact(LANES);
    let mut os = out.chunks_exact_mut(LANES);
    for ((xi, yi), oi) in (&mut xs).zip(&mut ys).zip(&mut os) {
        s.store(oi, apply(s, op, s.load(xi), s.load(yi)));
    }
    let (xt, yt, ot) = (xs.remainder(), ys.remainder(), os.into_remainder());
    if !xt.is_empty() {
        s.store_partial(ot, apply(s, op, s.load_partial(xt), s.load_partial(yt)));
    }
}

/// One binary operation on vectors.
#[inline(always)]
fn apply<S: Simd>(s: S, op: Binary, x: S::V, y: S::V) -> S::V {
    match op {
        Binary::Add => s.add(x, y),
        Binary::Sub => s.sub(x, y),
        Binary::Mul => s.mul(x, y),
        Binary::Div => s.div(x, y),
    }
}

/// `out = a ∘ y` with one scalar `y`: one loop per operation, so that the choice is
/// made once, outside the loop.
#[inline(always)]
fn scalar_map<S: Simd>(s: S, op: Binary, a: &[f32], y: f32, out: &mut [f32]) {
    let y = s.splat(y);
    macro_rules! map_by {
        ($method:ident) => {
            map(
                s,
                a,
                out,
                #[inline(always)]
                |x| s.$method(x, y),
            )
        };
    }
    match op {
        Binary::Add => map_by!(add),
        Binary::Sub => map_by!(sub),
        Binary::Mul => map_by!(mul),
        Binary::Div => map_by!(div),
    }
}

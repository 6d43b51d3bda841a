//! The 8-lane `f32` vector abstraction every SIMD kernel is written against.
//!
//! Each kernel is written once, generic over [`Simd`], and compiled twice:
//!
//! - with [`avx2::Avx2`] (x86-64 only): `core::arch` AVX2 + FMA intrinsics. The generic
//!   kernel is monomorphised *inside* a `#[target_feature(enable = "avx2,fma")]`
//!   function, and every method and every generic kernel function is
//!   `#[inline(always)]`, so the whole kernel ends up in one function compiled for
//!   AVX2 + FMA even in a default build without `RUSTFLAGS`.
//! - with [`portable::Portable`]: `wide::f32x8`, whose instruction set is fixed when
//!   `wide` itself is compiled (two SSE halves in a default x86-64 build, NEON on
//!   aarch64, scalar elsewhere). Used where AVX2 is not available.
//!
//! A value of a type implementing [`Simd`] is a *token*: holding one proves that the
//! CPU can execute its instructions. [`avx2::Avx2`] can only be obtained from
//! [`avx2::Avx2::detect`], which is what makes its (safe) methods sound (`avx2.rs`
//! writes that argument once, for all of its arithmetic).
//!
//! The AVX2 code is compiled on x86-64 targets with SSE2, i.e. every hosted one; it is
//! left out of soft-float targets such as `x86_64-unknown-none`, where LLVM cannot
//! generate vector code at all (and where the portable path runs on plain arrays).
//!
//! Masks (results of comparisons) are vectors whose lanes are all-ones or all-zeros.

pub(crate) mod math;
pub(crate) mod portable;

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub(crate) mod avx2;

/// Number of `f32` lanes in one vector.
pub(crate) const LANES: usize = 8;

/// An instruction set for 8-lane `f32` vectors. See the module documentation.
///
/// Floating-point semantics follow IEEE 754 single precision (round to nearest) for
/// `add`, `sub`, `mul`, `div`, `sqrt`, and a single rounding for `fma` (on the AVX2
/// path; `wide` may round twice where the target has no FMA).
pub trait Simd: Copy {
    /// The vector type.
    type V: Copy;

    /// All lanes equal to `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Loads the first 8 values of `s`. Panics if `s` is shorter.
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores `v` into the first 8 values of `s`. Panics if `s` is shorter.
    fn store(self, s: &mut [f32], v: Self::V);
    /// Loads `min(s.len(), 8)` values; the other lanes are zero.
    fn load_partial(self, s: &[f32]) -> Self::V;
    /// Stores the first `min(s.len(), 8)` lanes of `v`.
    fn store_partial(self, s: &mut [f32], v: Self::V);

    /// `a + b`
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `√a`, correctly rounded.
    fn sqrt(self, a: Self::V) -> Self::V;
    /// Lane-wise maximum; when a lane of either is NaN the result lane is unspecified
    /// (one of the two). Kernels that care about NaN patch it explicitly.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum; NaN lanes as for [`Simd::max`].
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// `|a|` (clears the sign bit).
    fn abs(self, a: Self::V) -> Self::V;
    /// `-a` (flips the sign bit).
    fn neg(self, a: Self::V) -> Self::V;
    /// Rounds to the nearest integer (ties to even).
    fn round(self, a: Self::V) -> Self::V;

    /// Mask `a < b` (false when either is NaN).
    fn lt(self, a: Self::V, b: Self::V) -> Self::V;
    /// Mask `a ≤ b` (false when either is NaN).
    fn le(self, a: Self::V, b: Self::V) -> Self::V;
    /// Mask `a == b` (false when either is NaN).
    fn eq(self, a: Self::V, b: Self::V) -> Self::V;
    /// Mask of the NaN lanes of `a`.
    fn is_nan(self, a: Self::V) -> Self::V;
    /// Bitwise `a | b` (mask union).
    fn or(self, a: Self::V, b: Self::V) -> Self::V;
    /// Bitwise `a & b` (mask intersection, or keep `b` where the mask `a` is set).
    fn and(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `if mask { t } else { f }`.
    fn select(self, mask: Self::V, t: Self::V, f: Self::V) -> Self::V;
    /// Whether any lane of the mask is set.
    fn any(self, mask: Self::V) -> bool;

    /// `2^n` for integral `n` in `[-126, 127]` (built from the exponent bits); `n = 128`
    /// gives the bit pattern of `+inf`.
    fn pow2i(self, n: Self::V) -> Self::V;
    /// For positive, finite, normal `x`: `(m, e)` with `x = m · 2^e`, `m ∈ [1, 2)`, `e`
    /// an integer (as `f32`). Other inputs give unspecified lanes.
    fn frexp(self, x: Self::V) -> (Self::V, Self::V);

    /// Sum of the 8 lanes.
    fn reduce_add(self, a: Self::V) -> f32;
    /// Maximum of the 8 lanes (NaN lanes as for [`Simd::max`]).
    fn reduce_max(self, a: Self::V) -> f32;

    /// Eight sums in one vector: lane `r` is the sum of the lanes of `v[r]`, with the
    /// bits [`Simd::reduce_add`]`(v[r])` gives (same additions, same order). For
    /// kernels that reduce 8 rows at once; an implementation may do it without
    /// leaving the vector registers.
    #[inline(always)]
    fn reduce_add_8(self, v: [Self::V; 8]) -> Self::V {
        let mut sums = [0.0f32; LANES];
        for (o, &x) in sums.iter_mut().zip(&v) {
            *o = self.reduce_add(x);
        }
        self.load(&sums)
    }

    /// All lanes zero.
    #[inline(always)]
    fn zero(self) -> Self::V {
        self.splat(0.0)
    }

    /// Loads up to 8 values: a full vector, or a zero-padded partial one.
    #[inline(always)]
    fn load_any(self, s: &[f32]) -> Self::V {
        if s.len() >= LANES {
            self.load(s)
        } else {
            self.load_partial(s)
        }
    }

    /// Stores the first `min(s.len(), 8)` lanes: a full vector when they fit.
    #[inline(always)]
    fn store_any(self, s: &mut [f32], v: Self::V) {
        if s.len() >= LANES {
            self.store(s, v)
        } else {
            self.store_partial(s, v)
        }
    }

    /// `(p, e)` with `p = a·b` rounded and `p + e = a·b` exactly (barring overflow
    /// and underflow). This default is Dekker's product (Veltkamp splitting), exact
    /// without a fused multiply-add; implementations with a fused FMA override it
    /// with `e = fma(a, b, −p)`.
    #[inline(always)]
    fn two_prod(self, a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let split = |v: Self::V| {
            // 2^12 + 1 splits a 24-bit significand into two 12-bit halves.
            let c = self.mul(self.splat(4097.0), v);
            let hi = self.sub(c, self.sub(c, v));
            (hi, self.sub(v, hi))
        };
        let p = self.mul(a, b);
        let (ah, al) = split(a);
        let (bh, bl) = split(b);
        let e = self.sub(self.mul(ah, bh), p);
        let e = self.add(e, self.mul(ah, bl));
        let e = self.add(e, self.mul(al, bh));
        (p, self.add(e, self.mul(al, bl)))
    }
}

/// `out[i] = f(x[i])`, 8 lanes at a time, the tail through a masked vector. `x` and
/// `out` have the same length.
#[inline(always)]
pub(crate) fn map<S: Simd>(s: S, x: &[f32], out: &mut [f32], f: impl Fn(S::V) -> S::V) {
    let mut xs = x.chunks_exact(LANES);
    let mut os = out.chunks_exact_mut(LANES);
    for (xi, oi) in (&mut xs).zip(&mut os) {
        s.store(oi, f(s.load(xi)));
    }
    let (xt, ot) = (xs.remainder(), os.into_remainder());
    if !xt.is_empty() {
        s.store_partial(ot, f(s.load_partial(xt)));
    }
}

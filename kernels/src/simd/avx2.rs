//! [`Simd`] for x86-64 AVX2 + FMA with `core::arch` intrinsics.
//!
//! # Why the `unsafe` is sound, and where it is
//!
//! An [`Avx2`] value (the *token*) can only be created by [`Avx2::detect`], which
//! returns it only when the running CPU has AVX2 and FMA. Every `unsafe` block in this
//! file rests on that one fact, the *token invariant*. The file has three parts:
//!
//! - [`ops`]: the arithmetic, comparisons, masks and bit tricks, as safe functions
//!   compiled with `#[target_feature(enable = "avx2,fma")]`. Inside such a function the
//!   intrinsics that take and return only values are safe to call (Rust ≥ 1.87), and
//!   the module forbids `unsafe` code, so the compiler checks that nothing there reads
//!   or writes memory through a pointer. Calling a safe `#[target_feature]` function
//!   from code compiled without those features has exactly one precondition, by the
//!   language's rule: the CPU has the features.
//! - `avx2!`: the one place where ordinary code calls into [`ops`]. It takes the
//!   token, so it can only be used where one is in hand, and its `SAFETY` comment is
//!   the token invariant, written once.
//! - The full and masked loads and stores, which take pointers: four `unsafe` blocks,
//!   whose `SAFETY` comments add the bounds to the token invariant.
//!
//! # Why it is fast
//!
//! The [`Simd`] methods are `#[inline(always)]` and are only meant to be inlined into
//! the dispatcher's `#[target_feature(enable = "avx2,fma")]` trampoline
//! (`dispatch.rs`). The [`ops`] functions cannot be `#[inline(always)]` (the language
//! does not allow it together with `#[target_feature]`); they are `#[inline]`, like
//! the `core::arch` intrinsics themselves, and LLVM inlines them into any caller
//! compiled with the same features, which the trampoline is once the method has been
//! inlined there. So in an optimised build each method is its one instruction (or
//! few) inside the kernel's loop, as it was when the methods called the intrinsics
//! directly. Called outside the trampoline they stay correct but slow (each operation
//! becomes a call).

use core::arch::x86_64::*;

use super::{LANES, Simd};

/// Proof that the CPU supports AVX2 and FMA (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _private: (),
}

impl Avx2 {
    /// The token if the running CPU has AVX2 and FMA.
    ///
    /// With `std`, asks the CPU (`is_x86_feature_detected!`, itself cached by std).
    /// Without `std` there is no portable way to ask, so this is decided at compile
    /// time: `Some` only when the build enables the `avx2` and `fma` target features.
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(feature = "std")]
        let ok = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(feature = "std"))]
        let ok = cfg!(all(target_feature = "avx2", target_feature = "fma"));
        if ok {
            Some(Avx2 { _private: () })
        } else {
            None
        }
    }
}

/// Calls the value-only operation [`ops`]`::$f` from code compiled without AVX2, with
/// the token `$token` in hand: `avx2!(self, add(a, b))`.
///
/// The arguments are identifiers (values computed before the call), so the `unsafe`
/// block holds the `ops` call and nothing else.
macro_rules! avx2 {
    ($token:expr, $f:ident($($arg:ident),*)) => {{
        let _proof: Avx2 = $token;
        // SAFETY: `ops::$f` is a safe function (`ops` forbids `unsafe` code) compiled
        // with `#[target_feature(enable = "avx2,fma")]`, so its only precondition is
        // that the CPU has AVX2 and FMA. `_proof` is an `Avx2` token, which exists only
        // if `Avx2::detect` found both (token invariant).
        unsafe { ops::$f($($arg),*) }
    }};
}

/// The value-only AVX2 + FMA operations behind the [`Simd`] methods: safe functions
/// compiled for AVX2 and FMA, reached through `avx2!`. No pointers, no `unsafe`.
#[forbid(unsafe_code)]
mod ops {
    use core::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    /// Lane mask selecting the first `n` lanes (`n ≤ 8`), for masked loads and stores.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn first_lanes(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sqrt(a: __m256) -> __m256 {
        _mm256_sqrt_ps(a)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn min(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn abs(a: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), a)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn neg(a: __m256) -> __m256 {
        _mm256_xor_ps(_mm256_set1_ps(-0.0), a)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn round(a: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }

    /// Lane `r`: `((t0 + t4) + (t1 + t5)) + ((t2 + t6) + (t3 + t7))` of the lanes `t`
    /// of `v[r]`, `reduce_add`'s order. The halves of rows `r` and `r + 4` are added
    /// in one vector (`u`), then two rounds of pairwise adds (`hadd`) put row `r`'s sum
    /// in lane `r`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn reduce_add_8(v: [__m256; 8]) -> __m256 {
        let mut u = [_mm256_setzero_ps(); 4];
        for (r, ur) in u.iter_mut().enumerate() {
            let (a, b) = (v[r], v[r + 4]);
            let lows = _mm256_permute2f128_ps::<0x20>(a, b);
            let highs = _mm256_permute2f128_ps::<0x31>(a, b);
            *ur = _mm256_add_ps(lows, highs);
        }
        let first = _mm256_hadd_ps(u[0], u[1]);
        let second = _mm256_hadd_ps(u[2], u[3]);
        _mm256_hadd_ps(first, second)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn lt(a: __m256, b: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn le(a: __m256, b: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_LE_OQ>(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn eq(a: __m256, b: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn is_nan(a: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn or(a: __m256, b: __m256) -> __m256 {
        _mm256_or_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn and(a: __m256, b: __m256) -> __m256 {
        _mm256_and_ps(a, b)
    }
    /// `blendv` picks `t` where the mask lane's sign bit is set, which for all-ones /
    /// all-zeros masks is exactly "mask set".
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn select(mask: __m256, t: __m256, f: __m256) -> __m256 {
        _mm256_blendv_ps(f, t, mask)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn any(mask: __m256) -> bool {
        _mm256_movemask_ps(mask) != 0
    }

    /// `n` is integral, so the conversion is exact; with `n ∈ [-126, 127]` the biased
    /// exponent `n + 127` lies in `[1, 254]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn pow2i(n: __m256) -> __m256 {
        let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
    }
    /// Bit manipulation of positive normal floats: the exponent field minus the bias,
    /// and the mantissa with exponent 0.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn frexp(x: __m256) -> (__m256, __m256) {
        let bits = _mm256_castps_si256(x);
        let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
        let m = _mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f80_0000),
        );
        (_mm256_castsi256_ps(m), _mm256_cvtepi32_ps(e))
    }
}

impl Simd for Avx2 {
    type V = __m256;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        avx2!(self, splat(x))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        let s = &s[..LANES];
        // SAFETY: token invariant (AVX); `s` holds 8 readable values (checked by the
        // slice index above), and `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m256) {
        let s = &mut s[..LANES];
        // SAFETY: token invariant (AVX); `s` holds 8 writable values (checked by the
        // slice index above), and `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32]) -> __m256 {
        let n = s.len().min(LANES);
        let mask = avx2!(self, first_lanes(n));
        // SAFETY: token invariant (AVX); the mask enables only the first `n ≤ s.len()`
        // lanes, all inside `s`, and masked-off lanes are neither read nor fault.
        unsafe { _mm256_maskload_ps(s.as_ptr(), mask) }
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: __m256) {
        let n = s.len().min(LANES);
        let mask = avx2!(self, first_lanes(n));
        // SAFETY: token invariant (AVX); only the first `n ≤ s.len()` lanes, all inside
        // `s`, are written.
        unsafe { _mm256_maskstore_ps(s.as_mut_ptr(), mask, v) }
    }

    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, add(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, sub(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, mul(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, div(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        avx2!(self, fma(a, b, c))
    }
    #[inline(always)]
    fn sqrt(self, a: __m256) -> __m256 {
        avx2!(self, sqrt(a))
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, max(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, min(a, b))
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        avx2!(self, abs(a))
    }
    #[inline(always)]
    fn neg(self, a: __m256) -> __m256 {
        avx2!(self, neg(a))
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        avx2!(self, round(a))
    }

    #[inline(always)]
    fn lt(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, lt(a, b))
    }
    #[inline(always)]
    fn le(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, le(a, b))
    }
    #[inline(always)]
    fn eq(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, eq(a, b))
    }
    #[inline(always)]
    fn is_nan(self, a: __m256) -> __m256 {
        avx2!(self, is_nan(a))
    }
    #[inline(always)]
    fn or(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, or(a, b))
    }
    #[inline(always)]
    fn and(self, a: __m256, b: __m256) -> __m256 {
        avx2!(self, and(a, b))
    }
    #[inline(always)]
    fn select(self, mask: __m256, t: __m256, f: __m256) -> __m256 {
        avx2!(self, select(mask, t, f))
    }
    #[inline(always)]
    fn any(self, mask: __m256) -> bool {
        avx2!(self, any(mask))
    }

    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        avx2!(self, pow2i(n))
    }
    #[inline(always)]
    fn frexp(self, x: __m256) -> (__m256, __m256) {
        avx2!(self, frexp(x))
    }

    #[inline(always)]
    fn two_prod(self, a: __m256, b: __m256) -> (__m256, __m256) {
        let p = self.mul(a, b);
        // The fused multiply-add rounds once, so this is the exact error of `p`.
        (p, self.fma(a, b, self.neg(p)))
    }

    #[inline(always)]
    fn reduce_add(self, a: __m256) -> f32 {
        let mut t = [0.0f32; LANES];
        self.store(&mut t, a);
        ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]))
    }
    #[inline(always)]
    fn reduce_add_8(self, v: [__m256; 8]) -> __m256 {
        avx2!(self, reduce_add_8(v))
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        let mut t = [0.0f32; LANES];
        self.store(&mut t, a);
        t.iter().fold(t[0], |m, &v| if v > m { v } else { m })
    }
}

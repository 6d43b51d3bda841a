//! [`Simd`] for x86-64 AVX2 + FMA with `core::arch` intrinsics.
//!
//! The methods are safe functions that call `unsafe` intrinsics. That is sound
//! because an [`Avx2`] value can only be created by [`Avx2::detect`], which checks
//! that the running CPU has AVX2 and FMA: every `// SAFETY:` comment below rests on
//! this invariant ("token invariant"). The methods are `#[inline(always)]` and are
//! only meant to be inlined into functions marked
//! `#[target_feature(enable = "avx2,fma")]`; called elsewhere they stay correct but
//! slow (each intrinsic becomes a call).

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

/// Lane mask selecting the first `n` lanes (`n ≤ 8`), for masked loads and stores.
#[inline(always)]
fn first_lanes(_t: Avx2, n: usize) -> __m256i {
    // SAFETY: token invariant (AVX / AVX2 available).
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

impl Simd for Avx2 {
    type V = __m256;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        let s = &s[..LANES];
        // SAFETY: token invariant; `s` holds 8 readable values (checked by the slice
        // index above), and `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m256) {
        let s = &mut s[..LANES];
        // SAFETY: token invariant; `s` holds 8 writable values, no alignment needed.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32]) -> __m256 {
        let n = s.len().min(LANES);
        let mask = first_lanes(self, n);
        // SAFETY: token invariant; the mask enables only the first `n` lanes, all
        // inside `s`, and masked-off lanes are neither read nor fault.
        unsafe { _mm256_maskload_ps(s.as_ptr(), mask) }
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: __m256) {
        let n = s.len().min(LANES);
        let mask = first_lanes(self, n);
        // SAFETY: token invariant; only the first `n` lanes, all inside `s`, are
        // written.
        unsafe { _mm256_maskstore_ps(s.as_mut_ptr(), mask, v) }
    }

    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: token invariant (FMA available).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_sqrt_ps(a) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn neg(self, a: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_xor_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }

    #[inline(always)]
    fn lt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn le(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_cmp_ps::<_CMP_LE_OQ>(a, b) }
    }
    #[inline(always)]
    fn eq(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b) }
    }
    #[inline(always)]
    fn is_nan(self, a: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a) }
    }
    #[inline(always)]
    fn or(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_or_ps(a, b) }
    }
    #[inline(always)]
    fn and(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token invariant.
        unsafe { _mm256_and_ps(a, b) }
    }
    #[inline(always)]
    fn select(self, mask: __m256, t: __m256, f: __m256) -> __m256 {
        // SAFETY: token invariant. `blendv` picks `t` where the mask lane's sign bit
        // is set, which for all-ones / all-zeros masks is exactly "mask set".
        unsafe { _mm256_blendv_ps(f, t, mask) }
    }
    #[inline(always)]
    fn any(self, mask: __m256) -> bool {
        // SAFETY: token invariant.
        unsafe { _mm256_movemask_ps(mask) != 0 }
    }

    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        // SAFETY: token invariant. `n` is integral, so the conversion is exact; with
        // `n ∈ [-126, 127]` the biased exponent `n + 127` lies in `[1, 254]`.
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn frexp(self, x: __m256) -> (__m256, __m256) {
        // SAFETY: token invariant. Pure bit manipulation of positive normal floats:
        // the exponent field minus the bias, and the mantissa with exponent 0.
        unsafe {
            let bits = _mm256_castps_si256(x);
            let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
            let m = _mm256_or_si256(
                _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
                _mm256_set1_epi32(0x3f80_0000),
            );
            (_mm256_castsi256_ps(m), _mm256_cvtepi32_ps(e))
        }
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
    fn reduce_max(self, a: __m256) -> f32 {
        let mut t = [0.0f32; LANES];
        self.store(&mut t, a);
        t.iter().fold(t[0], |m, &v| if v > m { v } else { m })
    }
}

//! [`Simd`] on `wide::f32x8`: the portable path, for CPUs or targets without AVX2.
//!
//! `wide` picks its instructions when it is compiled (`cfg(target_feature)`): two SSE
//! halves in a default x86-64 build, one AVX register with `-C target-cpu=native`,
//! NEON on aarch64, plain arrays elsewhere. No `unsafe` here.

use wide::{f32x8, i32x8, u32x8};

use super::{LANES, Simd};

/// The portable token: always available.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = f32x8;

    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32x8 {
        let a: [f32; LANES] = s[..LANES].try_into().expect("8 values");
        f32x8::new(a)
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: f32x8) {
        s[..LANES].copy_from_slice(&v.to_array());
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32]) -> f32x8 {
        let n = s.len().min(LANES);
        let mut a = [0.0f32; LANES];
        a[..n].copy_from_slice(&s[..n]);
        f32x8::new(a)
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: f32x8) {
        let n = s.len().min(LANES);
        s[..n].copy_from_slice(&v.to_array()[..n]);
    }

    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn sqrt(self, a: f32x8) -> f32x8 {
        a.sqrt()
    }
    #[inline(always)]
    fn max(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_max(b)
    }
    #[inline(always)]
    fn min(self, a: f32x8, b: f32x8) -> f32x8 {
        a.fast_min(b)
    }
    #[inline(always)]
    fn abs(self, a: f32x8) -> f32x8 {
        a.abs()
    }
    #[inline(always)]
    fn neg(self, a: f32x8) -> f32x8 {
        -a
    }
    #[inline(always)]
    fn round(self, a: f32x8) -> f32x8 {
        a.round_ties_even()
    }

    #[inline(always)]
    fn lt(self, a: f32x8, b: f32x8) -> f32x8 {
        a.simd_lt(b)
    }
    #[inline(always)]
    fn le(self, a: f32x8, b: f32x8) -> f32x8 {
        a.simd_le(b)
    }
    #[inline(always)]
    fn eq(self, a: f32x8, b: f32x8) -> f32x8 {
        a.simd_eq(b)
    }
    #[inline(always)]
    fn is_nan(self, a: f32x8) -> f32x8 {
        a.is_nan()
    }
    #[inline(always)]
    fn or(self, a: f32x8, b: f32x8) -> f32x8 {
        a | b
    }
    #[inline(always)]
    fn and(self, a: f32x8, b: f32x8) -> f32x8 {
        a & b
    }
    #[inline(always)]
    fn select(self, mask: f32x8, t: f32x8, f: f32x8) -> f32x8 {
        mask.bitselect(t, f)
    }
    #[inline(always)]
    fn any(self, mask: f32x8) -> bool {
        mask.any()
    }

    #[inline(always)]
    fn pow2i(self, n: f32x8) -> f32x8 {
        let e = n.round_int() + i32x8::splat(127);
        f32x8::from_bits(e.cast_unsigned() << 23)
    }
    #[inline(always)]
    fn frexp(self, x: f32x8) -> (f32x8, f32x8) {
        let bits = x.to_bits();
        let shifted: u32x8 = bits >> 23;
        let e = shifted.cast_signed() - i32x8::splat(127);
        let m = (bits & u32x8::splat(0x007f_ffff)) | u32x8::splat(0x3f80_0000);
        (f32x8::from_bits(m), f32x8::from_i32x8(e))
    }

    #[inline(always)]
    fn reduce_add(self, a: f32x8) -> f32 {
        let t = a.to_array();
        ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]))
    }
    #[inline(always)]
    fn reduce_max(self, a: f32x8) -> f32 {
        let t = a.to_array();
        t.iter().fold(t[0], |m, &v| if v > m { v } else { m })
    }
}

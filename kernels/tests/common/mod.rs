//! Helpers shared by the kernels' tests.
#![allow(dead_code)]

use readout_kernels::Path;

/// Paths this machine can run. Scalar and portable always; AVX2 when the CPU has it.
pub fn paths() -> Vec<Path> {
    Path::ALL.into_iter().filter(|p| p.is_available()).collect()
}

/// `len` deterministic values in `shift ± scale/2` (a multiplicative hash of the
/// index and `seed`).
pub fn lcg_values(len: usize, seed: u32, scale: f32, shift: f32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let u = (i.wrapping_mul(2_654_435_761) ^ seed).wrapping_mul(747_796_405) as f32;
            (u / u32::MAX as f32 - 0.5) * scale + shift
        })
        .collect()
}

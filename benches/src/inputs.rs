//! Seeded standard-normal inputs: `Xoshiro256PlusPlus` and the Box–Muller transform.
//!
//! The values are not PyTorch's (`torch.randn` uses its own generator); the workloads
//! fix sizes and the distribution, not the numbers, and the layers' cost does not
//! depend on the values.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use readout_core::Tensor;

/// A seeded source of standard-normal `f32` values.
pub struct Normal {
    rng: Xoshiro256PlusPlus,
    /// The second value of the last Box–Muller pair.
    spare: Option<f64>,
}

impl Normal {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Normal {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            spare: None,
        }
    }

    /// A uniform value in `(0, 1]` from the top 53 bits (never 0, so `ln` is finite).
    fn open_unit(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The next standard-normal value (Box–Muller: two uniforms give two normals).
    pub fn sample(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let (u1, u2) = (self.open_unit(), self.open_unit());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `len` standard-normal `f32` values.
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.sample() as f32).collect()
    }

    /// A tensor of the given shape with standard-normal values.
    ///
    /// # Panics
    /// Never for a shape of rank ≤ 3 (the tensor holds exactly `Π dims` values).
    pub fn tensor(&mut self, dims: &[usize]) -> Tensor<f32> {
        let len = dims.iter().product();
        Tensor::from_vec(dims, self.vec(len)).expect("a tensor of rank ≤ 3 with Π dims values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_standard_normal_and_seeded() {
        let v = Normal::new(7).vec(200_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let within1 = v.iter().filter(|x| x.abs() < 1.0).count() as f64 / n;
        assert!((within1 - 0.6827).abs() < 0.01, "P(|x| < 1) = {within1}");
        assert!(v.iter().all(|x| x.is_finite()));
        assert_eq!(Normal::new(7).vec(5), v[..5]);
        assert_ne!(Normal::new(8).vec(5), v[..5]);
    }
}

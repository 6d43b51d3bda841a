//! Optimisers matching PyTorch's `torch.optim.Adam` and `torch.optim.SGD`.

use alloc::vec::Vec;

use crate::error::LayerError;
use crate::param::Parameters;

fn check_hyper(name: &'static str, v: f32, ok: bool, why: &'static str) -> Result<(), LayerError> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        Err(LayerError::invalid_argument(name, v, why))
    }
}

/// `torch.optim.Adam` (without `amsgrad`): `weight_decay` adds `wd·p` to the gradient
/// (L2, not AdamW), and the update is PyTorch's
/// `p −= lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)`.
#[derive(Clone, Debug)]
pub struct Adam {
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    step: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    /// Adam with PyTorch's defaults besides `lr`: betas `(0.9, 0.999)`, eps `1e-8`,
    /// no weight decay.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for a negative or non-finite `lr`.
    pub fn new(lr: f32) -> Result<Self, LayerError> {
        Self::with(lr, (0.9, 0.999), 1e-8, 0.0)
    }

    /// Adam with every hyper-parameter given.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] naming the argument when `lr`, `eps` or
    /// `weight_decay` is negative or non-finite, or a beta is outside `[0, 1)`.
    pub fn with(
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
    ) -> Result<Self, LayerError> {
        check_hyper("lr", lr, lr >= 0.0, "must be finite and ≥ 0")?;
        check_hyper(
            "betas.0",
            betas.0,
            (0.0..1.0).contains(&betas.0),
            "must be in [0, 1)",
        )?;
        check_hyper(
            "betas.1",
            betas.1,
            (0.0..1.0).contains(&betas.1),
            "must be in [0, 1)",
        )?;
        check_hyper("eps", eps, eps >= 0.0, "must be finite and ≥ 0")?;
        check_hyper(
            "weight_decay",
            weight_decay,
            weight_decay >= 0.0,
            "must be finite and ≥ 0",
        )?;
        Ok(Adam {
            lr,
            betas,
            eps,
            weight_decay,
            step: 0,
            m: Vec::new(),
            v: Vec::new(),
        })
    }

    /// One update of every parameter from its accumulated gradient.
    pub fn step(&mut self, params: &mut Parameters) {
        if self.m.len() != params.len() {
            self.m = params
                .iter()
                .map(|p| alloc::vec![0.0; p.value().numel()])
                .collect();
            self.v = self.m.clone();
        }
        self.step = self.step.saturating_add(1);
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - libm::powf(b1, self.step as f32);
        let bc2 = 1.0 - libm::powf(b2, self.step as f32);
        let step_size = self.lr / bc1;
        let bc2_sqrt = libm::sqrtf(bc2);
        for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let (w, g) = p.value_and_grad_mut();
            for (((wi, &gi), mi), vi) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let gi = gi + self.weight_decay * *wi;
                *mi = b1 * *mi + (1.0 - b1) * gi;
                *vi = b2 * *vi + (1.0 - b2) * gi * gi;
                let denom = libm::sqrtf(*vi) / bc2_sqrt + self.eps;
                *wi -= step_size * *mi / denom;
            }
        }
    }
}

/// `torch.optim.SGD`: `p −= lr·(g + wd·p)`, with optional heavy-ball momentum
/// (`buf = momentum·buf + g`, the first buffer being `g`; no dampening, not Nesterov).
#[derive(Clone, Debug)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    buf: Vec<Vec<f32>>,
}

impl Sgd {
    /// SGD with a learning rate, momentum and weight decay.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] naming the argument when one is negative or
    /// non-finite.
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Result<Self, LayerError> {
        check_hyper("lr", lr, lr >= 0.0, "must be finite and ≥ 0")?;
        check_hyper(
            "momentum",
            momentum,
            momentum >= 0.0,
            "must be finite and ≥ 0",
        )?;
        check_hyper(
            "weight_decay",
            weight_decay,
            weight_decay >= 0.0,
            "must be finite and ≥ 0",
        )?;
        Ok(Sgd {
            lr,
            momentum,
            weight_decay,
            buf: Vec::new(),
        })
    }

    /// One update of every parameter from its accumulated gradient.
    pub fn step(&mut self, params: &mut Parameters) {
        let first = self.buf.len() != params.len();
        if first {
            self.buf = params
                .iter()
                .map(|p| alloc::vec![0.0; p.value().numel()])
                .collect();
        }
        for (p, buf) in params.iter_mut().zip(&mut self.buf) {
            let (w, g) = p.value_and_grad_mut();
            for ((wi, &gi), bi) in w.iter_mut().zip(g).zip(buf.iter_mut()) {
                let mut d = gi + self.weight_decay * *wi;
                if self.momentum != 0.0 {
                    *bi = if first { d } else { self.momentum * *bi + d };
                    d = *bi;
                }
                *wi -= self.lr * d;
            }
        }
    }
}

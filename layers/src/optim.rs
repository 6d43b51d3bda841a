//! Training like `torch.optim`: the optimisers [`Adam`] (with `amsgrad`, and AdamW's
//! decoupled weight decay) and [`Sgd`] (momentum, dampening, Nesterov), the learning-rate
//! schedulers [`StepLR`], [`ExponentialLR`] and [`CosineAnnealingLR`], global gradient
//! clipping ([`clip_grad_norm`], like `torch.nn.utils.clip_grad_norm_`), and optimiser
//! state saved to and loaded from safetensors (`std` feature) so that a resumed run
//! continues bit for bit.
//!
//! Each update is PyTorch's single-tensor (`foreach=False`) code path written out: the
//! scalar coefficients are formed in `f64`, as Python forms them, and applied to the
//! `f32` tensors in PyTorch's order of operations. `tests/optim_torch.rs` checks every
//! feature against trajectories recorded from torch 2.15.
//!
//! A frozen parameter ([`Parameter::set_requires_grad`](crate::Parameter::set_requires_grad)
//! with `false`) is skipped, as PyTorch skips a parameter whose `grad` is `None`: its
//! value and its optimiser state (including its step count) stay as they are.

use alloc::vec::Vec;

use crate::error::LayerError;
use crate::param::{Parameter, Parameters};

fn check_hyper(name: &'static str, v: f64, ok: bool, why: &'static str) -> Result<(), LayerError> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        Err(LayerError::invalid_argument(name, v, why))
    }
}

fn check_lr(lr: f64) -> Result<(), LayerError> {
    check_hyper("lr", lr, lr >= 0.0, "must be finite and ≥ 0")
}

/// What every optimiser offers: its learning rate, read and set (what a scheduler
/// drives), and one update.
pub trait Optimizer {
    /// The learning rate (PyTorch's `param_groups[0]["lr"]`).
    fn lr(&self) -> f64;

    /// Sets the learning rate.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for a negative or non-finite `lr`.
    fn set_lr(&mut self, lr: f64) -> Result<(), LayerError>;

    /// One update of every trainable parameter from its accumulated gradient.
    fn step(&mut self, params: &mut Parameters);
}

/// `lerp(a, b, w)` in PyTorch's formula, which is exact at both ends: `a + w·(b − a)`
/// for `|w| < 0.5`, else `b − (b − a)·(1 − w)`.
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

/// One parameter's Adam state (PyTorch's `state[p]`), created at its first update.
#[derive(Clone, Debug, PartialEq)]
struct AdamState {
    /// Updates done (PyTorch's `step`).
    step: u64,
    /// First moment (`exp_avg`).
    exp_avg: Vec<f32>,
    /// Second moment (`exp_avg_sq`).
    exp_avg_sq: Vec<f32>,
    /// Running maximum of `exp_avg_sq` (`max_exp_avg_sq`), with `amsgrad` only.
    max_exp_avg_sq: Option<Vec<f32>>,
}

/// `torch.optim.Adam`, and `torch.optim.AdamW` through [`Adam::adamw`].
///
/// Per parameter, at step `t` with gradient `g`:
/// `g ← g + wd·p` (L2 decay; AdamW instead scales `p ← p·(1 − lr·wd)`),
/// `m ← lerp(m, g, 1 − β₁)`, `v ← β₂·v + (1 − β₂)·g²`,
/// with `amsgrad` `v̂ ← max(v̂, v)` used in place of `v`,
/// `p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    /// Per parameter, in the order of the [`Parameters`] passed to `step`.
    state: Vec<Option<AdamState>>,
}

impl Adam {
    /// Adam with PyTorch's defaults besides `lr`: betas `(0.9, 0.999)`, eps `1e-8`,
    /// no weight decay.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for a negative or non-finite `lr`.
    pub fn new(lr: f64) -> Result<Self, LayerError> {
        Self::with(lr, (0.9, 0.999), 1e-8, 0.0)
    }

    /// Adam with every hyper-parameter given (`weight_decay` as an L2 term added to
    /// the gradient, PyTorch's `Adam`).
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] naming the argument when `lr`, `eps` or
    /// `weight_decay` is negative or non-finite, or a beta is outside `[0, 1)`.
    pub fn with(
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self, LayerError> {
        check_lr(lr)?;
        let beta =
            |name, b: f64| check_hyper(name, b, (0.0..1.0).contains(&b), "must be in [0, 1)");
        beta("betas.0", betas.0)?;
        beta("betas.1", betas.1)?;
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
            decoupled_weight_decay: false,
            amsgrad: false,
            state: Vec::new(),
        })
    }

    /// `torch.optim.AdamW`: Adam with decoupled weight decay (`p ← p·(1 − lr·wd)`
    /// before the update, instead of `wd·p` in the gradient). PyTorch's default
    /// `weight_decay` for AdamW is `1e-2`.
    ///
    /// # Errors
    /// As [`Adam::with`].
    pub fn adamw(
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self, LayerError> {
        Ok(Self::with(lr, betas, eps, weight_decay)?.decoupled_weight_decay(true))
    }

    /// Uses the AMSGrad variant (PyTorch's `amsgrad=True`): the running maximum of the
    /// second moment in the denominator.
    #[must_use]
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    /// Decouples the weight decay from the gradient (PyTorch's
    /// `decoupled_weight_decay=True`, what `AdamW` is).
    #[must_use]
    pub fn decoupled_weight_decay(mut self, decoupled: bool) -> Self {
        self.decoupled_weight_decay = decoupled;
        self
    }

    /// Updates done on parameter `i` (0 before its first, or while it is frozen).
    pub fn steps_of(&self, i: usize) -> u64 {
        self.state
            .get(i)
            .and_then(Option::as_ref)
            .map_or(0, |s| s.step)
    }
}

impl Optimizer for Adam {
    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<(), LayerError> {
        check_lr(lr)?;
        self.lr = lr;
        Ok(())
    }

    // The f64 → f32 casts round PyTorch's Python-float scalars as its f32 kernels do.
    #[allow(clippy::cast_possible_truncation)]
    fn step(&mut self, params: &mut Parameters) {
        self.state.resize(params.len(), None);
        let (beta1, beta2) = self.betas;
        for (p, state) in params.iter_mut().zip(&mut self.state) {
            if !p.requires_grad() {
                continue;
            }
            let n = p.value().numel();
            let st = state.get_or_insert_with(|| AdamState {
                step: 0,
                exp_avg: alloc::vec![0.0; n],
                exp_avg_sq: alloc::vec![0.0; n],
                max_exp_avg_sq: None,
            });
            if self.amsgrad && st.max_exp_avg_sq.is_none() {
                st.max_exp_avg_sq = Some(alloc::vec![0.0; n]);
            }
            st.step += 1;
            // PyTorch keeps `step` as an f32 tensor and raises betas to it in f64.
            let t = st.step as f32 as f64;
            let bias_correction1 = 1.0 - libm::pow(beta1, t);
            let bias_correction2 = 1.0 - libm::pow(beta2, t);
            let step_size = (self.lr / bias_correction1) as f32;
            let bc2_sqrt = libm::sqrt(bias_correction2) as f32;
            let decay = (1.0 - self.lr * self.weight_decay) as f32;
            let wd = self.weight_decay as f32;
            let (w1, b2, w2, eps) = (
                (1.0 - beta1) as f32,
                beta2 as f32,
                (1.0 - beta2) as f32,
                self.eps as f32,
            );
            let (w, g) = p.value_and_grad_mut();
            for i in 0..n {
                let mut gi = g[i];
                if self.weight_decay != 0.0 {
                    if self.decoupled_weight_decay {
                        w[i] *= decay;
                    } else {
                        gi += wd * w[i];
                    }
                }
                st.exp_avg[i] = lerp(st.exp_avg[i], gi, w1);
                st.exp_avg_sq[i] = st.exp_avg_sq[i] * b2 + w2 * (gi * gi);
                let second = match &mut st.max_exp_avg_sq {
                    Some(max) => {
                        max[i] = max[i].max(st.exp_avg_sq[i]);
                        max[i]
                    }
                    None => st.exp_avg_sq[i],
                };
                let denom = libm::sqrtf(second) / bc2_sqrt + eps;
                w[i] += -step_size * (st.exp_avg[i] / denom);
            }
        }
    }
}

/// `torch.optim.SGD`: `g ← g + wd·p`; with momentum, `buf ← g` at the first step, then
/// `buf ← momentum·buf + (1 − dampening)·g`, and the step direction is `buf` (or
/// `g + momentum·buf` with Nesterov); `p ← p − lr·direction`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    /// Per parameter: the momentum buffer, created at its first update.
    buf: Vec<Option<Vec<f32>>>,
}

impl Sgd {
    /// SGD with a learning rate, momentum and weight decay (no dampening, not Nesterov).
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] naming the argument when one is negative or
    /// non-finite.
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> Result<Self, LayerError> {
        check_lr(lr)?;
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
            dampening: 0.0,
            weight_decay,
            nesterov: false,
            buf: Vec::new(),
        })
    }

    /// Sets the dampening of the momentum buffer's update (PyTorch's `dampening`).
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for a non-finite value, or a non-zero one with
    /// Nesterov momentum (PyTorch refuses it too).
    pub fn dampening(mut self, dampening: f64) -> Result<Self, LayerError> {
        check_hyper("dampening", dampening, true, "must be finite")?;
        if self.nesterov && dampening != 0.0 {
            return Err(LayerError::invalid_argument(
                "dampening",
                dampening,
                "must be 0 with Nesterov momentum",
            ));
        }
        self.dampening = dampening;
        Ok(self)
    }

    /// Uses Nesterov momentum (PyTorch's `nesterov=True`).
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] (`nesterov`) when momentum is 0 or dampening is
    /// not (PyTorch refuses both).
    pub fn nesterov(mut self, nesterov: bool) -> Result<Self, LayerError> {
        if nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(LayerError::invalid_argument(
                "nesterov",
                nesterov,
                alloc::format!(
                    "needs momentum > 0 and dampening 0 (momentum {}, dampening {})",
                    self.momentum,
                    self.dampening
                ),
            ));
        }
        self.nesterov = nesterov;
        Ok(self)
    }
}

impl Optimizer for Sgd {
    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<(), LayerError> {
        check_lr(lr)?;
        self.lr = lr;
        Ok(())
    }

    // The f64 → f32 casts round PyTorch's Python-float scalars as its f32 kernels do.
    #[allow(clippy::cast_possible_truncation)]
    fn step(&mut self, params: &mut Parameters) {
        self.buf.resize(params.len(), None);
        let (wd, momentum) = (self.weight_decay as f32, self.momentum as f32);
        let (keep, lr) = ((1.0 - self.dampening) as f32, self.lr as f32);
        for (p, buf) in params.iter_mut().zip(&mut self.buf) {
            if !p.requires_grad() {
                continue;
            }
            let (w, g) = p.value_and_grad_mut();
            let mut d: Vec<f32> = g.to_vec();
            if self.weight_decay != 0.0 {
                for (di, &wi) in d.iter_mut().zip(w.iter()) {
                    *di += wd * wi;
                }
            }
            if self.momentum != 0.0 {
                match buf {
                    None => *buf = Some(d.clone()),
                    Some(b) => {
                        for (bi, &di) in b.iter_mut().zip(&d) {
                            *bi = *bi * momentum + keep * di;
                        }
                    }
                }
                let b = buf.as_deref().unwrap_or_default();
                if self.nesterov {
                    for (di, &bi) in d.iter_mut().zip(b) {
                        *di += momentum * bi;
                    }
                } else {
                    d.copy_from_slice(b);
                }
            }
            for (wi, &di) in w.iter_mut().zip(&d) {
                *wi += -lr * di;
            }
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_`: the `norm_type`-norm of all trainable parameters'
/// gradients together (the norm of their per-parameter norms), and, when it exceeds
/// `max_norm`, every gradient scaled by `max_norm / (total + 1e-6)`. Returns the total
/// norm before clipping. `norm_type` may be `f64::INFINITY` (the largest magnitude).
/// Frozen parameters take no part, as in PyTorch where their `grad` is `None`.
///
/// # Errors
/// [`LayerError::InvalidArgument`] for a negative or NaN `max_norm`, or a `norm_type`
/// that is not positive.
// The f64 → f32 casts round to PyTorch's f32 norm tensors.
#[allow(clippy::cast_possible_truncation)]
pub fn clip_grad_norm(
    params: &mut Parameters,
    max_norm: f64,
    norm_type: f64,
) -> Result<f32, LayerError> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(LayerError::invalid_argument(
            "max_norm",
            max_norm,
            "must be ≥ 0",
        ));
    }
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(LayerError::invalid_argument(
            "norm_type",
            norm_type,
            "must be > 0 (or infinity)",
        ));
    }
    let trainable = || params.iter().filter(|p| p.requires_grad());
    let norm = |values: &mut dyn Iterator<Item = f64>| -> f64 {
        if norm_type.is_infinite() {
            values.fold(0.0, |m, v| m.max(v.abs()))
        } else {
            libm::pow(
                values.map(|v| libm::pow(v.abs(), norm_type)).sum::<f64>(),
                1.0 / norm_type,
            )
        }
    };
    // Each parameter's norm is an f32 tensor in PyTorch, and so is their norm.
    let per_param: Vec<f64> = trainable()
        .map(|p: &Parameter| norm(&mut p.grad().data().iter().map(|&g| f64::from(g))) as f32 as f64)
        .collect();
    let total = norm(&mut per_param.into_iter()) as f32;
    let coef = (max_norm as f32 / (total + 1e-6)).min(1.0);
    for p in params.iter_mut().filter(|p| p.requires_grad()) {
        for g in p.grad_mut() {
            *g *= coef;
        }
    }
    Ok(total)
}

/// What the schedulers share: the learning rate they started from and the epoch count
/// (PyTorch's `base_lrs[0]` and `last_epoch`, which is 0 after construction).
#[derive(Clone, Debug, PartialEq)]
struct Schedule {
    base_lr: f64,
    last_epoch: u64,
}

impl Schedule {
    fn new(opt: &dyn Optimizer) -> Self {
        Schedule {
            base_lr: opt.lr(),
            last_epoch: 0,
        }
    }
}

/// A learning-rate scheduler: `step` once per epoch, after the optimiser's steps, as
/// in PyTorch.
pub trait LrScheduler {
    /// Advances one epoch and sets the optimiser's learning rate for it.
    ///
    /// # Errors
    /// As [`Optimizer::set_lr`] (a schedule that leaves the finite range).
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<(), LayerError>;

    /// Epochs stepped since construction (PyTorch's `last_epoch`).
    fn last_epoch(&self) -> u64;
}

/// `torch.optim.lr_scheduler.StepLR`: the learning rate is multiplied by `gamma` every
/// `step_size` epochs (PyTorch's recursive form, from the optimiser's current rate).
#[derive(Clone, Debug, PartialEq)]
pub struct StepLR {
    schedule: Schedule,
    step_size: u64,
    gamma: f64,
}

impl StepLR {
    /// A step schedule starting from the optimiser's current learning rate.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for a `step_size` of 0 or a non-finite or
    /// negative `gamma`.
    pub fn new(opt: &dyn Optimizer, step_size: u64, gamma: f64) -> Result<Self, LayerError> {
        if step_size == 0 {
            return Err(LayerError::invalid_argument(
                "step_size",
                step_size,
                "must be ≥ 1",
            ));
        }
        check_hyper("gamma", gamma, gamma >= 0.0, "must be finite and ≥ 0")?;
        Ok(StepLR {
            schedule: Schedule::new(opt),
            step_size,
            gamma,
        })
    }
}

impl LrScheduler for StepLR {
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<(), LayerError> {
        self.schedule.last_epoch += 1;
        if self.schedule.last_epoch.is_multiple_of(self.step_size) {
            opt.set_lr(opt.lr() * self.gamma)?;
        }
        Ok(())
    }

    fn last_epoch(&self) -> u64 {
        self.schedule.last_epoch
    }
}

/// `torch.optim.lr_scheduler.ExponentialLR`: the learning rate is multiplied by `gamma`
/// every epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialLR {
    schedule: Schedule,
    gamma: f64,
}

impl ExponentialLR {
    /// An exponential schedule starting from the optimiser's current learning rate.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for a non-finite or negative `gamma`.
    pub fn new(opt: &dyn Optimizer, gamma: f64) -> Result<Self, LayerError> {
        check_hyper("gamma", gamma, gamma >= 0.0, "must be finite and ≥ 0")?;
        Ok(ExponentialLR {
            schedule: Schedule::new(opt),
            gamma,
        })
    }
}

impl LrScheduler for ExponentialLR {
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<(), LayerError> {
        self.schedule.last_epoch += 1;
        opt.set_lr(opt.lr() * self.gamma)
    }

    fn last_epoch(&self) -> u64 {
        self.schedule.last_epoch
    }
}

/// `torch.optim.lr_scheduler.CosineAnnealingLR`: the learning rate follows
/// `η_min + (η_base − η_min)·(1 + cos(π·t/T_max))/2`, computed as PyTorch does,
/// recursively from the optimiser's current rate (so that a rate set by hand is
/// followed from there), and rising again after `T_max` epochs.
#[derive(Clone, Debug, PartialEq)]
pub struct CosineAnnealingLR {
    schedule: Schedule,
    t_max: u64,
    eta_min: f64,
}

impl CosineAnnealingLR {
    /// A cosine schedule over `t_max` epochs down to `eta_min`, starting from the
    /// optimiser's current learning rate.
    ///
    /// # Errors
    /// [`LayerError::InvalidArgument`] for a `t_max` of 0 or a negative or non-finite
    /// `eta_min`.
    pub fn new(opt: &dyn Optimizer, t_max: u64, eta_min: f64) -> Result<Self, LayerError> {
        if t_max == 0 {
            return Err(LayerError::invalid_argument("t_max", t_max, "must be ≥ 1"));
        }
        check_hyper("eta_min", eta_min, eta_min >= 0.0, "must be finite and ≥ 0")?;
        Ok(CosineAnnealingLR {
            schedule: Schedule::new(opt),
            t_max,
            eta_min,
        })
    }
}

impl LrScheduler for CosineAnnealingLR {
    // Epoch counts are far below 2^53: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<(), LayerError> {
        use core::f64::consts::PI;
        self.schedule.last_epoch += 1;
        let t = self.schedule.last_epoch;
        let (t_max, eta_min, lr) = (self.t_max as f64, self.eta_min, opt.lr());
        let next = if (t - 1 + self.t_max).is_multiple_of(2 * self.t_max) {
            // PyTorch's `(last_epoch − 1 − T_max) % (2·T_max) == 0`: the start of a
            // rising half-period, where the ratio below would divide by 0.
            lr + (self.schedule.base_lr - eta_min) * (1.0 - libm::cos(PI / t_max)) / 2.0
        } else {
            let t = t as f64;
            (1.0 + libm::cos(PI * t / t_max)) / (1.0 + libm::cos(PI * (t - 1.0) / t_max))
                * (lr - eta_min)
                + eta_min
        };
        opt.set_lr(next)
    }

    fn last_epoch(&self) -> u64 {
        self.schedule.last_epoch
    }
}

#[cfg(feature = "std")]
mod saved;
#[cfg(feature = "std")]
pub use saved::OptimizerState;

/// The parameter names an optimiser's state is keyed by.
#[cfg(feature = "std")]
fn names(params: &Parameters) -> Vec<alloc::string::String> {
    params.iter().map(|p| p.name().into()).collect()
}

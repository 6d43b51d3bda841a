//! Training without recording the unrolled loop.
//!
//! PyG records every inner step's gradient (`create_graph = True`) and backpropagates
//! through all of them, so memory grows with `grad_iter × N`. The adjoint mode instead:
//!
//! 1. runs the inner loop with the fused eager engine, keeping only `y_t`, `m_t` and
//!    `g_t` (each `[S, out_channels]`);
//! 2. reverses the steps by hand. With `ȳ = ∂L/∂y_T` and `m̄ = 0`, for `t = T−1 … 0`:
//!    `m̄ += ȳ`; `μ̄ += ⟨m̄, m_{t−1}⟩`; `η̄ −= ⟨m̄, g_t⟩`; `v = −η·m̄`;
//!    `(ȳ, θ̄, x̄) += ∇_{y,θ,x} ⟨∇_y E(y_t), v⟩`; `m̄ ← μ·m̄`;
//! 3. computes the Hessian-vector product `∇⟨∇_y E, v⟩` with the fused engine
//!    ([`super::fused::hvp`]: the potential's part, block by block, no tape; the
//!    regulariser's part is closed form, here).
//!
//! The gradients are PyG's (every second-order term included) and memory stays at the
//! trajectory plus one group of blocks. What it gives up: the result cannot be
//! differentiated a second time (use [`super::InnerGrad::Record`] for that, which is
//! also the reference these gradients are tested against).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use readout_core::{CoreError, CustomBackward, Real, Shape, Tape, Tensor, Var};
use readout_kernels::elementwise::Unary;

use super::fused::forward::{Sorted, Trajectory, solve_sorted, sort_by_set};
use super::fused::hvp::HvpEngine;
use super::fused::net::PotentialNet;
use super::params::{EquilibriumParams, ResNetPotential, Sizes};
use super::workspace::{Cache, Workspace};
use crate::error::LayerError;
use crate::segments::Layout;

const NAME: &str = "EquilibriumAggregation (adjoint)";

/// What the reverse pass needs, kept by the output node.
struct Adjoint<T> {
    sizes: Sizes,
    shapes: Vec<Shape>,
    /// The parameters' values, in `state_dict` order.
    values: Vec<Vec<T>>,
    sorted: Sorted<T>,
    traj: Trajectory<T>,
    /// The layer's workspaces, for the reverse pass's buffers.
    cache: Cache,
}

fn core_error(e: LayerError) -> CoreError {
    match e {
        LayerError::Core(c) => c,
        _ => CoreError::CustomRule {
            op: NAME,
            input: 0,
            why: "could not be computed",
        },
    }
}

fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::ZERO, |s, (&x, &y)| s + x * y)
}

fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Runs the inner loop eagerly and returns the output as a node whose backward rule is
/// the adjoint pass; both take their buffers from `cache`.
pub(crate) fn forward<T: Real>(
    tape: &mut Tape<T>,
    sizes: &Sizes,
    grad_iter: usize,
    params: &EquilibriumParams<Var>,
    x: Var,
    layout: &Layout,
    cache: &Cache,
) -> Result<Var, LayerError> {
    let vars = params.clone().into_list();
    let mut shapes = Vec::with_capacity(vars.len());
    let mut values = Vec::with_capacity(vars.len());
    for &v in &vars {
        let t = tape.value(v)?;
        shapes.push(t.dims());
        values.push(t.data().to_vec());
    }
    let sorted = sort_by_set(tape.value(x)?.data(), sizes.cin, layout);
    let typed = EquilibriumParams::from_list(sizes, values.iter())?;
    let mut traj = cache.with(|ws| solve_sorted(sizes, &typed, grad_iter, &sorted, true, ws));
    let y = traj.ys.last().cloned().unwrap_or_default();
    let sets = sorted.ptr.len() - 1;
    let value = Tensor::from_shape(Shape::d2(sets, sizes.cout), y)?;
    // The output y_T is not needed by the reverse pass.
    traj.ys.pop();
    let mut inputs = vars;
    inputs.push(x);
    let rule = Adjoint {
        sizes: sizes.clone(),
        shapes,
        values,
        sorted,
        traj,
        cache: cache.share(),
    };
    Ok(tape.custom(&inputs, value, Box::new(rule))?)
}

impl<T: Real> CustomBackward<T> for Adjoint<T> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>, CoreError> {
        let reverse = |ws: &mut Workspace<T>| self.reverse(grad.data(), ws);
        self.cache.with(reverse).map_err(core_error)
    }
}

impl<T: Real> Adjoint<T> {
    fn reverse(
        &self,
        ybar_out: &[T],
        ws: &mut Workspace<T>,
    ) -> Result<Vec<Option<Tensor<T>>>, LayerError> {
        let (cin, cout) = (self.sizes.cin, self.sizes.cout);
        let n = self.sorted.set_of.len();
        let sets = self.sorted.ptr.len() - 1;
        let p = EquilibriumParams::from_list(&self.sizes, self.values.iter())?;
        let scalar = |v: &Vec<T>| v.first().copied().unwrap_or(T::ZERO);
        let (lr_raw, mom_raw, lamb_raw) = (
            scalar(p.optimizer.lr),
            scalar(p.optimizer.mom),
            scalar(p.lamb),
        );
        let mut lamb_bar = T::ZERO;
        let eta = Unary::Softplus.apply(lr_raw);
        let mu = Unary::Sigmoid.apply(mom_raw);
        let reg = Unary::Softplus.apply(lamb_raw);
        let inv_sets = if sets > 0 {
            T::ONE / T::from_usize(sets)
        } else {
            T::ZERO
        };

        let mut y_bar = ybar_out.to_vec();
        let mut theta: Vec<Vec<T>> = self.values.iter().map(|v| vec![T::ZERO; v.len()]).collect();
        let mut mbar = vec![T::ZERO; sets * cout];
        let (mut mubar, mut etabar) = (T::ZERO, T::ZERO);
        let two = T::from_f64(2.0);
        let weights = PotentialNet::new(&self.sizes, &p.potential);
        let s = &self.sorted;
        let mut engine = HvpEngine::new(weights, &s.x, &s.set_of, &s.ptr, ws);
        for t in (0..self.traj.gs.len()).rev() {
            // y_{t+1} = y_t + m_t
            axpy(T::ONE, &y_bar, &mut mbar);
            // m_t = μ·m_{t−1} − η·g_t
            if t > 0 {
                mubar += dot(&mbar, &self.traj.ms[t - 1]);
            }
            etabar -= dot(&mbar, &self.traj.gs[t]);
            let v: Vec<T> = mbar.iter().map(|&m| -eta * m).collect();
            // g_t = ∇_y E(y_t): its adjoint is the Hessian-vector product with v. The
            // regulariser's part is closed form: ∇_y = 2·softplus(λ)/S·y.
            let y_t = &self.traj.ys[t];
            axpy(two * reg * inv_sets, &v, &mut y_bar);
            lamb_bar += two * Unary::Sigmoid.apply(lamb_raw) * inv_sets * dot(y_t, &v);
            engine.add_hvp(y_t, &v, &mut y_bar);
            for m in mbar.iter_mut() {
                *m *= mu;
            }
        }
        let (potential, x_sorted) = engine.finish();
        let bars = EquilibriumParams::from_list(&self.sizes, theta.iter_mut())?;
        bars.lamb[0] += lamb_bar;
        bars.optimizer.lr[0] += etabar * Unary::Sigmoid.apply(lr_raw);
        bars.optimizer.mom[0] += mubar * mu * (T::ONE - mu);
        let ResNetPotential {
            blocks,
            out,
            res_trans,
        } = bars.potential;
        let (block_linears, norms): (Vec<_>, Vec<_>) =
            blocks.into_iter().map(|b| (b.linear, b.norm)).collect();
        let linears = block_linears.into_iter().chain(core::iter::once(out));
        for (lin, (gw, gb)) in linears
            .chain(res_trans)
            .zip(potential.linears.iter().chain(&potential.res_trans))
        {
            axpy(T::ONE, gw, lin.weight);
            if let Some(b) = lin.bias {
                axpy(T::ONE, gb, b);
            }
        }
        for (norm, (gw, gb)) in norms.into_iter().zip(&potential.norms) {
            axpy(T::ONE, gw, norm.weight);
            axpy(T::ONE, gb, norm.bias);
        }

        let mut grads = Vec::with_capacity(self.values.len() + 1);
        for (theta, &shape) in theta.into_iter().zip(&self.shapes) {
            grads.push(Some(Tensor::from_shape(shape, theta)?));
        }
        let mut x = vec![T::ZERO; n * cin];
        for (k, &row) in self.sorted.order.iter().enumerate() {
            x[row * cin..(row + 1) * cin].copy_from_slice(&x_sorted[k * cin..(k + 1) * cin]);
        }
        ws.put(x_sorted);
        grads.push(Some(Tensor::from_shape(Shape::d2(n, cin), x)?));
        Ok(grads)
    }
}

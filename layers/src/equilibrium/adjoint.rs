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
//! 3. computes the Hessian-vector product `∇⟨∇_y E, v⟩` on a short tape, one chunk
//!    of [`CHUNK_ROWS`] elements at a time (the energy is a sum over elements plus a
//!    regulariser handled in closed form), and drops each chunk's tape when done.
//!
//! The gradients are PyG's (every second-order term included) and memory stays at one
//! chunk's tape. What it gives up: the result cannot be differentiated a second time
//! (use [`super::InnerGrad::Record`] for that).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use readout_core::{CoreError, CustomBackward, Gradients, Real, Shape, Tape, Tensor, Var};
use readout_kernels::elementwise::Unary;

use super::fused::forward::{Sorted, Trajectory, solve_sorted, sort_by_set};
use super::params::{EquilibriumParams, Sizes};
use super::workspace::Workspace;
use crate::error::LayerError;
use crate::segments::Layout;

/// Elements per Hessian-vector-product tape.
const CHUNK_ROWS: usize = 2048;

/// Threads the chunks are spread over: rayon's current pool, or 1.
fn threads() -> usize {
    #[cfg(feature = "rayon")]
    return rayon::current_num_threads().max(1);
    #[cfg(not(feature = "rayon"))]
    1
}
const NAME: &str = "EquilibriumAggregation (adjoint)";

/// What the reverse pass needs, kept by the output node.
struct Adjoint<T> {
    sizes: Sizes,
    shapes: Vec<Shape>,
    /// The parameters' values, in `state_dict` order.
    values: Vec<Vec<T>>,
    sorted: Sorted<T>,
    traj: Trajectory<T>,
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

/// Gradient accumulators of the reverse pass.
struct Bars<T> {
    y: Vec<T>,
    theta: Vec<Vec<T>>,
    x_sorted: Vec<T>,
}

/// Runs the inner loop eagerly and returns the output as a node whose backward rule is
/// the adjoint pass.
pub(crate) fn forward<T: Real>(
    tape: &mut Tape<T>,
    sizes: &Sizes,
    grad_iter: usize,
    params: &EquilibriumParams<Var>,
    x: Var,
    layout: &Layout,
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
    let mut ws = Workspace::new();
    let typed = EquilibriumParams::from_list(sizes, values.iter())?;
    let mut traj = solve_sorted(sizes, &typed, grad_iter, &sorted, true, &mut ws);
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
    };
    Ok(tape.custom(&inputs, value, Box::new(rule))?)
}

impl<T: Real> CustomBackward<T> for Adjoint<T> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>, CoreError> {
        self.reverse(grad.data()).map_err(core_error)
    }
}

impl<T: Real> Adjoint<T> {
    fn reverse(&self, ybar_out: &[T]) -> Result<Vec<Option<Tensor<T>>>, LayerError> {
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

        let mut bars = Bars {
            y: ybar_out.to_vec(),
            theta: self.values.iter().map(|v| vec![T::ZERO; v.len()]).collect(),
            x_sorted: vec![T::ZERO; n * cin],
        };
        let mut mbar = vec![T::ZERO; sets * cout];
        let (mut mubar, mut etabar) = (T::ZERO, T::ZERO);
        let two = T::from_f64(2.0);
        // One tape per thread for every chunk: cleared between chunks, it hands each
        // one the buffers of the one before instead of allocating them again.
        let mut tapes: Vec<Tape<T>> = (0..threads()).map(|_| Tape::new()).collect();
        for t in (0..self.traj.gs.len()).rev() {
            // y_{t+1} = y_t + m_t
            axpy(T::ONE, &bars.y, &mut mbar);
            // m_t = μ·m_{t−1} − η·g_t
            if t > 0 {
                mubar += dot(&mbar, &self.traj.ms[t - 1]);
            }
            etabar -= dot(&mbar, &self.traj.gs[t]);
            let v: Vec<T> = mbar.iter().map(|&m| -eta * m).collect();
            // g_t = ∇_y E(y_t): its adjoint is the Hessian-vector product with v. The
            // regulariser's part is closed form: ∇_y = 2·softplus(λ)/S·y.
            let y_t = &self.traj.ys[t];
            axpy(two * reg * inv_sets, &v, &mut bars.y);
            lamb_bar += two * Unary::Sigmoid.apply(lamb_raw) * inv_sets * dot(y_t, &v);
            self.hvp_all(&mut tapes, y_t, &v, &mut bars)?;
            for m in mbar.iter_mut() {
                *m *= mu;
            }
        }
        let theta = EquilibriumParams::from_list(&self.sizes, bars.theta.iter_mut())?;
        theta.lamb[0] += lamb_bar;
        theta.optimizer.lr[0] += etabar * Unary::Sigmoid.apply(lr_raw);
        theta.optimizer.mom[0] += mubar * mu * (T::ONE - mu);

        let mut grads = Vec::with_capacity(self.values.len() + 1);
        for (theta, &shape) in bars.theta.into_iter().zip(&self.shapes) {
            grads.push(Some(Tensor::from_shape(shape, theta)?));
        }
        let mut x = vec![T::ZERO; n * cin];
        for (k, &row) in self.sorted.order.iter().enumerate() {
            x[row * cin..(row + 1) * cin].copy_from_slice(&bars.x_sorted[k * cin..(k + 1) * cin]);
        }
        grads.push(Some(Tensor::from_shape(Shape::d2(n, cin), x)?));
        Ok(grads)
    }

    /// Adds `∇_{y,θ,x} Σ_{i ∈ rows} ⟨∇_y F_i/|set(i)|, v⟩` over every element to
    /// `bars`, chunk by chunk. With the `rayon` feature, one chunk per tape of `tapes`
    /// runs at a time on each thread; the chunks' gradients are added in chunk order,
    /// so the result does not depend on the number of threads.
    fn hvp_all(
        &self,
        tapes: &mut [Tape<T>],
        y: &[T],
        v: &[T],
        bars: &mut Bars<T>,
    ) -> Result<(), LayerError> {
        let (cin, cout) = (self.sizes.cin, self.sizes.cout);
        let n = self.sorted.set_of.len();
        let chunks: Vec<(usize, usize)> = (0..n)
            .step_by(CHUNK_ROWS)
            .map(|r0| (r0, (r0 + CHUNK_ROWS).min(n)))
            .collect();
        for group in chunks.chunks(tapes.len().max(1)) {
            #[cfg(feature = "rayon")]
            let parts: Vec<Result<ChunkGrads<T>, LayerError>> = {
                use rayon::prelude::*;
                tapes
                    .par_iter_mut()
                    .zip(group.par_iter())
                    .map(|(tape, &(r0, r1))| self.hvp_chunk(tape, y, v, r0, r1))
                    .collect()
            };
            #[cfg(not(feature = "rayon"))]
            let parts: Vec<Result<ChunkGrads<T>, LayerError>> = tapes
                .iter_mut()
                .zip(group)
                .map(|(tape, &(r0, r1))| self.hvp_chunk(tape, y, v, r0, r1))
                .collect();
            for part in parts {
                part?.add_to(bars, cin, cout);
            }
        }
        Ok(())
    }

    /// `∇_{y,θ,x} Σ_{i ∈ rows} ⟨∇_y F_i/|set(i)|, v⟩` for sorted elements
    /// `r0 .. r1`, computed on `tape` (cleared first).
    fn hvp_chunk(
        &self,
        tape: &mut Tape<T>,
        y: &[T],
        v: &[T],
        r0: usize,
        r1: usize,
    ) -> Result<ChunkGrads<T>, LayerError> {
        let (cin, cout) = (self.sizes.cin, self.sizes.cout);
        let set_of = &self.sorted.set_of[r0..r1];
        let (s_lo, s_hi) = (set_of[0], set_of[set_of.len() - 1]);
        let ns = s_hi - s_lo + 1;
        let rows = r1 - r0;
        tape.clear();
        let vars: Vec<Var> = self
            .values
            .iter()
            .zip(&self.shapes)
            .map(|(v, &s)| Tensor::from_shape(s, v.clone()).map(|t| tape.variable(t)))
            .collect::<Result<_, _>>()?;
        let params = EquilibriumParams::from_list(&self.sizes, vars.iter().copied())?;
        let x = tape.variable(Tensor::from_shape(
            Shape::d2(rows, cin),
            self.sorted.x[r0 * cin..r1 * cin].to_vec(),
        )?);
        let y_c = tape.variable(Tensor::from_shape(
            Shape::d2(ns, cout),
            y[s_lo * cout..(s_hi + 1) * cout].to_vec(),
        )?);
        let layout = Layout::Index {
            index: set_of.iter().map(|&s| s - s_lo).collect(),
            dim_size: ns,
        };
        let weights: Vec<T> = set_of
            .iter()
            .map(|&s| T::ONE / T::from_usize(self.sorted.ptr[s + 1] - self.sorted.ptr[s]))
            .collect();
        let hoisted = params.potential.hoist(tape, x, cin)?;
        let f = params.potential.forward(tape, &hoisted, y_c, &layout)?;
        let w = tape.constant(Tensor::from_shape(Shape::d2(rows, 1), weights)?);
        let fw = tape.mul(f, w)?;
        let e = tape.sum(fw)?;
        let g = tape.grad(e, None, &[y_c], true)?[0];
        let v_c = tape.constant(Tensor::from_shape(
            Shape::d2(ns, cout),
            v[s_lo * cout..(s_hi + 1) * cout].to_vec(),
        )?);
        let gv = tape.mul(g, v_c)?;
        let phi = tape.sum(gv)?;
        Ok(ChunkGrads {
            grads: tape.backward(phi)?,
            vars,
            x,
            y: y_c,
            rows: (r0, r1),
            first_set: s_lo,
        })
    }
}

/// The gradients of one chunk's `⟨∇_y F, v⟩`, to be added to the adjoints.
struct ChunkGrads<T> {
    grads: Gradients<T>,
    /// The parameters' nodes on the chunk's tape.
    vars: Vec<Var>,
    /// The chunk's `x` rows and sets' `y` rows.
    x: Var,
    y: Var,
    /// The chunk's sorted elements `r0 .. r1` and its first set.
    rows: (usize, usize),
    first_set: usize,
}

impl<T: Real> ChunkGrads<T> {
    /// Adds the chunk's gradients to the adjoints (`cin`, `cout`: row widths of `x`, `y`).
    fn add_to(&self, bars: &mut Bars<T>, cin: usize, cout: usize) {
        let g = &self.grads;
        for (theta, &var) in bars.theta.iter_mut().zip(&self.vars) {
            if let Some(gr) = g.get(var) {
                axpy(T::ONE, gr.data(), theta);
            }
        }
        let (r0, r1) = self.rows;
        if let Some(gr) = g.get(self.x) {
            axpy(T::ONE, gr.data(), &mut bars.x_sorted[r0 * cin..r1 * cin]);
        }
        if let Some(gr) = g.get(self.y) {
            let y0 = self.first_set * cout;
            axpy(T::ONE, gr.data(), &mut bars.y[y0..y0 + gr.data().len()]);
        }
    }
}

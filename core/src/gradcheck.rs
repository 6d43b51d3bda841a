//! Gradient checking against central finite differences, in `f64`: the engine's
//! counterpart of `torch.autograd.gradcheck` and `gradgradcheck`.
//!
//! [`check_gradients`] takes a function that builds an output of any shape from input
//! leaves, and checks three things against central differences
//! `(φ(x + h·eᵢ) − φ(x − h·eᵢ)) / 2h`, one input element `i` at a time:
//!
//! 1. **first order, eager** — with a random projection `v` of the output's shape and
//!    `L(x) = Σ y(x)·v`, the gradient [`Tape::grad`] returns with `create_graph =
//!    false` (seed `v`) against the differences of `L`;
//! 2. **first order, recorded** — the same gradient computed with `create_graph =
//!    true` (the rules written as tape ops, not the fused eager kernels) against the
//!    same differences;
//! 3. **second order** — with a random `u` per input and `H(x) = Σᵢ ∇L(x)ᵢ·uᵢ` built
//!    from the recorded gradient, the gradient of `H` from a second [`Tape::grad`]
//!    against the differences of `H`, each `H(x ± h·eᵢ)` evaluated with an eager first
//!    gradient. This is what catches a backward rule that detaches its incoming
//!    gradient or treats its own output as a constant: the first order is then right
//!    and the second silently wrong.
//!
//! [`assert_gradients`] is the same check for tests, panicking with the report;
//! [`GradcheckOptions::max_elements`] checks a random sample of each input's elements
//! when a full check would be slow (a layer's weights).
//!
//! Projections on random vectors keep the cost at one backward pass per check while
//! still exercising every entry of the Jacobian and of the Hessian-vector products
//! (a wrong entry is invisible only for a measure-zero set of `v`, `u`).
//!
//! # Tolerances
//! An element passes when `|analytic − numeric| ≤ atol + rtol·|numeric|`. The defaults
//! (`step = 1e-6`, `atol = 1e-6`, `rtol = 1e-5`) come from the error of a central
//! difference in `f64`: truncation `h²·|φ'''|/6 ≈ 1e-13` for the smooth, `O(1)`-scaled
//! functions the tests use, and rounding `ε·|φ|/h ≈ 2.2e-16·|φ|/1e-6 ≈ 2e-10·|φ|`, so a
//! correct derivative lands within about `1e-8` of the difference even for `|φ|` in
//! the tens (measured over the op tests in `core/tests/gradcheck_ops.rs`: the worst
//! error is below `1e-9`, under a thousandth of the tolerance). `atol = 1e-6` leaves
//! two orders of magnitude above the estimate; `rtol = 1e-5`
//! covers gradients in the hundreds (an `exp` or `1/x` near the edge of its domain).
//! A wrong rule is typically off by `O(1)` — a missing factor 2, a sign, a term
//! dropped by a detached input — which is five orders above the tolerance. These are
//! tighter than PyTorch's (`atol = 1e-5`, `rtol = 1e-3`): the engine's `f64` path
//! computes every op in double precision, so there is no reason to allow more.
//!
//! Keep test points away from kinks (`clamp_min`'s threshold, softplus's switch at 20,
//! `sqrt`/`ln` near 0) by more than `step`, as with any finite-difference check.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::tape::Mark;
use crate::{CoreError, Shape, Tape, Tensor, Var};

/// A tiny, fast, seedable pseudo-random generator (Vigna's splitmix64), for the random
/// projections of [`check_gradients`] and for test inputs. Not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform value in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// A uniform integer in `0 .. n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for test data, no division.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A tensor of the given dimensions with values uniform in `[lo, hi)`.
    ///
    /// # Errors
    /// [`CoreError::RankTooHigh`] for more than three dimensions.
    pub fn tensor(&mut self, dims: &[usize], lo: f64, hi: f64) -> Result<Tensor<f64>, CoreError> {
        let mut t = Tensor::zeros(dims)?;
        for v in t.data_mut() {
            *v = self.uniform(lo, hi);
        }
        Ok(t)
    }

    fn tensor_of(&mut self, shape: Shape) -> Tensor<f64> {
        let mut t = Tensor::filled(shape, 0.0);
        for v in t.data_mut() {
            *v = self.uniform(-1.0, 1.0);
        }
        t
    }
}

/// Settings of [`check_gradients`]; see the [module docs](self) for the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckOptions {
    /// Finite-difference step `h` (default `1e-6`).
    pub step: f64,
    /// Absolute tolerance (default `1e-6`).
    pub atol: f64,
    /// Tolerance relative to the finite difference's magnitude (default `1e-5`).
    pub rtol: f64,
    /// Whether to check second derivatives too (default `true`).
    pub second_order: bool,
    /// Check at most this many elements of each input, picked at random (default
    /// `None`: all). Each checked element costs four evaluations of the function and
    /// two eager backward passes, so large layers check a sample; the analytic
    /// gradients are still computed in full, once.
    pub max_elements: Option<usize>,
    /// Seed of the random projections `v` and `u` (default fixed, so runs repeat).
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            step: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            second_order: true,
            max_elements: None,
            seed: 0x5EED_0F6A_DC4E_C0DE,
        }
    }
}

impl GradcheckOptions {
    /// The largest error allowed against a finite difference `numeric`:
    /// `atol + rtol·|numeric|`.
    pub fn allowed(&self, numeric: f64) -> f64 {
        self.atol + self.rtol * numeric.abs()
    }

    /// Whether `analytic` matches `numeric` within the tolerances (never for a NaN or
    /// an infinity on either side).
    pub fn accepts(&self, analytic: f64, numeric: f64) -> bool {
        analytic.is_finite()
            && numeric.is_finite()
            && (analytic - numeric).abs() <= self.allowed(numeric)
    }

    fn validate(&self) -> Result<(), CoreError> {
        let bad = |arg, value: f64, why| {
            Err(CoreError::InvalidValue {
                op: "check_gradients",
                arg,
                value,
                why,
            })
        };
        if !(self.step > 0.0 && self.step.is_finite()) {
            return bad("step", self.step, "must be finite and > 0");
        }
        if !(self.atol >= 0.0 && self.atol.is_finite()) {
            return bad("atol", self.atol, "must be finite and ≥ 0");
        }
        if !(self.rtol >= 0.0 && self.rtol.is_finite()) {
            return bad("rtol", self.rtol, "must be finite and ≥ 0");
        }
        Ok(())
    }
}

/// Which derivative a comparison is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// First derivative, `create_graph = false` (the eager rules and fused kernels).
    Gradient,
    /// First derivative, `create_graph = true` (the rules recorded as tape ops).
    RecordedGradient,
    /// Second derivative: the gradient of `⟨∇L, u⟩`.
    SecondOrder,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Gradient => "first order (eager)",
            Check::RecordedGradient => "first order (create_graph)",
            Check::SecondOrder => "second order",
        })
    }
}

/// One compared element: the analytic derivative, the finite difference and the
/// tolerance that applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// What was compared.
    pub check: Check,
    /// Which input (position in the `inputs` slice).
    pub input: usize,
    /// Which element of that input, in row-major order.
    pub element: usize,
    /// The derivative from the tape.
    pub analytic: f64,
    /// The central finite difference.
    pub numeric: f64,
    /// `atol + rtol·|numeric|`.
    pub allowed: f64,
}

impl Comparison {
    /// `|analytic − numeric|` (infinite when either is not finite).
    pub fn error(&self) -> f64 {
        if self.analytic.is_finite() && self.numeric.is_finite() {
            (self.analytic - self.numeric).abs()
        } else {
            f64::INFINITY
        }
    }

    /// `error / allowed`: above 1 means a failure.
    pub fn ratio(&self) -> f64 {
        let e = self.error();
        if e == 0.0 { 0.0 } else { e / self.allowed }
    }

    /// Whether the element is within tolerance.
    pub fn passed(&self) -> bool {
        self.error() <= self.allowed
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: input {} element {}: analytic {:.12e}, numeric {:.12e}, error {:.3e} (allowed {:.3e})",
            self.check,
            self.input,
            self.element,
            self.analytic,
            self.numeric,
            self.error(),
            self.allowed
        )
    }
}

/// The outcome of one kind of [`Check`] over every input element.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSummary {
    /// What was compared.
    pub check: Check,
    /// Elements compared.
    pub compared: usize,
    /// Elements out of tolerance.
    pub failures: usize,
    /// The element with the largest `error / allowed`, if any was compared.
    pub worst: Option<Comparison>,
}

impl CheckSummary {
    fn new(check: Check) -> Self {
        CheckSummary {
            check,
            compared: 0,
            failures: 0,
            worst: None,
        }
    }

    fn record(&mut self, c: Comparison) {
        self.compared += 1;
        if !c.passed() {
            self.failures += 1;
        }
        let worse = match &self.worst {
            None => true,
            Some(w) => c.ratio() > w.ratio(),
        };
        if worse {
            self.worst = Some(c);
        }
    }
}

/// What [`check_gradients`] found: one [`CheckSummary`] per [`Check`] performed.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckReport {
    /// The output's shape.
    pub output_shape: Shape,
    /// First order eager, first order recorded, and (when asked for) second order.
    pub checks: Vec<CheckSummary>,
}

impl GradcheckReport {
    /// Whether every compared element is within tolerance.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.failures == 0)
    }

    /// The summary of one kind of check, if it was performed.
    pub fn summary(&self, check: Check) -> Option<&CheckSummary> {
        self.checks.iter().find(|c| c.check == check)
    }

    /// The element with the largest `error / allowed` over all checks.
    pub fn worst(&self) -> Option<Comparison> {
        self.checks.iter().filter_map(|c| c.worst).fold(
            None,
            |acc: Option<Comparison>, c| match acc {
                Some(a) if a.ratio() >= c.ratio() => Some(a),
                _ => Some(c),
            },
        )
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck {} (output {})",
            if self.passed() { "passed" } else { "FAILED" },
            self.output_shape
        )?;
        for c in &self.checks {
            write!(
                f,
                "\n  {}: {} of {} elements out of tolerance",
                c.check, c.failures, c.compared
            )?;
            if let Some(w) = &c.worst {
                write!(f, "; worst {w}")?;
            }
        }
        Ok(())
    }
}

/// Checks the first and second derivatives of `f` against central finite differences.
///
/// `f` builds an output (any shape) on the tape from the leaves it is given, one per
/// entry of `inputs`, in the same order; it is called many times (twice per input
/// element per order, plus the analytic passes) and must compute the same function
/// each time. See the [module docs](self) for what is compared and the tolerances.
///
/// ```
/// use readout_core::gradcheck::{GradcheckOptions, check_gradients};
/// use readout_core::Tensor;
///
/// # fn main() -> Result<(), readout_core::CoreError> {
/// let x = Tensor::from_vec(&[2, 3], vec![0.1, -0.4, 0.9, 1.3, -1.1, 0.2])?;
/// let report = check_gradients(
///     |tape, xs| {
///         let t = tape.tanh(xs[0])?;
///         tape.mul(t, xs[0])
///     },
///     &[x],
///     &GradcheckOptions::default(),
/// )?;
/// assert!(report.passed(), "{report}");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// Any error `f` or the tape returns; [`CoreError::InvalidValue`] for a step or
/// tolerance that is not finite and positive; [`CoreError::ShapeMismatch`] (op
/// `check_gradients`) if `f`'s output changes shape when an input is perturbed.
pub fn check_gradients<F>(
    f: F,
    inputs: &[Tensor<f64>],
    opts: &GradcheckOptions,
) -> Result<GradcheckReport, CoreError>
where
    F: Fn(&mut Tape<f64>, &[Var]) -> Result<Var, CoreError>,
{
    opts.validate()?;
    let mut rng = SplitMix64::new(opts.seed);
    let mut tape = Tape::new();
    let mut probe = Probe {
        f: &f,
        tape: &mut tape,
        out_shape: Shape::SCALAR,
    };

    // The output's shape fixes the projection v.
    let out_shape = probe.output_shape(inputs)?;
    probe.out_shape = out_shape;
    let v = rng.tensor_of(out_shape);
    let us: Vec<Tensor<f64>> = inputs.iter().map(|x| rng.tensor_of(x.dims())).collect();

    let mut first = CheckSummary::new(Check::Gradient);
    let mut recorded = CheckSummary::new(Check::RecordedGradient);
    let mut second = CheckSummary::new(Check::SecondOrder);

    // Analytic first derivatives, eager.
    let eager = probe.eager_gradients(inputs, &v)?;
    // Analytic first (recorded) and second derivatives.
    let (rec, hess_u) = if opts.second_order {
        let (r, h) = probe.recorded_gradients(inputs, &v, &us)?;
        (Some(r), Some(h))
    } else {
        (None, None)
    };

    let mut x: Vec<Tensor<f64>> = inputs.to_vec();
    let h = opts.step;
    for k in 0..inputs.len() {
        for e in pick_elements(&mut rng, inputs[k].numel(), opts.max_elements) {
            let x0 = inputs[k].data()[e];
            x[k].data_mut()[e] = x0 + h;
            let lp = probe.projected(&x, &v)?;
            let hp = match &hess_u {
                Some(_) => probe.grad_projected(&x, &v, &us)?,
                None => 0.0,
            };
            x[k].data_mut()[e] = x0 - h;
            let lm = probe.projected(&x, &v)?;
            let hm = match &hess_u {
                Some(_) => probe.grad_projected(&x, &v, &us)?,
                None => 0.0,
            };
            x[k].data_mut()[e] = x0;

            let numeric = (lp - lm) / (2.0 * h);
            let cmp = |check, analytic: f64, numeric: f64| Comparison {
                check,
                input: k,
                element: e,
                analytic,
                numeric,
                allowed: opts.allowed(numeric),
            };
            first.record(cmp(Check::Gradient, eager[k].data()[e], numeric));
            if let (Some(rec), Some(hu)) = (&rec, &hess_u) {
                recorded.record(cmp(Check::RecordedGradient, rec[k].data()[e], numeric));
                let numeric2 = (hp - hm) / (2.0 * h);
                second.record(cmp(Check::SecondOrder, hu[k].data()[e], numeric2));
            }
        }
    }

    let mut checks = vec![first];
    if opts.second_order {
        checks.push(recorded);
        checks.push(second);
    }
    Ok(GradcheckReport {
        output_shape: out_shape,
        checks,
    })
}

/// Evaluations of the checked function on a scratch tape that is emptied after each.
struct Probe<'a, F> {
    f: &'a F,
    tape: &'a mut Tape<f64>,
    out_shape: Shape,
}

impl<F> Probe<'_, F>
where
    F: Fn(&mut Tape<f64>, &[Var]) -> Result<Var, CoreError>,
{
    /// Runs `body` on a fresh tape holding `xs` as variables and `f`'s output.
    fn with_output<R>(
        &mut self,
        xs: &[Tensor<f64>],
        body: impl FnOnce(&mut Tape<f64>, &[Var], Var) -> Result<R, CoreError>,
    ) -> Result<R, CoreError> {
        self.tape.truncate(Mark(0));
        let leaves: Vec<Var> = xs.iter().map(|x| self.tape.variable(x.clone())).collect();
        let y = (self.f)(self.tape, &leaves)?;
        let r = body(self.tape, &leaves, y);
        self.tape.truncate(Mark(0));
        r
    }

    fn output_shape(&mut self, xs: &[Tensor<f64>]) -> Result<Shape, CoreError> {
        self.with_output(xs, |tape, _, y| Ok(tape.value(y)?.dims()))
    }

    fn check_shape(expected: Shape, got: Shape) -> Result<(), CoreError> {
        if expected == got {
            Ok(())
        } else {
            Err(CoreError::ShapeMismatch {
                op: "check_gradients",
                arg: "output",
                got,
                other: expected,
                why: "the function's output changed shape when an input was perturbed",
            })
        }
    }

    /// `L(x) = Σ y(x)·v`, in plain `f64`.
    fn projected(&mut self, xs: &[Tensor<f64>], v: &Tensor<f64>) -> Result<f64, CoreError> {
        let expected = self.out_shape;
        self.with_output(xs, |tape, _, y| {
            let yv = tape.value(y)?;
            Self::check_shape(expected, yv.dims())?;
            Ok(dot(yv.data(), v.data()))
        })
    }

    /// `∇L(x)` with `create_graph = false`.
    fn eager_gradients(
        &mut self,
        xs: &[Tensor<f64>],
        v: &Tensor<f64>,
    ) -> Result<Vec<Tensor<f64>>, CoreError> {
        let expected = self.out_shape;
        self.with_output(xs, |tape, leaves, y| {
            Self::check_shape(expected, tape.value(y)?.dims())?;
            let seed = tape.constant(v.clone());
            let gs = tape.grad(y, Some(seed), leaves, false)?;
            gs.iter().map(|&g| Ok(tape.value(g)?.clone())).collect()
        })
    }

    /// `H(x) = Σᵢ ∇L(x)ᵢ·uᵢ`, the first gradient computed eagerly.
    fn grad_projected(
        &mut self,
        xs: &[Tensor<f64>],
        v: &Tensor<f64>,
        us: &[Tensor<f64>],
    ) -> Result<f64, CoreError> {
        let gs = self.eager_gradients(xs, v)?;
        Ok(gs
            .iter()
            .zip(us)
            .map(|(g, u)| dot(g.data(), u.data()))
            .sum())
    }

    /// `∇L(x)` with `create_graph = true`, and `∇H(x)` through it.
    #[allow(clippy::type_complexity)]
    fn recorded_gradients(
        &mut self,
        xs: &[Tensor<f64>],
        v: &Tensor<f64>,
        us: &[Tensor<f64>],
    ) -> Result<(Vec<Tensor<f64>>, Vec<Tensor<f64>>), CoreError> {
        let expected = self.out_shape;
        self.with_output(xs, |tape, leaves, y| {
            Self::check_shape(expected, tape.value(y)?.dims())?;
            let seed = tape.constant(v.clone());
            let gs = tape.grad(y, Some(seed), leaves, true)?;
            let first: Vec<Tensor<f64>> = gs
                .iter()
                .map(|&g| Ok(tape.value(g)?.clone()))
                .collect::<Result<_, CoreError>>()?;
            let mut h = tape.scalar(0.0);
            for (&g, u) in gs.iter().zip(us) {
                let uc = tape.constant(u.clone());
                let gu = tape.mul(g, uc)?;
                let s = tape.sum(gu)?;
                h = tape.add(h, s)?;
            }
            let hs = tape.grad(h, None, leaves, false)?;
            let second = hs
                .iter()
                .map(|&g| Ok(tape.value(g)?.clone()))
                .collect::<Result<_, CoreError>>()?;
            Ok((first, second))
        })
    }
}

/// Which elements of an input with `n` elements to check: all, or `max` of them drawn
/// without replacement, in increasing order.
fn pick_elements(rng: &mut SplitMix64, n: usize, max: Option<usize>) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    match max {
        Some(m) if m < n => {
            // A partial Fisher–Yates shuffle.
            for i in 0..m {
                let j = i + rng.below(n - i);
                all.swap(i, j);
            }
            all.truncate(m);
            all.sort_unstable();
            all
        }
        _ => all,
    }
}

/// [`check_gradients`] that panics with the report when a derivative is out of
/// tolerance: for tests.
///
/// # Panics
/// If the check fails, or `f` or the tape returns an error; the message names the
/// check, the input and the element with the largest error.
#[track_caller]
pub fn assert_gradients<F>(f: F, inputs: &[Tensor<f64>], opts: &GradcheckOptions)
where
    F: Fn(&mut Tape<f64>, &[Var]) -> Result<Var, CoreError>,
{
    match check_gradients(f, inputs, opts) {
        Ok(report) => assert!(report.passed(), "{report}"),
        Err(e) => panic!("gradient check could not run: {e}"),
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x0() -> Tensor<f64> {
        Tensor::from_vec(&[2, 3], alloc::vec![0.3, -0.7, 1.1, 0.5, -1.4, 0.9]).unwrap()
    }

    #[test]
    fn a_correct_function_passes_with_a_wide_margin() {
        let r = check_gradients(
            |t, x| {
                let s = t.sigmoid(x[0])?;
                let e = t.exp(s)?;
                t.mul(e, x[0])
            },
            &[x0()],
            &GradcheckOptions::default(),
        )
        .unwrap();
        assert!(r.passed(), "{r}");
        assert_eq!(r.checks.len(), 3);
        // Far inside the tolerance: the defaults are not loose enough to hide errors
        // a hundred times smaller than the tolerance.
        let worst = r.worst().unwrap();
        assert!(worst.ratio() < 0.05, "{r}");
    }

    /// `x · stop_gradient(x)`: the value is `x²`, the tape's gradient `x` instead of `2x`.
    #[test]
    fn a_wrong_first_derivative_is_caught() {
        let r = check_gradients(
            |t, x| {
                let d = t.constant(t.value(x[0])?.clone());
                t.mul(x[0], d)
            },
            &[x0()],
            &GradcheckOptions::default(),
        )
        .unwrap();
        assert!(!r.passed());
        let s = r.summary(Check::Gradient).unwrap();
        assert_eq!(s.failures, 6, "{r}");
        let w = s.worst.unwrap();
        // analytic x, numeric 2x.
        let xv = x0().data()[w.element];
        assert!(
            (w.analytic - xv * w.numeric / (2.0 * xv)).abs() < 1e-6,
            "{w}"
        );
    }

    /// `(x − d)·d² + d³/3` with `d = stop_gradient(x)`: the value is `x³/3` and the first
    /// derivative `d² = x²` is right, but the recorded gradient `d²` is a constant, so
    /// the second derivative comes out 0 instead of `2x` — the bug of an engine that
    /// detaches inside its backward rules. Only the second-order check sees it.
    /// `(x − d)·d² + d³/3` with `d = stop_gradient(x)`: the value is `x³/3` and the first
    /// derivative `d² = x²` is right, but the recorded gradient `d²` is a constant, so
    /// the second derivative comes out 0 instead of `2x` — the bug of an engine that
    /// detaches inside its backward rules. Only the second-order check sees it.
    fn detached_cube(t: &mut Tape<f64>, x: &[Var]) -> Result<Var, CoreError> {
        let d = t.constant(t.value(x[0])?.clone());
        let xd = t.sub(x[0], d)?;
        let d2 = t.square(d)?;
        let a = t.mul(xd, d2)?;
        let d3 = t.powf(d, 3.0)?;
        let b = t.scale(d3, 1.0 / 3.0)?;
        t.add(a, b)
    }

    #[test]
    fn a_right_first_but_wrong_second_derivative_is_caught() {
        let r = check_gradients(detached_cube, &[x0()], &GradcheckOptions::default()).unwrap();
        assert!(!r.passed(), "{r}");
        assert_eq!(r.summary(Check::Gradient).unwrap().failures, 0, "{r}");
        assert_eq!(
            r.summary(Check::RecordedGradient).unwrap().failures,
            0,
            "{r}"
        );
        assert_eq!(r.summary(Check::SecondOrder).unwrap().failures, 6, "{r}");
        let w = r.worst().unwrap();
        assert_eq!(w.check, Check::SecondOrder);
        assert_eq!(w.analytic, 0.0);
        let text = alloc::format!("{r}");
        assert!(
            text.contains("FAILED") && text.contains("second order"),
            "{text}"
        );
    }

    #[test]
    fn without_second_order_only_the_eager_gradient_is_checked() {
        let opts = GradcheckOptions {
            second_order: false,
            ..GradcheckOptions::default()
        };
        let r = check_gradients(|t, x| t.tanh(x[0]), &[x0()], &opts).unwrap();
        assert!(r.passed());
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.checks[0].check, Check::Gradient);
        assert_eq!(r.checks[0].compared, 6);
    }

    #[test]
    fn a_sample_of_elements_is_checked_when_asked() {
        let opts = GradcheckOptions {
            max_elements: Some(4),
            ..GradcheckOptions::default()
        };
        let big = SplitMix64::new(3).tensor(&[5, 7], -1.0, 1.0).unwrap();
        let small = SplitMix64::new(4).tensor(&[7], -1.0, 1.0).unwrap();
        let r = check_gradients(
            |t, x| {
                let y = t.tanh(x[0])?;
                t.mul(y, x[1])
            },
            &[big, small],
            &opts,
        )
        .unwrap();
        assert!(r.passed(), "{r}");
        // 4 of the 35, and 4 of the 7 of the small input.
        assert!(r.checks.iter().all(|c| c.compared == 8), "{r}");
        let mut rng = SplitMix64::new(9);
        let picked = pick_elements(&mut rng, 35, Some(6));
        assert_eq!(picked.len(), 6);
        assert!(picked.windows(2).all(|w| w[0] < w[1]) && picked[5] < 35);
        assert_eq!(pick_elements(&mut rng, 3, Some(6)), [0, 1, 2]);
    }

    #[test]
    #[should_panic(expected = "second order")]
    fn assert_gradients_panics_with_the_report() {
        assert_gradients(detached_cube, &[x0()], &GradcheckOptions::default());
    }

    #[test]
    fn assert_gradients_accepts_a_correct_function() {
        assert_gradients(
            |t, x| t.softplus(x[0]),
            &[x0()],
            &GradcheckOptions::default(),
        );
    }

    #[test]
    fn tolerances_reject_perturbed_values() {
        let o = GradcheckOptions::default();
        for exact in [0.0, 1e-3, 1.0, -3.7, 250.0] {
            assert!(o.accepts(exact, exact));
            assert!(o.accepts(exact + 0.5 * o.allowed(exact), exact));
            // Twice the tolerance, on either side: caught.
            assert!(!o.accepts(exact * (1.0 + 2e-5) + 2e-6, exact), "{exact}");
            assert!(
                !o.accepts(exact - 2e-5 * exact.abs() - 2e-6, exact),
                "{exact}"
            );
        }
        assert!(!o.accepts(f64::NAN, 1.0));
        assert!(!o.accepts(1.0, f64::NAN));
        assert!(!o.accepts(f64::INFINITY, f64::INFINITY));
    }

    #[test]
    fn bad_options_and_shape_changes_are_errors() {
        for opts in [
            GradcheckOptions {
                step: 0.0,
                ..GradcheckOptions::default()
            },
            GradcheckOptions {
                atol: f64::NAN,
                ..GradcheckOptions::default()
            },
            GradcheckOptions {
                rtol: -1.0,
                ..GradcheckOptions::default()
            },
        ] {
            let e = check_gradients(|t, x| t.tanh(x[0]), &[x0()], &opts).unwrap_err();
            assert!(matches!(
                e,
                CoreError::InvalidValue {
                    op: "check_gradients",
                    ..
                }
            ));
        }
        // An output whose shape depends on the input's values.
        let e = check_gradients(
            |t, x| {
                if t.value(x[0])?.data()[0] > 0.3 {
                    t.sum(x[0])
                } else {
                    Ok(x[0])
                }
            },
            &[x0()],
            &GradcheckOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CoreError::ShapeMismatch {
                    op: "check_gradients",
                    ..
                }
            ),
            "{e}"
        );
        // Errors of the function itself come through.
        let e = check_gradients(
            |t, x| t.matmul(x[0], x[0]),
            &[x0()],
            &GradcheckOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, CoreError::ShapeMismatch { op: "matmul", .. }));
    }

    #[test]
    fn splitmix64_is_deterministic_and_in_range() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.uniform(-2.0, 3.0);
            assert_eq!(u, b.uniform(-2.0, 3.0));
            assert!((-2.0..3.0).contains(&u));
            let k = a.below(5);
            assert_eq!(k, b.below(5));
            assert!(k < 5);
        }
        assert_eq!(a.below(0), 0);
        // The published first output of splitmix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let t = SplitMix64::new(1).tensor(&[2, 3], 0.0, 1.0).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert!(t.data().iter().all(|v| (0.0..1.0).contains(v)));
    }
}

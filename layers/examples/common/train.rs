//! Training and evaluation scaffolding shared by the examples: one optimiser step over
//! parameter groups bound on a tape, summary statistics over seeds or samples, and the
//! CPU time of the calling thread.

// Each example uses only part of this module.
#![allow(dead_code)]

use readout_core::Gradients;
use readout_layers::{Adam, Bound, Parameters};

/// Parameters bound on a tape for one step, with the optimiser that updates them.
pub struct Group<'a> {
    /// The parameters (their `grad` collects the step's gradients).
    pub params: &'a mut Parameters,
    /// Where they sit on the tape ([`Parameters::bind`]).
    pub bound: &'a Bound,
    /// Their optimiser.
    pub adam: &'a mut Adam,
}

/// The end of a training step: every group adds its gradients from `grads`, takes one
/// optimiser step and clears its gradients for the next step.
pub fn optimiser_step(groups: Vec<Group<'_>>, grads: &Gradients<f32>) {
    for g in groups {
        g.params.accumulate(g.bound, grads);
        g.adam.step(g.params);
        g.params.zero_grad();
    }
}

/// Mean and sample standard deviation (`n − 1` in the denominator; 0 for one value,
/// NaN for none).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// Standard error of the mean of `values`: their sample standard deviation over
/// `√n` (NaN for fewer than two values).
pub fn standard_error(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return f64::NAN;
    }
    mean_std(values).1 / (values.len() as f64).sqrt()
}

/// CPU time of the calling thread, in seconds, from `/proc/thread-self/stat` (Linux;
/// `None` elsewhere). Unlike wall time it does not grow when other processes share the
/// cores, so it says what a quiet machine would take.
pub fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // utime is field 14, stime field 15 (in clock ticks, USER_HZ = 100).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

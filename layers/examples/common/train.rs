//! Training and evaluation scaffolding shared by the examples: one optimiser step over
//! parameter groups bound on a tape, summary statistics over seeds or samples, and the
//! CPU time of the calling thread.

// Each example uses only part of this module.
#![allow(dead_code)]

use readout_core::Gradients;
use readout_layers::{Adam, Bound, Optimizer, Parameters};

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

/// An exponential moving average of parameter values (Polyak averaging), the weights
/// a model is evaluated with: the last iterate of a stochastic optimiser wanders
/// around the minimum by an amount set by the learning rate and the batch noise; the
/// average sits nearer its middle. The decay after `t` updates is
/// `min(max_decay, (1 + t)/(10 + t))`, so the first steps are not tied to the
/// initial weights.
pub struct Average {
    /// Per group, per parameter: the averaged values.
    values: Vec<Vec<Vec<f32>>>,
    updates: usize,
    max_decay: f32,
}

impl Average {
    /// Starts at the current values of `groups`.
    pub fn new(groups: &[&Parameters], max_decay: f32) -> Self {
        let values = groups
            .iter()
            .map(|g| g.iter().map(|p| p.value().data().to_vec()).collect())
            .collect();
        Average {
            values,
            updates: 0,
            max_decay,
        }
    }

    /// Moves the average towards the current values of `groups` (the same groups, in
    /// the same order, as at [`Average::new`]).
    pub fn update(&mut self, groups: &[&Parameters]) {
        self.updates += 1;
        let t = self.updates as f32;
        let decay = self.max_decay.min((1.0 + t) / (10.0 + t));
        for (avg_group, g) in self.values.iter_mut().zip(groups) {
            for (avg, p) in avg_group.iter_mut().zip(g.iter()) {
                for (a, &v) in avg.iter_mut().zip(p.value().data()) {
                    *a = decay * *a + (1.0 - decay) * v;
                }
            }
        }
    }

    /// Writes the averaged values into `groups` (a copy of the model being averaged).
    pub fn write_into(&self, groups: Vec<&mut Parameters>) {
        for (avg_group, g) in self.values.iter().zip(groups) {
            for (avg, p) in avg_group.iter().zip(g.iter_mut()) {
                p.value_mut().copy_from_slice(avg);
            }
        }
    }
}

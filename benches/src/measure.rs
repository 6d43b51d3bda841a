//! Timing a call (warm-up, then repeated runs within a time budget) and probing a
//! workload on a fraction of its rows to predict its time and memory before the full run.

use std::time::Instant;

use readout_layers::LayerError;

use crate::alloc;
use crate::case::{Prepared, Spec};
use crate::workload::Mode;

/// How long to time one entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// One untimed call first.
    pub warmup: bool,
    /// At least this many timed calls, whatever the time.
    pub min_runs: usize,
    /// At most this many.
    pub max_runs: usize,
    /// Stop starting new calls once this many seconds of timed calls have passed (and
    /// `min_runs` are done).
    pub seconds: f64,
}

/// Times of the timed calls and the peak allocation of any of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// Wall time of each timed call, in seconds, in call order.
    pub times: Vec<f64>,
    /// The most bytes allocated at once during one call, above what was live before it
    /// (0 unless the binary installs [`crate::alloc::CountingAlloc`]).
    pub peak_bytes: usize,
}

impl Measured {
    /// Median wall time in milliseconds (mean of the middle two for an even count).
    pub fn median_ms(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        if n == 0 {
            return f64::NAN;
        }
        let m = if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        };
        m * 1e3
    }

    /// Fastest call in milliseconds.
    pub fn min_ms(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min) * 1e3
    }

    /// Number of timed calls.
    pub fn runs(&self) -> usize {
        self.times.len()
    }
}

/// Times `call` within `budget`, tracking the peak allocation of each call.
///
/// # Errors
/// The first error `call` returns.
pub fn measure<E>(budget: Budget, mut call: impl FnMut() -> Result<f64, E>) -> Result<Measured, E> {
    if budget.warmup {
        std::hint::black_box(call()?);
    }
    let mut times = Vec::new();
    let mut peak = 0;
    let start = Instant::now();
    while times.len() < budget.min_runs.max(1)
        || (times.len() < budget.max_runs && start.elapsed().as_secs_f64() < budget.seconds)
    {
        let base = alloc::reset_peak();
        let t0 = Instant::now();
        std::hint::black_box(call()?);
        times.push(t0.elapsed().as_secs_f64());
        peak = peak.max(alloc::peak_since(base));
    }
    Ok(Measured {
        times,
        peak_bytes: peak,
    })
}

/// A prediction of one full call from a call on a fraction of the workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// The fraction of the rows the probe ran on (1: the probe was the full workload).
    pub fraction: f64,
    /// The probe's wall time, seconds.
    pub probe_seconds: f64,
    /// The probe's peak allocation, bytes.
    pub probe_bytes: usize,
    /// The part of the peak that does not grow with the rows, bytes, when a second
    /// probe measured it (see [`probe_within`]); 0 otherwise.
    pub fixed_bytes: usize,
}

impl Estimate {
    /// Predicted seconds of one full call: the probe's, scaled linearly by the rows.
    pub fn seconds(&self) -> f64 {
        self.probe_seconds / self.fraction
    }

    /// Predicted peak bytes of one full call: the probe's growing part scaled
    /// linearly by the rows, plus its fixed part (every tensor of both layers is
    /// `rows ×` a width that does not change with the fraction, except buffers of a
    /// fixed number of rows, like the adjoint pass's chunks).
    pub fn bytes(&self) -> f64 {
        let fixed = self.fixed_bytes.min(self.probe_bytes) as f64;
        fixed + (self.probe_bytes as f64 - fixed) / self.fraction
    }

    /// Whether the probe ran the whole workload (so the estimate is a measurement).
    pub fn exact(&self) -> bool {
        self.fraction >= 1.0
    }
}

/// Runs `mode` once on about `max_rows` rows of the workload (all of it when it is
/// smaller) and extrapolates. Call it in the thread pool the entry will use.
///
/// # Errors
/// [`LayerError`] from building or running the scaled workload.
pub fn probe(spec: &Spec, mode: Mode, max_rows: usize) -> Result<Estimate, LayerError> {
    let wanted = (max_rows as f64 / spec.rows().max(1) as f64).min(1.0);
    let (small, fraction) = spec.scaled(wanted);
    let mut prepared = Prepared::new(&small)?;
    let base = alloc::reset_peak();
    let t0 = Instant::now();
    std::hint::black_box(prepared.run(mode)?);
    let probe_seconds = t0.elapsed().as_secs_f64();
    Ok(Estimate {
        fraction,
        probe_seconds,
        probe_bytes: alloc::peak_since(base),
        fixed_bytes: 0,
    })
}

/// Rows of the first probe call.
pub const FIRST_PROBE_ROWS: usize = 2_000;
/// Longest a probe call may be predicted to take before it is run, seconds.
pub const MAX_PROBE_SECONDS: f64 = 2.0;

/// Probes on a ladder of sizes: [`FIRST_PROBE_ROWS`] rows, then ten times more while
/// the previous probe predicts that the next one fits in a quarter of the memory limit
/// and [`MAX_PROBE_SECONDS`] (and the per-call limit). The last probe's extrapolation
/// is returned: a small first probe keeps an oversized workload from being run at a
/// size that already exhausts the machine, and the larger ones make the prediction of
/// the others more accurate (caches). A ladder that reaches the full size returns an
/// exact measurement.
///
/// # Errors
/// [`LayerError`] from building or running a scaled workload.
pub fn probe_within(spec: &Spec, mode: Mode, limits: &Limits) -> Result<Estimate, LayerError> {
    let mut rows = FIRST_PROBE_ROWS;
    let mut est = probe(spec, mode, rows)?;
    while !est.exact() {
        let next = rows.saturating_mul(10);
        let f_next = (next as f64 / spec.rows().max(1) as f64).min(1.0);
        let fits = est.bytes() * f_next <= limits.max_bytes / 4.0
            && est.seconds() * f_next <= MAX_PROBE_SECONDS.min(limits.max_call_seconds);
        if !fits {
            break;
        }
        rows = next;
        est = probe(spec, mode, rows)?;
    }
    if !est.exact() {
        // A second point at twice the rows (half when that would take too long)
        // separates the fixed part of the memory from the part that grows with the
        // rows: a straight line through both.
        let twice = est.seconds() * (2.0 * est.fraction).min(1.0)
            <= MAX_PROBE_SECONDS.min(limits.max_call_seconds);
        let other = probe(spec, mode, if twice { 2 * rows } else { rows / 2 })?;
        let (lo, hi) = if twice {
            (&est, &other)
        } else {
            (&other, &est)
        };
        let df = hi.fraction - lo.fraction;
        if df > 0.0 {
            let slope = (hi.probe_bytes as f64 - lo.probe_bytes as f64) / df;
            let fixed = hi.probe_bytes as f64 - slope.max(0.0) * hi.fraction;
            let fixed_bytes = fixed.clamp(0.0, hi.probe_bytes as f64) as usize;
            est = Estimate {
                fixed_bytes,
                ..hi.clone()
            };
        }
    }
    Ok(est)
}

/// Limits an entry must fit in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Largest predicted peak allocation allowed, bytes.
    pub max_bytes: f64,
    /// Longest predicted single call allowed, seconds.
    pub max_call_seconds: f64,
}

/// Why an entry is skipped, or `None` when it fits the limits.
pub fn skip_reason(est: &Estimate, limits: &Limits) -> Option<String> {
    let how = if est.exact() {
        "measured".to_owned()
    } else {
        format!(
            "extrapolated from {:.1} MiB, {:.3} s at {:.0}% of the rows",
            est.probe_bytes as f64 / MIB,
            est.probe_seconds,
            est.fraction * 100.0
        )
    };
    if est.bytes() > limits.max_bytes {
        return Some(format!(
            "needs ~{:.1} GiB ({how}) > memory limit {:.1} GiB",
            est.bytes() / GIB,
            limits.max_bytes / GIB
        ));
    }
    if est.seconds() > limits.max_call_seconds {
        return Some(format!(
            "one call takes ~{:.1} s ({how}) > time limit {:.0} s per call",
            est.seconds(),
            limits.max_call_seconds
        ));
    }
    None
}

/// Bytes in a MiB.
pub const MIB: f64 = 1024.0 * 1024.0;
/// Bytes in a GiB.
pub const GIB: f64 = 1024.0 * MIB;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let m = Measured {
            times: vec![0.003, 0.001, 0.002, 0.010],
            peak_bytes: 0,
        };
        assert!((m.median_ms() - 2.5).abs() < 1e-12);
        assert!((m.min_ms() - 1.0).abs() < 1e-12);
        assert_eq!(m.runs(), 4);
        let odd = Measured {
            times: vec![0.003, 0.001, 0.002],
            peak_bytes: 0,
        };
        assert!((odd.median_ms() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn budget_is_honoured() {
        let mut calls = 0;
        let b = Budget {
            warmup: true,
            min_runs: 3,
            max_runs: 5,
            seconds: 10.0,
        };
        let m = measure::<()>(b, || {
            calls += 1;
            Ok(0.0)
        })
        .unwrap();
        assert_eq!((m.runs(), calls), (5, 6));
        let quick = Budget {
            warmup: false,
            min_runs: 2,
            max_runs: 50,
            seconds: 0.0,
        };
        assert_eq!(measure::<()>(quick, || Ok(0.0)).unwrap().runs(), 2);
        assert_eq!(measure(quick, || Err::<f64, _>("x")), Err("x"));
    }

    #[test]
    fn skipping() {
        let est = Estimate {
            fraction: 0.1,
            probe_seconds: 2.0,
            probe_bytes: 2 << 30,
            fixed_bytes: 0,
        };
        assert!((est.bytes() - 20.0 * GIB).abs() < 1.0);
        // 1 GiB of it fixed: 1 + 10 · 1 GiB.
        let fixed = Estimate {
            fixed_bytes: 1 << 30,
            ..est.clone()
        };
        assert!((fixed.bytes() - 11.0 * GIB).abs() < 1.0);
        let roomy = Limits {
            max_bytes: 30.0 * GIB,
            max_call_seconds: 60.0,
        };
        assert_eq!(skip_reason(&est, &roomy), None);
        let tight = Limits {
            max_bytes: 8.0 * GIB,
            ..roomy
        };
        let why = skip_reason(&est, &tight).unwrap();
        assert!(
            why.contains("20.0 GiB") && why.contains("10% of the rows"),
            "{why}"
        );
        let short = Limits {
            max_call_seconds: 5.0,
            ..roomy
        };
        assert!(skip_reason(&est, &short).unwrap().contains("~20.0 s"));
    }
}

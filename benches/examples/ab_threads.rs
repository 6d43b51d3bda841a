//! 1 thread against 2 (or any two counts), interleaved: for tuning the thread-split
//! thresholds of the fused engines on a machine that others share.
//!
//! ```text
//! cargo run --release -p readout-benches --example ab_threads -- [--rounds R] [--ms M] NAME[:MODE] ...
//! ```
//!
//! `NAME` is a workload of `workloads.json`, a MemPooling shape of the criterion
//! benches (`mp_odd_channels`, …) or an equilibrium shape written out as
//! `eq:IN:OUT:H1-H2-..:ITERS:N:S` (an empty hidden list is `-`), or a GEMM
//! `gemm:M:K:N`; `MODE` is `infer` or
//! `train` (both if left out). Each of `R` rounds (default 9) runs a batch of calls of
//! about `M` ms (default 60) in a pool of each thread count, the order of the two
//! swapped every round, so that a burst of load from elsewhere hits both about
//! equally. It prints the median of all calls per count and the median of the rounds'
//! ratios `t(2)/t(1)` (below 1: two threads are faster).

use std::time::Instant;

use readout_benches::case::{Prepared, Spec, all_specs, extra_mp_specs};
use readout_benches::pool;
use readout_benches::workload::{EqSpec, Mode, Workloads};
use readout_kernels::gemm::{GemmShape, gemm};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// `eq:IN:OUT:H1-H2:ITERS:N:S`.
fn parse_eq(s: &str) -> Result<Spec, String> {
    let f: Vec<&str> = s.split(':').collect();
    let num = |i: usize| -> Result<usize, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{s}: field {i} is not a count"))
    };
    if f.len() != 7 {
        return Err(format!("{s}: expected eq:IN:OUT:H1-H2:ITERS:N:S"));
    }
    let hidden = if f[3] == "-" {
        Vec::new()
    } else {
        f[3].split('-')
            .map(|h| h.parse().map_err(|_| format!("{s}: bad hidden size {h}")))
            .collect::<Result<_, _>>()?
    };
    Ok(Spec::Eq(EqSpec {
        name: s.to_owned(),
        in_channels: num(1)?,
        out_channels: num(2)?,
        num_layers: hidden,
        grad_iter: num(4)?,
        num_elements: num(5)?,
        num_sets: num(6)?,
    }))
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut rounds, mut batch_ms, mut counts) = (9usize, 60.0f64, [1usize, 2]);
    let mut targets = Vec::new();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--rounds" => rounds = value("--rounds")?.parse().map_err(|e| format!("{e}"))?,
            "--ms" => batch_ms = value("--ms")?.parse().map_err(|e| format!("{e}"))?,
            "--threads" => {
                let v = value("--threads")?;
                let (a, b) = v.split_once(',').ok_or("--threads A,B")?;
                counts = [
                    a.parse().map_err(|e| format!("{e}"))?,
                    b.parse().map_err(|e| format!("{e}"))?,
                ];
            }
            _ => targets.push(a),
        }
    }
    let mut known = all_specs(&Workloads::shipped()?);
    known.extend(extra_mp_specs());
    let pools = [pool(counts[0])?, pool(counts[1])?];
    println!(
        "{:<34} {:<6} {:>10} {:>10} {:>7} {:>6}",
        "shape",
        "mode",
        format!("ms({})", counts[0]),
        format!("ms({})", counts[1]),
        "ratio",
        "calls"
    );
    for t in targets {
        let (name, modes) = match t.rsplit_once(':') {
            Some((n, "infer")) => (n.to_owned(), vec![Mode::Infer]),
            Some((n, "train")) => (n.to_owned(), vec![Mode::Train]),
            _ => (t.clone(), Mode::ALL.to_vec()),
        };
        if let Some(dims) = name.strip_prefix("gemm:") {
            let d: Vec<usize> = dims
                .split(':')
                .map(|v| v.parse().map_err(|_| format!("{name}: gemm:M:K:N")))
                .collect::<Result<_, _>>()?;
            let [m, k, n] = d[..] else {
                return Err(format!("{name}: gemm:M:K:N"));
            };
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 8.0 - 0.75).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 11) as f32 / 8.0 - 0.6).collect();
            let mut c = vec![0.0f32; m * n];
            let sh = GemmShape::new(m, n, k);
            let mut call = || -> Result<f64, String> {
                gemm(&sh, 1.0, &a, &b, 0.0, &mut c);
                Ok(f64::from(c[0]))
            };
            ab(&name, "-", &pools, rounds, batch_ms, &mut call)?;
            continue;
        }
        let spec = if name.starts_with("eq:") {
            parse_eq(&name)?
        } else {
            known
                .iter()
                .find(|s| s.name() == name)
                .cloned()
                .ok_or(format!("unknown shape {name}"))?
        };
        let mut prepared = Prepared::new(&spec).map_err(|e| format!("{e}"))?;
        for mode in modes {
            let mut call = || prepared.run(mode).map_err(|e| format!("{e}"));
            ab(
                spec.name(),
                mode.name(),
                &pools,
                rounds,
                batch_ms,
                &mut call,
            )?;
        }
    }
    Ok(())
}

/// Times `call` in both pools, interleaved, and prints one line.
fn ab(
    shape: &str,
    mode: &str,
    pools: &[rayon::ThreadPool; 2],
    rounds: usize,
    batch_ms: f64,
    call: &mut (dyn FnMut() -> Result<f64, String> + Send),
) -> Result<(), String> {
    // Warm-up, and the batch size from one call's time.
    let start = Instant::now();
    for p in pools {
        p.install(&mut *call)?;
    }
    let once = start.elapsed().as_secs_f64() * 500.0;
    let calls = ((batch_ms / once.max(1e-6)) as usize).clamp(1, 1000);
    let mut times = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let mut round = [0.0; 2];
        for k in 0..2 {
            let i = if r % 2 == 0 { k } else { 1 - k };
            let mut batch = Vec::with_capacity(calls);
            pools[i].install(|| -> Result<(), String> {
                for _ in 0..calls {
                    let t0 = Instant::now();
                    std::hint::black_box(call()?);
                    batch.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                Ok(())
            })?;
            times[i].extend_from_slice(&batch);
            round[i] = median(&mut batch);
        }
        ratios.push(round[1] / round[0]);
    }
    let total = times[0].len();
    println!(
        "{:<34} {:<6} {:>10.3} {:>10.3} {:>7.3} {:>6}",
        shape,
        mode,
        median(&mut times[0]),
        median(&mut times[1]),
        median(&mut ratios),
        total
    );
    Ok(())
}

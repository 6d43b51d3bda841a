//! Times the reference workloads and the kernels issue's GEMM shapes.
//!
//! ```text
//! cargo run --release -p readout-benches --bin report -- [--quick] [--threads 1,2]
//!     [--only NAME,...] [--modes infer,train] [--json FILE] [--max-gib G]
//! ```
//!
//! For each workload × mode (`infer`, `train`) × thread count: probe calls on a
//! fraction of the rows (`readout_benches::measure::probe_within`) predict the full call's time and memory (linear in the rows);
//! an entry predicted over the memory limit or the per-call time limit is skipped with
//! the reason printed. Otherwise: a warm-up call, then timed calls until the time
//! budget is spent (at least 3), and the table gives the median and minimum, the peak
//! bytes allocated during one call (a counting global allocator), the FLOPs of the
//! computation as implemented (`readout_benches::flops`) and the achieved GFLOP/s as a
//! fraction of `threads × 117 GFLOP/s`.
//!
//! `--only gemm` runs the GEMM shapes only; `--only eq_small,gemm` both. `--modes train`
//! runs the training calls only (what a profiler attached to the process should see).

// `LayerError` is large; it only travels the cold path of a failed benchmark, once.
#![allow(clippy::result_large_err)]

use std::process::ExitCode;

use readout_benches::alloc::{self, CountingAlloc};
use readout_benches::case::{Prepared, Spec, all_specs};
use readout_benches::machine::{self, PEAK_GFLOPS_PER_CORE};
use readout_benches::measure::{self, Budget, Estimate, GIB, Limits, MIB, Measured};
use readout_benches::{GEMM_SHAPES, Mode, Workloads, flops, pool};
use readout_kernels::gemm::{GemmShape, gemm};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const USAGE: &str =
    "usage: report [--quick] [--threads 1,2] [--only NAME,...] [--modes infer,train]
              [--json FILE] [--max-gib G]

  --quick          short budgets; skips calls predicted over 8 s and stops starting
                   entries after 150 s (under 3 minutes in all)
  --threads LIST   thread counts (default 1,2)
  --only LIST      workload names of benches/workloads.json, and/or `gemm`
  --modes LIST     layer modes to run: infer, train or both (default infer,train)
  --json FILE      write {\"results\": [...]} to FILE
  --max-gib G      memory limit per call in GiB (default: half of MemAvailable)";

struct Options {
    quick: bool,
    threads: Vec<usize>,
    only: Option<Vec<String>>,
    modes: Vec<Mode>,
    json: Option<String>,
    max_gib: Option<f64>,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        threads: vec![1, 2],
        only: None,
        modes: Mode::ALL.to_vec(),
        json: None,
        max_gib: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--threads" => {
                let v = value("--threads")?;
                o.threads = v
                    .split(',')
                    .map(|t| match t.trim().parse::<usize>() {
                        Ok(n) if (1..=256).contains(&n) => Ok(n),
                        _ => Err(format!("--threads: {t:?} is not a count in 1..=256")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--only" => {
                let v = value("--only")?;
                o.only = Some(v.split(',').map(|s| s.trim().to_owned()).collect());
            }
            "--modes" => {
                let v = value("--modes")?;
                o.modes = v
                    .split(',')
                    .map(|m| {
                        Mode::ALL
                            .into_iter()
                            .find(|mode| mode.name() == m.trim())
                            .ok_or_else(|| format!("--modes: {m:?} is not infer or train"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--json" => o.json = Some(value("--json")?),
            "--max-gib" => {
                let v = value("--max-gib")?;
                match v.parse::<f64>() {
                    Ok(g) if g.is_finite() && g > 0.0 => o.max_gib = Some(g),
                    _ => return Err(format!("--max-gib: {v:?} is not a positive number")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// One line of the results.
enum Row {
    Layer {
        workload: String,
        mode: Mode,
        threads: usize,
        m: Measured,
        gflop: f64,
    },
    Gemm {
        shape: String,
        threads: usize,
        m: Measured,
        gflop: f64,
    },
}

/// A JSON number, or `null` for a non-finite value (JSON has no NaN or infinity).
fn json_num(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The `--json` document: `{"results": [...]}`, one object per row.
fn to_json(rows: &[Row]) -> String {
    use serde_json::json;
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| match r {
            Row::Layer {
                workload,
                mode,
                threads,
                m,
                gflop,
            } => json!({
                "workload": workload,
                "mode": mode.name(),
                "threads": threads,
                "median_ms": json_num(m.median_ms()),
                "min_ms": json_num(m.min_ms()),
                "runs": m.runs(),
                "peak_bytes": m.peak_bytes,
                "gflop": json_num(*gflop),
            }),
            Row::Gemm {
                shape,
                threads,
                m,
                gflop,
            } => json!({
                "kernel": "gemm",
                "shape": shape,
                "threads": threads,
                "median_ms": json_num(m.median_ms()),
                "gflops": json_num(gflop / (m.median_ms() * 1e-3)),
            }),
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&json!({ "results": items }))
        .expect("a tree of JSON values always serialises");
    text.push('\n');
    text
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (days to civil date: the proleptic
/// Gregorian calendar in 400-year eras).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn print_header() {
    println!(
        "{:<12} {:<14} {:>3} {:>10} {:>10} {:>4} {:>9} {:>9} {:>8} {:>6}",
        "workload",
        "mode",
        "thr",
        "median ms",
        "min ms",
        "runs",
        "peak MiB",
        "GFLOP",
        "GFLOP/s",
        "%peak"
    );
}

fn print_row(
    name: &str,
    mode: &str,
    threads: usize,
    m: &Measured,
    gflop: f64,
    peak: Option<usize>,
) {
    let rate = gflop / (m.median_ms() * 1e-3);
    let frac = rate / (threads as f64 * PEAK_GFLOPS_PER_CORE);
    let peak = peak.map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / MIB));
    println!(
        "{:<12} {:<14} {:>3} {:>10} {:>10} {:>4} {:>9} {:>9.4} {:>8.2} {:>5.1}%",
        name,
        mode,
        threads,
        fmt_ms(m.median_ms()),
        fmt_ms(m.min_ms()),
        m.runs(),
        peak,
        gflop,
        rate,
        frac * 100.0
    );
}

/// `--quick`: the longest predicted call that is still run, seconds.
const QUICK_CALL_SECONDS: f64 = 8.0;
/// `--quick`: no new layer entry starts after this many seconds.
const QUICK_TOTAL_SECONDS: f64 = 150.0;

fn budget(quick: bool, est: &Estimate) -> Budget {
    if quick {
        Budget {
            warmup: est.seconds() < 0.5,
            min_runs: if est.seconds() < 1.0 { 3 } else { 1 },
            max_runs: 20,
            seconds: 0.4,
        }
    } else {
        Budget {
            warmup: est.seconds() < 30.0,
            min_runs: 3,
            max_runs: 50,
            seconds: 3.0,
        }
    }
}

fn run_gemm(opts: &Options, rows: &mut Vec<Row>) -> Result<(), String> {
    println!("\nGEMM C[M×N] = A[M×K]·B[K×N], shape M×K×N");
    print_header();
    let b = Budget {
        warmup: true,
        min_runs: 3,
        max_runs: if opts.quick { 20 } else { 200 },
        seconds: if opts.quick { 0.2 } else { 1.0 },
    };
    for (m, k, n) in GEMM_SHAPES {
        let sh = GemmShape::new(m, n, k);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let bm: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
            .collect();
        let mut c = vec![0.0f32; m * n];
        let shape = format!("{m}x{k}x{n}");
        let gflop = flops::gemm(m, k, n) * 1e-9;
        for &t in &opts.threads {
            let p = pool(t)?;
            // The timing loop runs inside the pool: entering it per call would cost as
            // much as the smallest shapes.
            let meas = p
                .install(|| {
                    measure::measure::<()>(b, || {
                        gemm(&sh, 1.0, &a, &bm, 0.0, &mut c);
                        Ok(f64::from(c[0]))
                    })
                })
                .map_err(|()| "gemm failed".to_owned())?;
            print_row("gemm", &shape, t, &meas, gflop, None);
            rows.push(Row::Gemm {
                shape: shape.clone(),
                threads: t,
                m: meas,
                gflop,
            });
        }
    }
    Ok(())
}

fn run_layers(
    opts: &Options,
    specs: &[Spec],
    limits: &Limits,
    started: std::time::Instant,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    print_header();
    for spec in specs {
        println!("# {}: {}", spec.name(), spec.describe());
        for &mode in &opts.modes {
            let spent = started.elapsed().as_secs_f64();
            if opts.quick && spent > QUICK_TOTAL_SECONDS {
                println!(
                    "{:<12} {:<14}     skipped: --quick has spent its {QUICK_TOTAL_SECONDS:.0} s ({spent:.0} s)",
                    spec.name(),
                    mode.name()
                );
                continue;
            }
            let gflop = spec.flops(mode).gflop();
            let first = pool(opts.threads[0])?;
            let est = first
                .install(|| measure::probe_within(spec, mode, limits))
                .map_err(|e| format!("{} {}: {e}", spec.name(), mode.name()))?;
            if let Some(why) = measure::skip_reason(&est, limits) {
                println!("{:<12} {:<14}     skipped: {why}", spec.name(), mode.name());
                continue;
            }
            let mut prepared = Prepared::new(spec).map_err(|e| format!("{}: {e}", spec.name()))?;
            for &t in &opts.threads {
                let p = pool(t)?;
                let meas = p
                    .install(|| measure::measure(budget(opts.quick, &est), || prepared.run(mode)))
                    .map_err(|e| format!("{} {}: {e}", spec.name(), mode.name()))?;
                print_row(
                    spec.name(),
                    mode.name(),
                    t,
                    &meas,
                    gflop,
                    Some(meas.peak_bytes),
                );
                rows.push(Row::Layer {
                    workload: spec.name().to_owned(),
                    mode,
                    threads: t,
                    m: meas,
                    gflop,
                });
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("report: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let workloads = Workloads::shipped()?;
    let specs = all_specs(&workloads);
    let names = workloads.names();
    if let Some(only) = &opts.only {
        for n in only {
            if n != "gemm" && !names.contains(&n.as_str()) {
                return Err(format!(
                    "--only: unknown name {n:?} (known: {}, gemm)",
                    names.join(", ")
                ));
            }
        }
    }
    let wanted = |n: &str| opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    let specs: Vec<Spec> = specs.into_iter().filter(|s| wanted(s.name())).collect();

    let avail = machine::mem_available_bytes();
    let max_bytes = match (opts.max_gib, avail) {
        (Some(g), _) => g * GIB,
        (None, Some(a)) => a as f64 * 0.5,
        (None, None) => 4.0 * GIB,
    };
    let limits = Limits {
        max_bytes,
        max_call_seconds: if opts.quick {
            QUICK_CALL_SECONDS
        } else {
            300.0
        },
    };
    let started = std::time::Instant::now();
    println!("readout report — {}", utc_now());
    println!(
        "{} ({} logical CPUs), kernel path {:?}, rayon {}",
        machine::cpu_model(),
        machine::cpus(),
        readout_kernels::dispatch::active(),
        if cfg!(feature = "rayon") {
            "on"
        } else {
            "off (thread counts have no effect)"
        }
    );
    println!(
        "load average at start: {}; memory limit {:.1} GiB{}; {}",
        machine::load_average_text(),
        max_bytes / GIB,
        avail.map_or(String::new(), |a| format!(
            " (MemAvailable {:.1} GiB)",
            a as f64 / GIB
        )),
        if opts.quick {
            "--quick: short budgets, calls over 8 s skipped"
        } else {
            "full budgets"
        }
    );
    println!(
        "peak = {PEAK_GFLOPS_PER_CORE} GFLOP/s fp32 per core × threads; live heap before the runs {:.1} MiB",
        alloc::live_bytes() as f64 / MIB
    );
    let mut rows = Vec::new();
    if !specs.is_empty() {
        run_layers(opts, &specs, &limits, started, &mut rows)?;
    }
    if wanted("gemm") {
        run_gemm(opts, &mut rows)?;
    }
    println!(
        "\nload average at end: {}; total {:.0} s",
        machine::load_average_text(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &opts.json {
        std::fs::write(path, to_json(&rows)).map_err(|e| format!("writing {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measured {
        Measured {
            times: vec![0.002, 0.001, 0.003],
            peak_bytes: 1234,
        }
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let rows = vec![
            Row::Layer {
                workload: "eq_small".into(),
                mode: Mode::Train,
                threads: 2,
                m: measured(),
                gflop: 0.5,
            },
            Row::Gemm {
                shape: "512x512x512".into(),
                threads: 1,
                m: measured(),
                gflop: 0.268_435_456,
            },
        ];
        let text = to_json(&rows);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&doc), ["results"]);
        let results = doc["results"].as_array().unwrap();
        let mut layer_keys = [
            "workload",
            "mode",
            "threads",
            "median_ms",
            "min_ms",
            "runs",
            "peak_bytes",
            "gflop",
        ];
        layer_keys.sort_unstable();
        assert_eq!(keys(&results[0]), layer_keys);
        let mut gemm_keys = ["kernel", "shape", "threads", "median_ms", "gflops"];
        gemm_keys.sort_unstable();
        assert_eq!(keys(&results[1]), gemm_keys);
        let r = &results[0];
        assert_eq!(r["workload"], "eq_small");
        assert_eq!(r["mode"], "train");
        assert_eq!(r["threads"], 2);
        assert_eq!(r["median_ms"].as_f64(), Some(2.0));
        assert_eq!(r["min_ms"].as_f64(), Some(1.0));
        assert_eq!(r["runs"], 3);
        assert_eq!(r["peak_bytes"], 1234);
        let g = results[1]["gflops"].as_f64().unwrap();
        assert!((g - 134.217_728).abs() < 1e-9, "{g}");
        assert_eq!(json_num(f64::NAN), serde_json::Value::Null);
        assert_eq!(json_num(f64::INFINITY), serde_json::Value::Null);
    }

    #[test]
    fn arguments() {
        let args = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = args(&[
            "--quick",
            "--threads",
            "1,2,4",
            "--only",
            "eq_small,gemm",
            "--json",
            "f",
        ])
        .unwrap();
        assert!(o.quick);
        assert_eq!(o.threads, [1, 2, 4]);
        assert_eq!(o.only.unwrap(), ["eq_small", "gemm"]);
        assert_eq!(o.json.as_deref(), Some("f"));
        assert_eq!(args(&[]).unwrap().threads, [1, 2]);
        assert!(args(&["--threads", "0"]).is_err());
        assert_eq!(args(&[]).unwrap().modes, Mode::ALL);
        assert_eq!(args(&["--modes", "train"]).unwrap().modes, [Mode::Train]);
        assert!(args(&["--modes", "backward"]).is_err());
        assert!(args(&["--threads"]).is_err());
        assert!(args(&["--max-gib", "-1"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(utc_now().ends_with(" UTC"));
    }
}

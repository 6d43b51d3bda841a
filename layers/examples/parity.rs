//! The parity tool: does readout compute what PyG computes?
//!
//! ```text
//! cargo run --release -p readout-layers --example parity -- [--out DIR] FILE_OR_DIR...
//! ```
//!
//! Runs every PyG reference case (format: `layers/tests/data/README.md`) through
//! readout in `f32` and prints one line per case: `ok` or `FAIL` at 1e-4, the worst
//! error over the results the case holds (forward output, and the loss and every
//! gradient when present), the tensor where it occurs, and what was compared. The
//! logic lives in `readout_layers::parity`; this is its command line.

use std::path::PathBuf;
use std::process::ExitCode;

use readout_layers::Case;
use readout_layers::parity::{self, Precision, TOLERANCE};

const HELP: &str = "\
parity: compare readout with PyG on reference cases

USAGE:
    cargo run --release -p readout-layers --example parity -- [OPTIONS] FILE_OR_DIR...

Each FILE is one case in the format of layers/tests/data/README.md (a .safetensors
file holding the layer's PyG parameters, inputs, loss weights and PyG's results); a
DIR stands for every *.safetensors file directly in it. For each case the layer is
built from __metadata__ and the param.* tensors, the forward call described by
input.* and __metadata__.forward is run and, when the case holds expect.loss or
expect.grad.* tensors, the loss __metadata__.loss names is formed and its gradient
with respect to every parameter and input.x is computed. Every expect.* tensor the
case holds is compared; results it does not hold (a forward-only case's gradients,
kl_loss of a case written without it) are skipped and named. Two lines are printed
per case: ok or FAIL, the worst error (max |got - expect| / max(1, max |expect|), per
tensor) and where it occurs, and PyG's own float32 error for context; then what was
compared. A case with nothing to compare cannot be run.

OPTIONS:
    --out DIR     also write DIR/<case file name> holding our results as F32 tensors
                  named like the case's expect.* entries without the prefix (out,
                  loss, grad.<key>, grad.input.x; for MemPooling also S, kl_loss)
    --tol X       pass/fail threshold (default 1e-4)
    --f64         compute in f64 instead of f32 (errors should be ~1e-12)
    --forward-only
                  compare the forward outputs only, even when the case holds the
                  loss and gradients (no loss weights needed)
    -v, --verbose print every tensor's error under its case's line
    -h, --help    print this help

EXIT STATUS:
    0 when every case passes; 1 when a case fails or cannot be read or run;
    2 for a usage error.
";

struct Options {
    out: Option<PathBuf>,
    tol: f64,
    precision: Precision,
    forward_only: bool,
    verbose: bool,
    paths: Vec<PathBuf>,
}

fn parse_args() -> Result<Option<Options>, String> {
    let mut opts = Options {
        out: None,
        tol: TOLERANCE,
        precision: Precision::F32,
        forward_only: false,
        verbose: false,
        paths: Vec::new(),
    };
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--out") => {
                let dir = args.next().ok_or("--out needs a directory")?;
                opts.out = Some(PathBuf::from(dir));
            }
            Some("--tol") => {
                let v = args.next().ok_or("--tol needs a number")?;
                let v = v.to_string_lossy();
                opts.tol = v
                    .parse::<f64>()
                    .ok()
                    .filter(|t| *t >= 0.0)
                    .ok_or_else(|| format!("--tol {v}: not a non-negative number"))?;
            }
            Some("--f64") => opts.precision = Precision::F64,
            Some("--forward-only") => opts.forward_only = true,
            Some("-v" | "--verbose") => opts.verbose = true,
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s}"));
            }
            _ => opts.paths.push(PathBuf::from(arg)),
        }
    }
    if opts.paths.is_empty() {
        return Err("no case file or directory given".into());
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("parity: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &opts.out
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("parity: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let files = match parity::case_files(&opts.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("parity: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut ok, mut failed, mut broken) = (0usize, 0usize, 0usize);
    for file in &files {
        let shown = file.display();
        let report = match Case::from_file(file) {
            Ok(case) if opts.forward_only => parity::run_case_forward_only(&case, opts.precision),
            Ok(case) => parity::run_case_with(&case, opts.precision),
            Err(e) => Err(e),
        };
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                println!("ERROR {shown}: cannot run: {e}");
                broken += 1;
                continue;
            }
        };
        println!(
            "{:<5} {shown}  {}",
            report.status(opts.tol),
            report.summary()
        );
        println!("      {}", report.coverage());
        if opts.verbose {
            for e in &report.errors {
                println!("        {:.2e}  {}", e.error, e.location());
            }
            println!(
                "        tape: {} nodes after the recorded forward",
                report.tape_nodes
            );
        }
        if report.passed(opts.tol) {
            ok += 1;
        } else {
            failed += 1;
        }
        if let Some(dir) = &opts.out {
            let name = file.file_name().map(PathBuf::from).unwrap_or_default();
            if let Err(e) = report.write(dir.join(name)) {
                println!("ERROR {shown}: cannot write results: {e}");
                broken += 1;
            }
        }
    }
    println!(
        "{} case(s): {ok} ok, {failed} FAIL, {broken} could not be run (tolerance {:e}, {})",
        files.len(),
        opts.tol,
        match opts.precision {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    );
    if failed == 0 && broken == 0 && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

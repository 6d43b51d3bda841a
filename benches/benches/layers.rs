//! Criterion benches of both layers on every reference workload × mode at 1 and 2
//! threads: `cargo bench -p readout-benches --bench layers` (add `-- NAME` to filter,
//! e.g. `-- eq_small/train`, and `--noplot` to save time).
//!
//! Bench ids are `WORKLOAD/MODE/Nt`: the reference workloads of `workloads.json`, then
//! the extra MemPooling shapes of `readout_benches::case::EXTRA_MP` (criterion only). Each workload × mode is first probed on a fraction
//! of its rows (`readout_benches::measure::probe_within`, about a second for the
//! largest); an entry predicted over half the available memory or over
//! [`MAX_CALL_SECONDS`] per call is skipped with the reason on stderr (the `report`
//! tool times those with fewer runs). Slow entries get criterion's minimum of 10
//! samples in flat sampling mode and a measurement time of about 12 calls, so the
//! whole bench stays in minutes, not hours.
//!
//! Besides the reference workloads, a few `EquilibriumAggregation` training shapes of
//! the benches' own ([`extra_equilibrium_shapes`], ids `eqx_*`, not in
//! `workloads.json` and not in the report): odd widths, three hidden layers with
//! `grad_iter` 7, thousands of tiny sets, one large set, a width of 100, no hidden
//! layer.
//!
//! The counting allocator is installed here too: the probe's memory prediction needs
//! it (it costs two relaxed atomic adds per allocation, for every bench alike).

// `LayerError` is large; it only travels the cold path of a failed benchmark, once.
#![allow(clippy::result_large_err)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use readout_benches::alloc::CountingAlloc;
use readout_benches::case::{Prepared, Spec, all_specs, extra_mp_specs};
use readout_benches::machine;
use readout_benches::measure::{self, GIB, Limits};
use readout_benches::workload::EqSpec;
use readout_benches::{Mode, Workloads, pool};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Entries whose single call is predicted to take longer are skipped.
const MAX_CALL_SECONDS: f64 = 20.0;
const THREADS: [usize; 2] = [1, 2];

fn bench_layers(c: &mut Criterion) {
    let workloads = Workloads::shipped().expect("the shipped workloads.json parses");
    let limits = Limits {
        max_bytes: machine::mem_available_bytes().map_or(4.0 * GIB, |a| a as f64 * 0.5),
        max_call_seconds: MAX_CALL_SECONDS,
    };
    let pools: Vec<_> = THREADS
        .iter()
        .map(|&t| (t, pool(t).expect("a rayon pool")))
        .collect();
    let mut specs = all_specs(&workloads);
    specs.extend(extra_equilibrium_shapes().into_iter().map(Spec::Eq));
    specs.extend(extra_mp_specs());
    for spec in specs {
        for mode in Mode::ALL {
            let id = format!("{}/{}", spec.name(), mode.name());
            let est = pools[0]
                .1
                .install(|| measure::probe_within(&spec, mode, &limits))
                .unwrap_or_else(|e| panic!("{id}: {e}"));
            if let Some(why) = measure::skip_reason(&est, &limits) {
                eprintln!("{id}: skipped: {why}");
                continue;
            }
            let mut prepared = Prepared::new(&spec).unwrap_or_else(|e| panic!("{id}: {e}"));
            let mut g = c.benchmark_group(&id);
            let call = est.seconds();
            if call > 0.02 {
                g.sample_size(10)
                    .sampling_mode(SamplingMode::Flat)
                    .warm_up_time(Duration::from_secs_f64((2.0 * call).max(1.0)))
                    .measurement_time(Duration::from_secs_f64((12.0 * call).max(2.0)));
            } else {
                g.sample_size(30);
            }
            for (t, p) in &pools {
                g.bench_function(format!("{t}t"), |b| {
                    p.install(|| b.iter(|| black_box(prepared.run(mode).expect("a layer call"))))
                });
            }
            g.finish();
        }
    }
}

/// Shapes beyond the four reference workloads, where a fused engine tuned for them
/// could still be slow: `(name, in, out, hidden, grad_iter, elements, sets)`.
fn extra_equilibrium_shapes() -> Vec<EqSpec> {
    let eq = |name: &str, (cin, cout): (usize, usize), hidden: &[usize], iters, n, sets| EqSpec {
        name: name.to_string(),
        in_channels: cin,
        out_channels: cout,
        num_layers: hidden.to_vec(),
        grad_iter: iters,
        num_elements: n,
        num_sets: sets,
    };
    vec![
        eq("eqx_odd_widths", (7, 9), &[17, 33], 5, 5_000, 250),
        eq("eqx_deep_iter7", (16, 16), &[32, 32, 32], 7, 2_000, 100),
        eq("eqx_tiny_sets", (16, 16), &[32, 32], 5, 6_000, 3_000),
        eq("eqx_one_large_set", (16, 16), &[64, 64], 5, 50_000, 1),
        eq("eqx_width_100", (9, 100), &[100], 3, 4_000, 200),
        eq("eqx_no_hidden", (32, 32), &[], 10, 20_000, 1_000),
    ]
}

criterion_group!(benches, bench_layers);
criterion_main!(benches);

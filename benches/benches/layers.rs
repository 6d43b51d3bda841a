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
//! The counting allocator is installed here too: the probe's memory prediction needs
//! it (it costs two relaxed atomic adds per allocation, for every bench alike).

// `LayerError` is large; it only travels the cold path of a failed benchmark, once.
#![allow(clippy::result_large_err)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use readout_benches::alloc::CountingAlloc;
use readout_benches::case::{Prepared, all_specs, extra_mp_specs};
use readout_benches::machine;
use readout_benches::measure::{self, GIB, Limits};
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
    for spec in all_specs(&workloads).into_iter().chain(extra_mp_specs()) {
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

criterion_group!(benches, bench_layers);
criterion_main!(benches);

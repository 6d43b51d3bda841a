//! Benchmarks for readout: the reference workloads, shared by the criterion benches
//! (`cargo bench -p readout-benches --bench layers`), the `report` tool
//! (`cargo run --release -p readout-benches --bin report -- --help`) and the tests.
//!
//! - [`workload`]: `benches/workloads.json` (the shared definition the PyG side reads
//!   too) and its size rules;
//! - [`case`]: a workload's layer, inputs and one `infer` / `train` call;
//! - [`flops`]: the documented FLOP count of each call;
//! - [`measure`]: timing, and probing a fraction of a workload to predict its memory
//!   and time before running it;
//! - [`alloc`]: the counting allocator behind "peak bytes";
//! - [`machine`]: load average, free memory, the assumed per-core peak.
//!
//! ```
//! use readout_benches::{Mode, Prepared, Workloads, all_specs};
//!
//! // Run the smallest EquilibriumAggregation workload once in each mode.
//! let workloads = Workloads::parse(readout_benches::workload::WORKLOADS_JSON).unwrap();
//! let spec = all_specs(&workloads).into_iter().find(|s| s.name() == "eq_median").unwrap();
//! let mut prepared = Prepared::new(&spec).unwrap();
//! let out = prepared.run(Mode::Infer).unwrap();
//! let loss = prepared.run(Mode::Train).unwrap();
//! assert!(out.is_finite() && loss.is_finite());
//! ```
#![warn(missing_docs)]
// `LayerError` is large; here it only travels the cold path of a failed benchmark, once.
#![allow(clippy::result_large_err)]

pub mod alloc;
pub mod case;
pub mod flops;
pub mod inputs;
pub mod machine;
pub mod measure;
pub mod workload;

pub use case::{Prepared, Spec, all_specs};
pub use workload::{Mode, Workloads};

/// The GEMM shapes of the kernels issue, `(M, K, N)`: `C[M×N] = A[M×K]·B[K×N]`.
pub const GEMM_SHAPES: [(usize, usize, usize); 8] = [
    (1024, 16, 16),
    (1024, 64, 64),
    (16384, 32, 32),
    (16384, 128, 128),
    (65536, 64, 64),
    (4096, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
];

/// A rayon pool of `threads` workers, inside which a timed call runs (the kernels'
/// GEMM splits its rows over the current pool).
///
/// # Errors
/// rayon's message if the pool cannot be built.
pub fn pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("a rayon pool of {threads} threads: {e}"))
}

//! Benchmarks for readout.
//!
//! This crate holds no library code of its own yet. It will hold the criterion
//! benches of the kernels and of both layers (`cargo bench -p readout-benches`) and the
//! `report` tool that times the reference workloads of `workloads.json`.

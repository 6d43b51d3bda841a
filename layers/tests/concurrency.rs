//! One layer shared by several threads: every thread calls `forward` on the same
//! `&layer` at once, with inputs of mixed sizes, and every result is bit for bit the
//! one a single thread computes; nothing deadlocks.
//!
//! EquilibriumAggregation keeps its inference workspace behind a lock and a call that
//! finds it taken works in buffers of its own; MemPooling's inference and both layers'
//! tape forward hold no shared state. The threads run inside a watchdog: the whole
//! scope runs on a spawned thread that reports through a channel, and the test fails if
//! no report arrives within [`TIMEOUT`] (a deadlock, or a thread stuck waiting).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use readout_core::{Tape, Tensor};
use readout_layers::PygWeights;
use readout_layers::{EquilibriumAggregation, InnerGrad, MemPooling, PoolArgs, Segments};

/// Threads calling the layer at once.
const THREADS: usize = 6;
/// Passes each thread makes over all inputs (in its own order).
const ROUNDS: usize = 8;
/// Far above the seconds the work takes in a debug build on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Values in `[-1, 1]`, different for each `seed`, without a generator.
fn wave(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) as f32 * 0.37).sin())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `work` on a thread and waits for it at most [`TIMEOUT`], so a deadlock fails
/// the test instead of hanging it. A panic inside `work` is a failure too.
fn within_timeout(what: &str, work: impl FnOnce() + Send + 'static) {
    let (done, report) = mpsc::channel();
    let handle = thread::spawn(move || {
        work();
        // The receiver may have given up already; nothing to do then.
        let _ = done.send(());
    });
    match report.recv_timeout(TIMEOUT) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // `work` panicked before reporting: surface its panic.
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
            unreachable!("{what}: the worker ended without reporting or panicking");
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no result after {TIMEOUT:?} (deadlock?)")
        }
    }
}

/// Every thread visits the inputs in a different order (rotated and, for odd threads,
/// reversed), so that small and large calls overlap in every combination.
fn order(thread: usize, round: usize, len: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..len).map(|i| (i + thread + round) % len).collect();
    if thread % 2 == 1 {
        ids.reverse();
    }
    ids
}

/// An EquilibriumAggregation input: `x [n, 3]`, an unsorted index into `sets` sets.
struct EqInput {
    x: Tensor<f32>,
    index: Vec<i64>,
    sets: usize,
}

fn eq_inputs() -> Vec<EqInput> {
    [0usize, 1, 3, 8, 9, 17, 40, 64]
        .iter()
        .enumerate()
        .map(|(seed, &n)| {
            let sets = 1 + n % 5;
            EqInput {
                x: Tensor::from_vec(&[n, 3], wave(3 * n, seed)).unwrap(),
                index: (0..n).map(|i| ((i * 3 + seed) % sets) as i64).collect(),
                sets,
            }
        })
        .collect()
}

/// The training forward of EquilibriumAggregation on a thread's own tape.
fn eq_on_tape(layer: &EquilibriumAggregation, input: &EqInput) -> Vec<u32> {
    let mut tape = Tape::<f32>::new();
    let p = layer.parameters().bind(&mut tape, true);
    let x = tape.constant(input.x.clone());
    let segments = Segments::Index(&input.index);
    let y = layer
        .forward_on(
            &mut tape,
            &p,
            x,
            segments,
            Some(input.sets),
            InnerGrad::Adjoint,
        )
        .unwrap();
    bits(tape.value(y).unwrap().data())
}

#[test]
fn equilibrium_forward_from_many_threads_is_bit_identical() {
    let layer = EquilibriumAggregation::new(3, 4, &[8, 8], 3, 0.1).unwrap();
    let inputs = eq_inputs();
    let infer = |input: &EqInput| {
        let y = layer.forward(&input.x, Segments::Index(&input.index), Some(input.sets));
        bits(y.unwrap().data())
    };
    let want: Vec<Vec<u32>> = inputs.iter().map(infer).collect();
    let want_tape: Vec<Vec<u32>> = inputs.iter().map(|i| eq_on_tape(&layer, i)).collect();

    within_timeout("EquilibriumAggregation", move || {
        thread::scope(|s| {
            for t in 0..THREADS {
                let (layer, inputs, want, want_tape) = (&layer, &inputs, &want, &want_tape);
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        for i in order(t, round, inputs.len()) {
                            let input = &inputs[i];
                            let segments = Segments::Index(&input.index);
                            let y = layer.forward(&input.x, segments, Some(input.sets));
                            assert_eq!(
                                bits(y.unwrap().data()),
                                want[i],
                                "thread {t}, round {round}, input {i} (N = {})",
                                input.x.shape()[0]
                            );
                            // Every fourth call, the tape forward (each thread its own
                            // tape, the parameters shared).
                            if (i + round) % 4 == 0 {
                                assert_eq!(
                                    eq_on_tape(layer, input),
                                    want_tape[i],
                                    "tape, input {i}"
                                );
                            }
                        }
                    }
                });
            }
        });
    });
}

/// A MemPooling input: `x [n, 2]` with a sorted `batch` over `graphs` graphs.
struct MpInput {
    x: Tensor<f32>,
    batch: Vec<i64>,
}

fn mp_inputs() -> Vec<MpInput> {
    [1usize, 2, 5, 8, 9, 23, 48]
        .iter()
        .enumerate()
        .map(|(seed, &n)| {
            let graphs = 1 + n % 4;
            MpInput {
                x: Tensor::from_vec(&[n, 2], wave(2 * n, seed)).unwrap(),
                batch: (0..n).map(|i| (i * graphs / n) as i64).collect(),
            }
        })
        .collect()
}

#[test]
fn mem_pool_forward_from_many_threads_is_bit_identical() {
    let pool = MemPooling::new(2, 3, 2, 4, 1.0).unwrap();
    let inputs = mp_inputs();
    let infer = |input: &MpInput| {
        let (out, s) = pool
            .forward(&input.x, PoolArgs::new().batch(&input.batch))
            .unwrap();
        (bits(out.data()), bits(s.data()))
    };
    let want: Vec<(Vec<u32>, Vec<u32>)> = inputs.iter().map(infer).collect();

    within_timeout("MemPooling", move || {
        thread::scope(|s| {
            for t in 0..THREADS {
                let (pool, inputs, want) = (&pool, &inputs, &want);
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        for i in order(t, round, inputs.len()) {
                            let input = &inputs[i];
                            let args = PoolArgs::new().batch(&input.batch);
                            let (out, s) = pool.forward(&input.x, args).unwrap();
                            let got = (bits(out.data()), bits(s.data()));
                            assert_eq!(
                                got,
                                want[i],
                                "thread {t}, round {round}, input {i} (N = {})",
                                input.x.shape()[0]
                            );
                        }
                    }
                });
            }
        });
    });
}

//! Long runs lose nothing: training both layers for many steps on one reused tape, and
//! running their inference many times, the memory held settles after the first steps
//! and then stays exactly the same.
//!
//! Two measures, taken at the same point of every step:
//! - the tape's own bytes ([`readout_core::TapeStats::bytes`]: node values, node arena,
//!   and the pool of freed buffers it keeps for the next step);
//! - the live heap of the test's thread, counted by the global allocator below (every
//!   allocation the layers, the optimiser and the tape make on this thread, minus what
//!   they free).
//!
//! The tests run in seconds (`cargo test`); the `#[ignore]`d variants run the full
//! lengths (10 000 training steps, 10⁵ inference calls), see `fuzz/README.md`:
//! `cargo test --release -p readout-layers --test long_run -- --ignored`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use readout_core::{Tape, Tensor};
use readout_layers::{
    Adam, EquilibriumAggregation, InnerGrad, MemPooling, PoolArgs, Segments, Sgd,
};
use readout_layers::{Optimizer, PygWeights};

/// The system allocator, counting the bytes each thread has allocated and not freed.
///
/// Per thread, so that the test harness running other tests on other threads does not
/// disturb a measurement. (A block freed by another thread than the one that allocated
/// it would skew both threads' counts; nothing measured here does that.)
struct ThreadCountingAlloc;

thread_local! {
    /// Bytes this thread allocated minus the bytes it freed. `const`-initialised and
    /// without a destructor, so the allocator may touch it at any time.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with` fails only while the thread is being torn down; nothing is measured then.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

/// The live heap bytes of the calling thread (allocated minus freed since it started).
fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only updates a thread-local counter on the side (which allocates nothing), so the
// contracts of `GlobalAlloc` are `System`'s.
unsafe impl GlobalAlloc for ThreadCountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (`ptr` came from `System` through this allocator).
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: ThreadCountingAlloc = ThreadCountingAlloc;

/// Steps after which the memory held must have settled: the first step fills the
/// tape's pool, the optimiser allocates its state on its first step, and for a few
/// steps the pool and the eager backward (which returns each intermediate gradient to
/// the pool once nothing reads it) trade buffers of different sizes (measured: the
/// live heap moves by under 200 bytes over steps 1–5, then stays below its step-5
/// high; the 10 000-step variant checks the same bound).
const WARM_UP: usize = 6;

/// Asserts that `series` (one measure per step) stops growing after [`WARM_UP`]
/// steps: no later step holds more than the most held up to then. (It need not be
/// constant: the tape's pool may hand out its buffers in an order that alternates
/// between two sizes of the same total from one step to the next.)
fn assert_settled(what: &str, series: &[isize]) {
    let bound = series[..=WARM_UP].iter().copied().max().unwrap();
    if let Some(i) = series[WARM_UP..].iter().position(|&b| b > bound) {
        let at = WARM_UP + i;
        panic!(
            "{what}: at most {bound} bytes up to step {WARM_UP}, {} at step {at} (first steps: {:?})",
            series[at],
            &series[..series.len().min(8)]
        );
    }
}

/// Values in `[-1, 1]` that differ from call to call (`seed`), without a generator.
fn wave(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) as f32 * 0.37).sin())
        .collect()
}

/// Trains a small EquilibriumAggregation for `steps` Adam steps on one reused tape
/// (the inner gradients recorded or through the adjoint, as `mode` says), and asserts
/// that the tape's bytes and the thread's live heap settle.
fn equilibrium_training(steps: usize, mode: InnerGrad) {
    let mut layer = EquilibriumAggregation::new(2, 3, &[4, 4], 2, 0.1).unwrap();
    let mut adam = Adam::new(1e-3).unwrap();
    let index: Vec<i64> = vec![0, 2, 1, 0, 2, 2, 1];
    let r = Tensor::from_vec(&[3, 3], wave(9, 0)).unwrap();
    let mut tape = Tape::<f32>::new();
    // Allocated up front: these vectors grow on the measured thread.
    let (mut tape_bytes, mut live) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for step in 0..steps {
        // A new batch every step (same shape): the data changes, the memory must not.
        let x = Tensor::from_vec(&[7, 2], wave(14, step % 5)).unwrap();
        layer.parameters_mut().zero_grad();
        tape.clear();
        let bound = layer.parameters().bind(&mut tape, true);
        let xv = tape.constant(x);
        let y = layer
            .forward_on(
                &mut tape,
                &bound,
                xv,
                Segments::Index(&index),
                Some(3),
                mode,
            )
            .unwrap();
        let rv = tape.constant(r.clone());
        let weighted = tape.mul(y, rv).unwrap();
        let loss = tape.sum(weighted).unwrap();
        assert!(tape.value(loss).unwrap().item().is_finite(), "step {step}");
        let grads = tape.backward(loss).unwrap();
        layer.parameters_mut().accumulate(&bound, &grads);
        drop(grads);
        adam.step(layer.parameters_mut());
        tape_bytes.push(tape.stats().bytes() as isize);
        live.push(live_bytes());
    }
    assert_settled(
        &format!("EquilibriumAggregation ({mode:?}): tape bytes"),
        &tape_bytes,
    );
    assert_settled(
        &format!("EquilibriumAggregation ({mode:?}): live heap"),
        &live,
    );
}

/// Trains a small MemPooling (`out`, `S` and `kl_loss` in the loss) for `steps` SGD
/// steps on one reused tape and asserts that the memory held settles.
fn mem_pool_training(steps: usize) {
    let mut pool = MemPooling::new(3, 2, 2, 3, 1.0).unwrap();
    let mut sgd = Sgd::new(1e-3, 0.9, 0.0).unwrap();
    let batch: Vec<i64> = vec![0, 0, 0, 1, 2, 2];
    let r_out = Tensor::from_vec(&[3, 3, 2], wave(18, 1)).unwrap();
    let r_s = Tensor::from_vec(&[3, 3, 3], wave(27, 2)).unwrap();
    let mut tape = Tape::<f32>::new();
    // Allocated up front: these vectors grow on the measured thread.
    let (mut tape_bytes, mut live) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for step in 0..steps {
        let x = Tensor::from_vec(&[6, 3], wave(18, step % 5)).unwrap();
        pool.parameters_mut().zero_grad();
        tape.clear();
        let bound = pool.parameters().bind(&mut tape, true);
        let xv = tape.constant(x);
        let mut pooled = pool
            .forward_on(&mut tape, &bound, xv, PoolArgs::new().batch(&batch))
            .unwrap();
        let out = pooled.out();
        let s = pooled.s(&mut tape).unwrap();
        let kl = pooled.kl_loss(&mut tape).unwrap();
        let (ro, rs) = (tape.constant(r_out.clone()), tape.constant(r_s.clone()));
        let wo = tape.mul(out, ro).unwrap();
        let lo = tape.sum(wo).unwrap();
        let ws = tape.mul(s, rs).unwrap();
        let ls = tape.sum(ws).unwrap();
        let loss = tape.add(lo, ls).unwrap();
        let loss = tape.add(loss, kl).unwrap();
        assert!(tape.value(loss).unwrap().item().is_finite(), "step {step}");
        let grads = tape.backward(loss).unwrap();
        pool.parameters_mut().accumulate(&bound, &grads);
        drop(grads);
        sgd.step(pool.parameters_mut());
        tape_bytes.push(tape.stats().bytes() as isize);
        live.push(live_bytes());
    }
    assert_settled("MemPooling: tape bytes", &tape_bytes);
    assert_settled("MemPooling: live heap", &live);
}

/// Runs both layers' inference `calls` times (inputs of two sizes, alternating, so the
/// reused workspace meets both) and asserts that the live heap after each call
/// (result dropped) settles.
fn inference(calls: usize) {
    let eq = EquilibriumAggregation::new(2, 3, &[4], 3, 0.1).unwrap();
    let pool = MemPooling::new(3, 2, 2, 3, 1.0).unwrap();
    let index = [0i64, 1, 0, 2, 1, 2, 0, 1, 2];
    let batch = [0i64, 0, 1, 1, 1, 2];
    let inputs: Vec<(Tensor<f32>, Tensor<f32>, usize, usize)> = [5usize, 9]
        .iter()
        .enumerate()
        .map(|(seed, &n)| {
            let ex = Tensor::from_vec(&[n, 2], wave(2 * n, seed)).unwrap();
            let nodes = n.min(6);
            let px = Tensor::from_vec(&[nodes, 3], wave(3 * nodes, seed)).unwrap();
            (ex, px, n, nodes)
        })
        .collect();
    let mut live = Vec::with_capacity(calls);
    for call in 0..calls {
        let (ex, px, n, nodes) = &inputs[call % 2];
        let y = eq
            .forward(ex, Segments::Index(&index[..*n]), Some(3))
            .unwrap();
        assert!(y.data().iter().all(|v| v.is_finite()), "call {call}");
        drop(y);
        let (out, s) = pool
            .forward(px, PoolArgs::new().batch(&batch[..*nodes]))
            .unwrap();
        assert!(
            out.data().iter().chain(s.data()).all(|v| v.is_finite()),
            "call {call}"
        );
        drop((out, s));
        live.push(live_bytes());
    }
    assert_settled("inference of both layers: live heap", &live);
}

#[test]
fn equilibrium_training_memory_settles() {
    equilibrium_training(300, InnerGrad::Adjoint);
    equilibrium_training(100, InnerGrad::Record);
}

#[test]
fn mem_pool_training_memory_settles() {
    mem_pool_training(300);
}

#[test]
fn inference_memory_settles() {
    inference(2_000);
}

#[test]
#[ignore = "long: 10 000 training steps of each layer (run with --release --ignored)"]
fn long_training_memory_settles() {
    equilibrium_training(10_000, InnerGrad::Adjoint);
    equilibrium_training(10_000, InnerGrad::Record);
    mem_pool_training(10_000);
}

#[test]
#[ignore = "long: 10⁵ inference calls of each layer (run with --release --ignored)"]
fn long_inference_memory_settles() {
    inference(100_000);
}

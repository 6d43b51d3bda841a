//! A tape reused across steps (`clear` at the start of each, `truncate` inside) gives
//! the same values and gradients as a fresh tape, recycles its buffers, and does not
//! grow from one step to the next.

use readout_core::{Tape, Tensor, Var};

/// One step: `loss = Σ tanh(x·w)·r` with a second-order term, so that forward,
/// backward and a recorded gradient all allocate. Returns the loss and `∂loss/∂w`.
fn step(tape: &mut Tape<f64>, seed: f64) -> (f64, Vec<f64>) {
    let vals = |n: usize, s: f64| (0..n).map(|i| ((i as f64 + s) * 0.37).sin()).collect();
    let x = tape.constant(Tensor::from_vec(&[9, 7], vals(63, seed)).unwrap());
    let w = tape.variable(Tensor::from_vec(&[7, 5], vals(35, 1.0)).unwrap());
    let r = tape.constant(Tensor::from_vec(&[9, 5], vals(45, 2.0)).unwrap());
    let h = tape.matmul(x, w).unwrap();
    let t = tape.tanh(h).unwrap();
    let tr = tape.mul(t, r).unwrap();
    let inner = tape.sum(tr).unwrap();
    // d inner / dw, recorded, then its squared norm as a penalty: second order.
    let gw = tape.grad(inner, None, &[w], true).unwrap()[0];
    let g2 = tape.square(gw).unwrap();
    let pen = tape.sum(g2).unwrap();
    let loss = tape.add(inner, pen).unwrap();
    let value = tape.value(loss).unwrap().item();
    let grads = tape.backward(loss).unwrap();
    (value, grads.get(w).unwrap().data().to_vec())
}

fn fresh(seed: f64) -> (f64, Vec<f64>) {
    step(&mut Tape::new(), seed)
}

#[test]
fn reused_tape_matches_fresh_tapes_and_stays_bounded() {
    let mut tape = Tape::new();
    let mut sizes = Vec::new();
    for i in 0..7 {
        tape.clear();
        let seed = f64::from(i % 3);
        assert_eq!(step(&mut tape, seed), fresh(seed), "step {i}");
        sizes.push(tape.stats().bytes());
    }
    // Buffers were recycled: after the first step the tape keeps some.
    tape.clear();
    assert!(tape.stats().pooled_bytes > 0);
    assert!(tape.is_empty());
    // Steady state after three steps (the pool's limit grows to the backward pass's
    // peak during the first, and the buffers kept settle by the third): the same bytes
    // held every step, and never more than at the second.
    assert!(sizes[3..].iter().all(|&b| b == sizes[3]), "{sizes:?}");
    assert!(sizes[3] <= sizes[2], "{sizes:?}");
    tape.release();
    assert_eq!(tape.stats().pooled_bytes, 0);
}

#[test]
fn truncating_loop_stays_bounded() {
    let mut tape = Tape::<f64>::new();
    let w = tape.variable(Tensor::from_vec(&[4, 4], vec![0.1; 16]).unwrap());
    let mark = tape.mark();
    let mut held = Vec::new();
    for i in 0..300 {
        // A new constant each time (allocated outside the tape) and ops on it.
        let x: Var = tape.constant(Tensor::from_vec(&[4, 4], vec![f64::from(i % 7); 16]).unwrap());
        let y = tape.matmul(x, w).unwrap();
        let z = tape.tanh(y).unwrap();
        let s = tape.sum(z).unwrap();
        let _ = tape.backward(s).unwrap();
        tape.truncate(mark);
        held.push(tape.stats().bytes());
    }
    // The kept buffers are capped by the most the tape held at once: whatever the
    // first steps leave behind, the bytes settle and never exceed twice that.
    let last = held[held.len() - 1];
    assert!(
        held[held.len() - 20..].iter().all(|&b| b == last),
        "{held:?}"
    );
    assert!(last <= 2 * held[0], "{held:?}");
}

/// The pool keeps what a step's backward pass held at its peak, not only what the
/// values held between steps: a step on a long tensor (`Σ w·r`, with `r` copied onto
/// the tape) uses five buffers of its length — the copy of `r`, `w·r`, the expanded
/// seed and `r·ḡ`, plus `w` itself — and all of them come back for the next step.
/// (Before, the pool's limit missed the backward's temporaries, and every step
/// allocated two long buffers afresh.)
#[test]
fn the_pool_keeps_a_steps_backward_temporaries() {
    let n = 10_000;
    let long = n * std::mem::size_of::<f64>();
    let r = Tensor::from_vec(&[n], (0..n).map(|i| (i as f64 * 0.1).cos()).collect()).unwrap();
    let mut tape = Tape::<f64>::new();
    for step in 0..4 {
        tape.clear();
        let w = tape.variable(Tensor::from_vec(&[n], vec![0.5; n]).unwrap());
        let rc = tape.constant_copied(&r);
        assert_eq!(tape.value(rc).unwrap(), &r, "step {step}");
        let wr = tape.mul(w, rc).unwrap();
        let loss = tape.sum(wr).unwrap();
        let grads = tape.backward(loss).unwrap();
        assert_eq!(grads.get(w).unwrap(), &r, "step {step}");
    }
    tape.clear();
    let kept = tape.stats().pooled_bytes;
    assert!(kept >= 5 * long, "kept {kept} bytes, want 5 × {long}");
}

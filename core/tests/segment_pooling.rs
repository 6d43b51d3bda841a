//! `segment_max` and `segment_softmax`: values against direct loops, first and
//! second derivatives against finite differences in `f64` (segments of 0, 1 and
//! several rows, 1 to 3 columns, rank 1 to 3), and the errors for bad `ptr`s.

use readout_core::gradcheck::{Check, GradcheckOptions, SplitMix64, check_gradients};
use readout_core::{CoreError, Tape, Tensor, Var};

type Out = Result<Var, CoreError>;

/// Distinct values in `[-1, 1)` at least `0.5 / numel` apart (a shuffled grid plus
/// a small jitter), so no finite-difference step changes which entry is a maximum.
fn spread(dims: &[usize], seed: u64) -> Tensor<f64> {
    let n: usize = dims.iter().product();
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let data = order
        .iter()
        .map(|&k| -1.0 + 2.0 * (k as f64 + 0.25 + 0.5 * rng.next_f64()) / n.max(1) as f64)
        .collect();
    Tensor::from_vec(dims, data).unwrap()
}

/// The first- and second-order check of `f`, and of `y·tanh(y)` of its output (so the
/// second-order check runs the op's backward rule through a nonlinear head).
#[track_caller]
fn check(name: &str, x: &Tensor<f64>, f: impl Fn(&mut Tape<f64>, Var) -> Out) {
    let opts = GradcheckOptions::default();
    let plain = |t: &mut Tape<f64>, xs: &[Var]| f(t, xs[0]);
    let report = check_gradients(plain, std::slice::from_ref(x), &opts)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.passed(), "{name}: {report}");
    for c in &report.checks {
        assert_eq!(
            c.compared,
            x.numel(),
            "{name}: {:?} compared too few",
            c.check
        );
    }
    assert!(report.summary(Check::SecondOrder).is_some());
    let head = |t: &mut Tape<f64>, xs: &[Var]| {
        let y = f(t, xs[0])?;
        let s = t.tanh(y)?;
        t.mul(y, s)
    };
    let report = check_gradients(head, std::slice::from_ref(x), &opts)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.passed(), "{name} (·tanh head): {report}");
}

/// `(x's shape, ptr)`: empty segments first, in the middle and last; one-row
/// segments; no rows at all; rank 1 and rank 3.
fn cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![7, 3], vec![0, 2, 2, 7]),
        (vec![7, 3], vec![0, 7]),
        (vec![9, 1], vec![0, 0, 1, 8, 9, 9]),
        (vec![8], vec![0, 3, 8]),
        (vec![5, 2, 2], vec![0, 1, 2, 5]),
        (vec![1, 4], vec![0, 1]),
        (vec![0, 3], vec![0]),
        (vec![0, 3], vec![0, 0, 0]),
    ]
}

/// Row width: the product of every dimension after the first.
fn width(dims: &[usize]) -> usize {
    dims[1..].iter().product()
}

#[test]
fn segment_max_values_match_a_direct_loop() {
    for (i, (dims, ptr)) in cases().into_iter().enumerate() {
        let x = spread(&dims, i as u64);
        let mut tape = Tape::<f64>::new();
        let v = tape.constant(x.clone());
        let y = tape.segment_max(v, &ptr).unwrap();
        let y = tape.value(y).unwrap();
        let w = width(&dims);
        let mut expected_dims = dims.clone();
        expected_dims[0] = ptr.len() - 1;
        assert_eq!(y.shape(), &expected_dims[..], "{dims:?} {ptr:?}");
        for (s, seg) in ptr.windows(2).enumerate() {
            for c in 0..w {
                let want = (seg[0]..seg[1])
                    .map(|r| x.data()[r * w + c])
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                    .unwrap_or(0.0);
                assert_eq!(y.data()[s * w + c], want, "{dims:?} {ptr:?} segment {s}");
            }
        }
    }
}

#[test]
fn segment_max_ties_send_the_gradient_to_the_first_row() {
    let mut tape = Tape::<f64>::new();
    let x = tape.variable(Tensor::from_vec(&[3, 1], vec![2.0, 2.0, 1.0]).unwrap());
    let y = tape.segment_max(x, &[0, 3]).unwrap();
    let s = tape.sum(y).unwrap();
    let g = tape.grad(s, None, &[x], false).unwrap()[0];
    assert_eq!(tape.value(g).unwrap().data(), &[1.0, 0.0, 0.0]);
}

#[test]
fn segment_max_gradients() {
    for (i, (dims, ptr)) in cases().into_iter().enumerate() {
        let x = spread(&dims, 100 + i as u64);
        check(&format!("segment_max {dims:?} {ptr:?}"), &x, |t, v| {
            t.segment_max(v, &ptr)
        });
    }
}

#[test]
fn segment_softmax_values_match_a_direct_loop() {
    for (i, (dims, ptr)) in cases().into_iter().enumerate() {
        // Large values: the shift by the segment maximum must keep exp finite.
        let x = spread(&dims, 200 + i as u64);
        let big: Vec<f64> = x.data().iter().map(|v| 800.0 * v).collect();
        let x = Tensor::from_vec(&dims, big).unwrap();
        let mut tape = Tape::<f64>::new();
        let v = tape.constant(x.clone());
        let y = tape.segment_softmax(v, &ptr).unwrap();
        let y = tape.value(y).unwrap();
        assert_eq!(y.shape(), &dims[..]);
        let w = width(&dims);
        for seg in ptr.windows(2) {
            for c in 0..w {
                let rows = seg[0]..seg[1];
                let m = rows
                    .clone()
                    .map(|r| x.data()[r * w + c])
                    .fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = rows.clone().map(|r| (x.data()[r * w + c] - m).exp()).sum();
                let mut total = 0.0;
                for r in rows {
                    let want = (x.data()[r * w + c] - m).exp() / z;
                    let got = y.data()[r * w + c];
                    assert!(
                        (got - want).abs() <= 1e-15,
                        "{dims:?} {ptr:?}: {got} vs {want}"
                    );
                    total += got;
                }
                if seg[1] > seg[0] {
                    assert!(
                        (total - 1.0).abs() <= 1e-12,
                        "{dims:?} {ptr:?}: sums to {total}"
                    );
                }
            }
        }
    }
}

#[test]
fn segment_softmax_gradients() {
    for (i, (dims, ptr)) in cases().into_iter().enumerate() {
        let x = spread(&dims, 300 + i as u64);
        // A weighted sum of the probabilities, so the loss is not their constant total.
        check(&format!("segment_softmax {dims:?} {ptr:?}"), &x, |t, v| {
            let p = t.segment_softmax(v, &ptr)?;
            let weights = spread(&dims, 400 + i as u64);
            let w = t.constant(weights);
            t.mul(p, w)
        });
    }
}

#[test]
fn bad_inputs_are_refused_with_the_op_named() {
    let mut tape = Tape::<f64>::new();
    let x = tape.constant(Tensor::from_vec(&[3, 2], vec![0.0; 6]).unwrap());
    let s = tape.constant(Tensor::scalar(1.0));
    for ptr in [&[][..], &[1, 3][..], &[0, 2, 1, 3][..], &[0, 2][..]] {
        match tape.segment_max(x, ptr) {
            Err(CoreError::BadPtr { op, .. }) => assert_eq!(op, "segment_max"),
            other => panic!("segment_max {ptr:?}: {other:?}"),
        }
        match tape.segment_softmax(x, ptr) {
            Err(CoreError::BadPtr { op, .. }) => assert_eq!(op, "segment_softmax"),
            other => panic!("segment_softmax {ptr:?}: {other:?}"),
        }
    }
    assert!(matches!(
        tape.segment_max(s, &[0]),
        Err(CoreError::BadRank {
            op: "segment_max",
            ..
        })
    ));
    assert!(matches!(
        tape.segment_softmax(s, &[0]),
        Err(CoreError::BadRank {
            op: "segment_softmax",
            ..
        })
    ));
}

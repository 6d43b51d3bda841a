//! `segment_matmul_tn` / `_nn` / `_nt`: values against plain loops, first and second
//! derivatives against central finite differences in `f64`, and every input error.

use readout_core::{CoreError, Tape, Tensor, Var};

/// Splitmix64, for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn tensor(&mut self, dims: &[usize]) -> Tensor<f64> {
        let n = dims.iter().product();
        Tensor::from_vec(dims, (0..n).map(|_| self.next()).collect()).unwrap()
    }
}

/// Segments with an empty one at the start, in the middle and at the end.
const PTR: [usize; 7] = [0, 0, 3, 4, 4, 9, 9];
const N: usize = 9;
const B: usize = 6;

fn seg(i: usize) -> usize {
    (0..B).find(|&g| PTR[g] <= i && i < PTR[g + 1]).unwrap()
}

#[test]
fn values_match_plain_loops() {
    let mut rng = Rng(1);
    let (p, q) = (3, 4);
    let a = rng.tensor(&[N, p]);
    let c = rng.tensor(&[N, q]);
    let bn = rng.tensor(&[B, p, q]);
    let bt = rng.tensor(&[B, q, p]);
    let mut tape = Tape::<f64>::new();
    let (av, cv, bnv, btv) = (
        tape.constant(a.clone()),
        tape.constant(c.clone()),
        tape.constant(bn.clone()),
        tape.constant(bt.clone()),
    );
    let tn = tape.segment_matmul_tn(av, cv, &PTR).unwrap();
    let nn = tape.segment_matmul_nn(av, bnv, &PTR).unwrap();
    let nt = tape.segment_matmul_nt(av, btv, &PTR).unwrap();
    assert_eq!(tape.value(tn).unwrap().shape(), &[B, p, q]);
    assert_eq!(tape.value(nn).unwrap().shape(), &[N, q]);
    assert_eq!(tape.value(nt).unwrap().shape(), &[N, q]);
    let (a, c, bn, bt) = (a.data(), c.data(), bn.data(), bt.data());
    let mut want_tn = vec![0.0; B * p * q];
    for i in 0..N {
        let g = seg(i);
        for r in 0..p {
            for s in 0..q {
                want_tn[(g * p + r) * q + s] += a[i * p + r] * c[i * q + s];
            }
        }
    }
    let mut want_nn = vec![0.0; N * q];
    let mut want_nt = vec![0.0; N * q];
    for i in 0..N {
        let g = seg(i);
        for s in 0..q {
            for r in 0..p {
                want_nn[i * q + s] += a[i * p + r] * bn[(g * p + r) * q + s];
                want_nt[i * q + s] += a[i * p + r] * bt[(g * q + s) * p + r];
            }
        }
    }
    for (got, want) in [(tn, want_tn), (nn, want_nn), (nt, want_nt)] {
        let got = tape.value(got).unwrap().data();
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
    }
    // Empty segments give zero blocks.
    let tnv = tape.value(tn).unwrap().data();
    for g in [0, 3, 5] {
        assert!(tnv[g * p * q..(g + 1) * p * q].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn equal_segments_equal_the_batched_matmul() {
    let mut rng = Rng(2);
    let (b, n, p, q) = (4, 5, 3, 2);
    let a = rng.tensor(&[b * n, p]);
    let c = rng.tensor(&[b * n, q]);
    let ptr: Vec<usize> = (0..=b).map(|g| g * n).collect();
    let mut tape = Tape::<f64>::new();
    let (av, cv) = (tape.constant(a), tape.constant(c));
    let seg = tape.segment_matmul_tn(av, cv, &ptr).unwrap();
    let a3 = tape.reshape(av, &[b, n, p]).unwrap();
    let c3 = tape.reshape(cv, &[b, n, q]).unwrap();
    let bat = tape.matmul_with(a3, c3, true, false).unwrap();
    let (x, y) = (tape.value(seg).unwrap(), tape.value(bat).unwrap());
    assert_eq!(x.shape(), y.shape());
    for (u, v) in x.data().iter().zip(y.data()) {
        assert!((u - v).abs() < 1e-12);
    }
}

type Build = fn(&mut Tape<f64>, &[Var]) -> Var;

/// `out = tanh(segment_matmul_*(f(a), g(b)))` with smooth non-linear `f`, `g`: the
/// second derivatives go through the recorded backward rules, and the incoming
/// gradient depends on the inputs, so a rule that detached it would be caught.
fn build_tn(t: &mut Tape<f64>, v: &[Var]) -> Var {
    let a = t.tanh(v[0]).unwrap();
    let c = t.square(v[1]).unwrap();
    let o = t.segment_matmul_tn(a, c, &PTR).unwrap();
    t.tanh(o).unwrap()
}
fn build_nn(t: &mut Tape<f64>, v: &[Var]) -> Var {
    let a = t.tanh(v[0]).unwrap();
    let b = t.square(v[1]).unwrap();
    let o = t.segment_matmul_nn(a, b, &PTR).unwrap();
    t.tanh(o).unwrap()
}
fn build_nt(t: &mut Tape<f64>, v: &[Var]) -> Var {
    let a = t.square(v[0]).unwrap();
    let b = t.tanh(v[1]).unwrap();
    let o = t.segment_matmul_nt(a, b, &PTR).unwrap();
    t.tanh(o).unwrap()
}
/// A chain through all three, so each one's rule sees a non-trivial incoming gradient.
fn build_chain(t: &mut Tape<f64>, v: &[Var]) -> Var {
    let a = t.tanh(v[0]).unwrap();
    let m = t.segment_matmul_tn(a, v[1], &PTR).unwrap(); // [B, P, Q]
    let y = t.segment_matmul_nn(v[1], m, &PTR).unwrap(); // [N, Q]
    let y = t.tanh(y).unwrap();
    t.segment_matmul_nt(y, m, &PTR).unwrap()
}

/// `Σ out·w` for a fixed projection `w`.
fn project(t: &mut Tape<f64>, out: Var, w: &Tensor<f64>) -> Var {
    let p = t.mask_mul(out, w.clone()).unwrap();
    t.sum(p).unwrap()
}

/// First and second order against central differences for `build` at `inputs`.
fn gradcheck(build: Build, inputs: &[Tensor<f64>], seed: u64) {
    let mut rng = Rng(seed);
    let h = 1e-6;
    let out_shape = {
        let mut t = Tape::new();
        let v: Vec<Var> = inputs.iter().map(|x| t.variable(x.clone())).collect();
        let o = build(&mut t, &v);
        t.value(o).unwrap().shape().to_vec()
    };
    let w = rng.tensor(&out_shape);
    let us: Vec<Tensor<f64>> = inputs.iter().map(|x| rng.tensor(x.shape())).collect();
    let loss = |xs: &[Tensor<f64>]| -> f64 {
        let mut t = Tape::new();
        let v: Vec<Var> = xs.iter().map(|x| t.variable(x.clone())).collect();
        let o = build(&mut t, &v);
        let l = project(&mut t, o, &w);
        t.value(l).unwrap().item()
    };
    // H(x) = Σ_i ∇L(x)_i · u_i, with an eager first gradient.
    let hvp = |xs: &[Tensor<f64>]| -> f64 {
        let mut t = Tape::new();
        let v: Vec<Var> = xs.iter().map(|x| t.variable(x.clone())).collect();
        let o = build(&mut t, &v);
        let l = project(&mut t, o, &w);
        let g = t.grad(l, None, &v, false).unwrap();
        g.iter()
            .zip(&us)
            .map(|(&gi, u)| {
                let gv = t.value(gi).unwrap();
                gv.data()
                    .iter()
                    .zip(u.data())
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            })
            .sum()
    };
    let mut t = Tape::new();
    let v: Vec<Var> = inputs.iter().map(|x| t.variable(x.clone())).collect();
    let o = build(&mut t, &v);
    let l = project(&mut t, o, &w);
    let eager = t.grad(l, None, &v, false).unwrap();
    let recorded = t.grad(l, None, &v, true).unwrap();
    let mut hsum = None;
    for (&gi, u) in recorded.iter().zip(&us) {
        let d = project(&mut t, gi, u);
        hsum = Some(match hsum {
            None => d,
            Some(s) => t.add(s, d).unwrap(),
        });
    }
    let second = t.grad(hsum.unwrap(), None, &v, false).unwrap();
    for (k, x) in inputs.iter().enumerate() {
        for i in 0..x.numel() {
            let shifted = |delta: f64| {
                let mut xs = inputs.to_vec();
                xs[k].data_mut()[i] += delta;
                xs
            };
            let fd1 = (loss(&shifted(h)) - loss(&shifted(-h))) / (2.0 * h);
            let fd2 = (hvp(&shifted(h)) - hvp(&shifted(-h))) / (2.0 * h);
            let e = t.value(eager[k]).unwrap().data()[i];
            let r = t.value(recorded[k]).unwrap().data()[i];
            let s = t.value(second[k]).unwrap().data()[i];
            let tol = |x: f64| 1e-6 + 1e-5 * x.abs();
            assert!(
                (e - fd1).abs() <= tol(fd1),
                "input {k}[{i}]: eager {e} vs fd {fd1}"
            );
            assert!(
                (r - fd1).abs() <= tol(fd1),
                "input {k}[{i}]: recorded {r} vs fd {fd1}"
            );
            assert!(
                (s - fd2).abs() <= tol(fd2),
                "input {k}[{i}]: second {s} vs fd {fd2}"
            );
        }
    }
}

#[test]
fn tn_first_and_second_order() {
    let mut rng = Rng(3);
    gradcheck(build_tn, &[rng.tensor(&[N, 3]), rng.tensor(&[N, 2])], 30);
}

#[test]
fn nn_first_and_second_order() {
    let mut rng = Rng(4);
    gradcheck(build_nn, &[rng.tensor(&[N, 3]), rng.tensor(&[B, 3, 2])], 40);
}

#[test]
fn nt_first_and_second_order() {
    let mut rng = Rng(5);
    gradcheck(build_nt, &[rng.tensor(&[N, 3]), rng.tensor(&[B, 2, 3])], 50);
}

#[test]
fn chain_first_and_second_order() {
    let mut rng = Rng(6);
    // v[0] [N, P], v[1] [N, P] (used as c of tn and a of nn, so Q = P).
    gradcheck(build_chain, &[rng.tensor(&[N, 2]), rng.tensor(&[N, 2])], 60);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut t = Tape::<f64>::new();
    let a = t.constant(Tensor::filled(readout_core::Shape::d2(4, 3), 1.0));
    let c = t.constant(Tensor::filled(readout_core::Shape::d2(4, 2), 1.0));
    let c5 = t.constant(Tensor::filled(readout_core::Shape::d2(5, 2), 1.0));
    let v1 = t.constant(Tensor::filled(readout_core::Shape::d1(4), 1.0));
    let b = t.constant(Tensor::filled(readout_core::Shape::d3(2, 3, 2), 1.0));
    let b_wrong_inner = t.constant(Tensor::filled(readout_core::Shape::d3(2, 4, 2), 1.0));
    let ptr = [0, 1, 4];
    // Good calls work.
    assert!(t.segment_matmul_tn(a, c, &ptr).is_ok());
    assert!(t.segment_matmul_nn(a, b, &ptr).is_ok());
    // ptr problems.
    for bad in [&[][..], &[1, 4][..], &[0, 3, 2, 4][..], &[0, 1, 3][..]] {
        let e = t.segment_matmul_tn(a, c, bad).unwrap_err();
        assert!(
            matches!(
                e,
                CoreError::BadPtr {
                    op: "segment_matmul_tn",
                    ..
                }
            ),
            "{e}"
        );
        let e = t.segment_matmul_nn(a, b, bad).unwrap_err();
        assert!(
            matches!(
                e,
                CoreError::BadPtr { .. } | CoreError::ShapeMismatch { .. }
            ),
            "{e}"
        );
    }
    // Ranks.
    let e = t.segment_matmul_tn(v1, c, &ptr).unwrap_err();
    assert!(matches!(e, CoreError::BadRank { arg: "a", .. }), "{e}");
    let e = t.segment_matmul_tn(a, b, &ptr).unwrap_err();
    assert!(matches!(e, CoreError::BadRank { arg: "c", .. }), "{e}");
    let e = t.segment_matmul_nn(a, c, &ptr).unwrap_err();
    assert!(matches!(e, CoreError::BadRank { arg: "b", .. }), "{e}");
    // Row counts differ.
    let e = t.segment_matmul_tn(a, c5, &ptr).unwrap_err();
    assert!(
        matches!(e, CoreError::ShapeMismatch { arg: "c", .. }),
        "{e}"
    );
    // One block per segment.
    let e = t.segment_matmul_nn(a, b, &[0, 1, 2, 4]).unwrap_err();
    assert!(
        matches!(e, CoreError::ShapeMismatch { arg: "b", .. }),
        "{e}"
    );
    // Inner dimensions.
    let e = t.segment_matmul_nn(a, b_wrong_inner, &ptr).unwrap_err();
    assert!(
        matches!(e, CoreError::ShapeMismatch { arg: "b", .. }),
        "{e}"
    );
    let e = t.segment_matmul_nt(a, b, &ptr).unwrap_err();
    assert!(
        matches!(e, CoreError::ShapeMismatch { arg: "b", .. }),
        "{e}"
    );
    // Messages name the op and the argument.
    let msg = t.segment_matmul_tn(a, c5, &ptr).unwrap_err().to_string();
    assert!(
        msg.contains("segment_matmul_tn") && msg.contains("`c`"),
        "{msg}"
    );
}

#[test]
fn zero_rows_and_zero_width() {
    let mut t = Tape::<f64>::new();
    let a = t.variable(Tensor::filled(readout_core::Shape::d2(0, 3), 1.0));
    let c = t.variable(Tensor::filled(readout_core::Shape::d2(0, 2), 1.0));
    let o = t.segment_matmul_tn(a, c, &[0, 0, 0]).unwrap();
    assert_eq!(t.value(o).unwrap().shape(), &[2, 3, 2]);
    assert!(t.value(o).unwrap().data().iter().all(|&v| v == 0.0));
    let s = t.sum(o).unwrap();
    let g = t.grad(s, None, &[a, c], false).unwrap();
    assert_eq!(t.value(g[0]).unwrap().shape(), &[0, 3]);
}

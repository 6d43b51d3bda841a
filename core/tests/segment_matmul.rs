//! `segment_matmul_tn` / `_nn` / `_nt`: values against plain loops, first and second
//! derivatives against central finite differences in `f64`, and every input error.

use readout_core::gradcheck::{GradcheckOptions, check_gradients};
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

type Build = fn(&mut Tape<f64>, &[Var]) -> Result<Var, CoreError>;

/// `out = tanh(segment_matmul_*(f(a), g(b)))` with smooth non-linear `f`, `g`: the
/// second derivatives go through the recorded backward rules, and the incoming
/// gradient depends on the inputs, so a rule that detached it would be caught.
fn build_tn(t: &mut Tape<f64>, v: &[Var]) -> Result<Var, CoreError> {
    let a = t.tanh(v[0])?;
    let c = t.square(v[1])?;
    let o = t.segment_matmul_tn(a, c, &PTR)?;
    t.tanh(o)
}
fn build_nn(t: &mut Tape<f64>, v: &[Var]) -> Result<Var, CoreError> {
    let a = t.tanh(v[0])?;
    let b = t.square(v[1])?;
    let o = t.segment_matmul_nn(a, b, &PTR)?;
    t.tanh(o)
}
fn build_nt(t: &mut Tape<f64>, v: &[Var]) -> Result<Var, CoreError> {
    let a = t.square(v[0])?;
    let b = t.tanh(v[1])?;
    let o = t.segment_matmul_nt(a, b, &PTR)?;
    t.tanh(o)
}
/// A chain through all three, so each one's rule sees a non-trivial incoming gradient.
fn build_chain(t: &mut Tape<f64>, v: &[Var]) -> Result<Var, CoreError> {
    let a = t.tanh(v[0])?;
    let m = t.segment_matmul_tn(a, v[1], &PTR)?; // [B, P, P]
    let y = t.segment_matmul_nn(v[1], m, &PTR)?; // [N, P]
    let y = t.tanh(y)?;
    t.segment_matmul_nt(y, m, &PTR)
}

/// First order (eager and recorded) and second order against central differences,
/// with the shared `readout_core::gradcheck` (default tolerances).
fn gradcheck(build: Build, inputs: &[Tensor<f64>], seed: u64) {
    let opts = GradcheckOptions {
        seed,
        ..GradcheckOptions::default()
    };
    let report = check_gradients(build, inputs, &opts).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.checks.len(),
        3,
        "first eager, first recorded, second order"
    );
    let n: usize = inputs.iter().map(|t| t.numel()).sum();
    assert!(report.checks.iter().all(|c| c.compared == n));
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

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random segment sizes (empty, 1, 7, 8, 9 rows, ...): each product equals the
        /// batched matmul of the zero-padded segments, and the ragged rows of `nn`/`nt`
        /// equal the padded products' real rows.
        #[test]
        fn equals_padded_batched_matmul(
            sizes in proptest::collection::vec(
                prop_oneof![Just(0usize), Just(1), Just(7), Just(8), Just(9), 0usize..12], 1..6),
            p in 1usize..5,
            q in 1usize..5,
            seed in any::<u64>(),
        ) {
            let mut rng = Rng(seed);
            let b = sizes.len();
            let n: usize = sizes.iter().sum();
            let n_max = sizes.iter().copied().max().unwrap_or(0);
            let mut ptr = vec![0];
            for s in &sizes {
                ptr.push(ptr.last().unwrap() + s);
            }
            let a = rng.tensor(&[n, p]);
            let c = rng.tensor(&[n, q]);
            let bn = rng.tensor(&[b, p, q]);
            let bt = rng.tensor(&[b, q, p]);
            // Zero-padded [B, N_max, ·] copies.
            let pad = |t: &Tensor<f64>, w: usize| {
                let mut d = vec![0.0; b * n_max * w];
                for g in 0..b {
                    for (j, i) in (ptr[g]..ptr[g + 1]).enumerate() {
                        d[(g * n_max + j) * w..(g * n_max + j + 1) * w]
                            .copy_from_slice(&t.data()[i * w..(i + 1) * w]);
                    }
                }
                Tensor::from_vec(&[b, n_max, w], d).unwrap()
            };
            let mut t = Tape::<f64>::new();
            let (av, cv) = (t.constant(a.clone()), t.constant(c.clone()));
            let (bnv, btv) = (t.constant(bn), t.constant(bt));
            let (ap, cp) = (t.constant(pad(&a, p)), t.constant(pad(&c, q)));
            let tn = t.segment_matmul_tn(av, cv, &ptr).unwrap();
            let tn_ref = t.matmul_with(ap, cp, true, false).unwrap();
            let nn = t.segment_matmul_nn(av, bnv, &ptr).unwrap();
            let nn_ref = t.matmul_with(ap, bnv, false, false).unwrap();
            let nt = t.segment_matmul_nt(av, btv, &ptr).unwrap();
            let nt_ref = t.matmul_with(ap, btv, false, true).unwrap();
            let close = |x: &[f64], y: &[f64]| x.iter().zip(y).all(|(u, v)| (u - v).abs() < 1e-12);
            prop_assert!(close(t.value(tn).unwrap().data(), t.value(tn_ref).unwrap().data()));
            for (ragged, padded) in [(nn, nn_ref), (nt, nt_ref)] {
                let r = t.value(ragged).unwrap().data().to_vec();
                let pd = t.value(padded).unwrap().data().to_vec();
                prop_assert_eq!(r.len(), n * q);
                for g in 0..b {
                    for (j, i) in (ptr[g]..ptr[g + 1]).enumerate() {
                        prop_assert!(close(
                            &r[i * q..(i + 1) * q],
                            &pd[(g * n_max + j) * q..(g * n_max + j + 1) * q]
                        ));
                    }
                }
            }
        }
    }
}

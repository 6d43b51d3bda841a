//! Regression tests for the classic reverse-mode bugs: rules that use their own output
//! under double backward, gradients reaching one leaf along several paths, backward
//! passes repeated after a `create_graph` one, the tape's memory, error values, and an
//! unrolled inner optimisation differentiated through its own gradient steps.

use readout_core::gradcheck::{GradcheckOptions, SplitMix64, check_gradients};
use readout_core::{CoreError, Tape, Tensor, Var};

type Out = Result<Var, CoreError>;

fn t1(data: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(&[data.len()], data.to_vec()).unwrap()
}

fn rand(seed: u64, dims: &[usize], lo: f64, hi: f64) -> Tensor<f64> {
    SplitMix64::new(seed).tensor(dims, lo, hi).unwrap()
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}\n got  {got:?}\n want {want:?}"
        );
    }
}

#[track_caller]
fn assert_gradcheck(name: &str, inputs: &[Tensor<f64>], f: impl Fn(&mut Tape<f64>, &[Var]) -> Out) {
    let r = check_gradients(f, inputs, &GradcheckOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(r.passed(), "{name}: {r}");
}

/// First and second derivatives of `Σ f(x)` for an elementwise `f`, from two nested
/// `grad` calls (the Hessian is diagonal, so the second `grad` of `Σ f'(x)` is `f''`).
fn first_and_second(
    x: &Tensor<f64>,
    f: impl Fn(&mut Tape<f64>, Var) -> Out,
) -> (Vec<f64>, Vec<f64>) {
    let mut tape = Tape::new();
    let xv = tape.variable(x.clone());
    let y = f(&mut tape, xv).unwrap();
    let s = tape.sum(y).unwrap();
    let d1 = tape.grad(s, None, &[xv], true).unwrap()[0];
    let s1 = tape.sum(d1).unwrap();
    let d2 = tape.grad(s1, None, &[xv], false).unwrap()[0];
    (
        tape.value(d1).unwrap().data().to_vec(),
        tape.value(d2).unwrap().data().to_vec(),
    )
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// ---------------------------------------------------------------- own-output rules

#[test]
fn double_backward_of_rules_that_use_their_own_output() {
    let xs = [-2.5, -0.7, 0.0, 0.4, 1.3, 3.0];
    let x = t1(&xs);
    // (name, op, f', f'') with f'' ≠ 0: a rule that detaches its output gets 0 or
    // a wrong value here.
    type Case = (
        &'static str,
        fn(&mut Tape<f64>, Var) -> Out,
        fn(f64) -> f64,
        fn(f64) -> f64,
    );
    let cases: [Case; 6] = [
        ("exp", |t, x| t.exp(x), f64::exp, f64::exp),
        (
            "tanh",
            |t, x| t.tanh(x),
            |x| 1.0 - x.tanh().powi(2),
            |x| -2.0 * x.tanh() * (1.0 - x.tanh().powi(2)),
        ),
        (
            "sigmoid",
            |t, x| t.sigmoid(x),
            |x| sigmoid(x) * (1.0 - sigmoid(x)),
            |x| sigmoid(x) * (1.0 - sigmoid(x)) * (1.0 - 2.0 * sigmoid(x)),
        ),
        (
            "softplus",
            |t, x| t.softplus(x),
            sigmoid,
            |x| sigmoid(x) * (1.0 - sigmoid(x)),
        ),
        (
            "sqrt",
            |t, x| {
                let s = t.add_scalar(x, 3.0)?;
                t.sqrt(s)
            },
            |x| 0.5 / (x + 3.0).sqrt(),
            |x| -0.25 * (x + 3.0).powf(-1.5),
        ),
        (
            "recip",
            |t, x| {
                let s = t.add_scalar(x, 3.0)?;
                t.recip(s)
            },
            |x| -1.0 / (x + 3.0).powi(2),
            |x| 2.0 / (x + 3.0).powi(3),
        ),
    ];
    for (name, f, d1, d2) in cases {
        let (g1, g2) = first_and_second(&x, f);
        let w1: Vec<f64> = xs.iter().map(|&v| d1(v)).collect();
        let w2: Vec<f64> = xs.iter().map(|&v| d2(v)).collect();
        assert_close(&g1, &w1, 1e-12, &format!("{name}'"));
        assert_close(&g2, &w2, 1e-12, &format!("{name}''"));
        assert_gradcheck(name, std::slice::from_ref(&x), |t, x| f(t, x[0]));
    }
}

#[test]
fn second_derivative_of_sum_tanh_squared_closed_form() {
    // d²/dx² tanh²x = 2(1 − t²)(1 − 3t²): a polynomial test would not see a rule
    // that treats tanh's output as a constant.
    let xs = [-1.7, -0.3, 0.05, 0.6, 2.2];
    let (g1, g2) = first_and_second(&t1(&xs), |t, x| {
        let th = t.tanh(x)?;
        t.square(th)
    });
    let want1: Vec<f64> = xs
        .iter()
        .map(|&x| 2.0 * x.tanh() * (1.0 - x.tanh().powi(2)))
        .collect();
    let want2: Vec<f64> = xs
        .iter()
        .map(|&x| {
            let t = x.tanh();
            2.0 * (1.0 - t * t) * (1.0 - 3.0 * t * t)
        })
        .collect();
    assert_close(&g1, &want1, 1e-12, "d/dx tanh²");
    assert_close(&g2, &want2, 1e-12, "d²/dx² tanh²");
}

#[test]
fn second_derivative_of_sum_sigmoid_times_x_closed_form() {
    // f = x·s(x): f' = s + x·s(1 − s), f'' = s(1 − s)·(2 + x·(1 − 2s)).
    let xs = [-4.0, -1.1, 0.0, 0.8, 2.5, 7.0];
    let (g1, g2) = first_and_second(&t1(&xs), |t, x| {
        let s = t.sigmoid(x)?;
        t.mul(s, x)
    });
    let want1: Vec<f64> = xs
        .iter()
        .map(|&x| sigmoid(x) + x * sigmoid(x) * (1.0 - sigmoid(x)))
        .collect();
    let want2: Vec<f64> = xs
        .iter()
        .map(|&x| {
            let s = sigmoid(x);
            s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
        })
        .collect();
    assert_close(&g1, &want1, 1e-12, "d/dx x·σ");
    assert_close(&g2, &want2, 1e-12, "d²/dx² x·σ");
}

#[test]
fn third_derivative_through_three_nested_grads() {
    // f = Σ exp(2x)·... keep it simple: f = Σ tanh(x), f''' = −2(1 − t²)(1 − 3t²).
    let xs = [-0.9, 0.2, 1.4];
    let mut tape = Tape::new();
    let x = tape.variable(t1(&xs));
    let y = tape.tanh(x).unwrap();
    let f = tape.sum(y).unwrap();
    let d1 = tape.grad(f, None, &[x], true).unwrap()[0];
    let s1 = tape.sum(d1).unwrap();
    let d2 = tape.grad(s1, None, &[x], true).unwrap()[0];
    let s2 = tape.sum(d2).unwrap();
    let d3 = tape.grad(s2, None, &[x], false).unwrap()[0];
    let want: Vec<f64> = xs
        .iter()
        .map(|&x| {
            let t = x.tanh();
            -2.0 * (1.0 - t * t) * (1.0 - 3.0 * t * t)
        })
        .collect();
    assert_close(tape.value(d3).unwrap().data(), &want, 1e-12, "tanh'''");
}

#[test]
fn softmax_full_hessian_closed_form() {
    // L = Σ c·softmax(x): ∂L/∂x_j = p_j (c_j − c̄),
    // H_jk = p_j (δ_jk − p_k)(c_j − c̄) − p_j p_k (c_k − c̄).
    let xs: [f64; 4] = [0.3, -1.2, 0.8, 2.0];
    let cs = [1.5, -0.5, 0.25, 2.0];
    let n = xs.len();
    let e: Vec<f64> = xs.iter().map(|x| x.exp()).collect();
    let z: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|v| v / z).collect();
    let cbar: f64 = p.iter().zip(&cs).map(|(a, b)| a * b).sum();

    let mut tape = Tape::new();
    let x = tape.variable(t1(&xs));
    let c = tape.constant(t1(&cs));
    let sm = tape.softmax(x).unwrap();
    let pc = tape.mul(sm, c).unwrap();
    let l = tape.sum(pc).unwrap();
    let g = tape.grad(l, None, &[x], true).unwrap()[0];
    let want_g: Vec<f64> = (0..n).map(|j| p[j] * (cs[j] - cbar)).collect();
    assert_close(
        tape.value(g).unwrap().data(),
        &want_g,
        1e-12,
        "softmax grad",
    );
    for j in 0..n {
        let mut ej = vec![0.0; n];
        ej[j] = 1.0;
        let seed = tape.constant(t1(&ej));
        let row = tape.grad(g, Some(seed), &[x], false).unwrap()[0];
        let want: Vec<f64> = (0..n)
            .map(|k| {
                let d = if j == k { 1.0 } else { 0.0 };
                p[j] * (d - p[k]) * (cs[j] - cbar) - p[j] * p[k] * (cs[k] - cbar)
            })
            .collect();
        assert_close(
            tape.value(row).unwrap().data(),
            &want,
            1e-12,
            &format!("softmax Hessian row {j}"),
        );
    }
}

// ---------------------------------------------------------------- several paths into one leaf

#[test]
fn same_leaf_through_several_paths() {
    // f = Σ x·x + x: f' = 2x + 1, f'' = 2.
    let xs = [-1.5, 0.0, 0.7, 2.0];
    let (g1, g2) = first_and_second(&t1(&xs), |t, x| {
        let xx = t.mul(x, x)?;
        t.add(xx, x)
    });
    let want1: Vec<f64> = xs.iter().map(|x| 2.0 * x + 1.0).collect();
    assert_close(&g1, &want1, 1e-14, "x·x + x first");
    assert_close(&g2, &[2.0; 4], 1e-14, "x·x + x second");

    // y = tanh(x) used three times, x itself twice.
    let x = rand(1, &[2, 3], -1.0, 1.0);
    assert_gradcheck("tanh(x) reused", std::slice::from_ref(&x), |t, x| {
        let y = t.tanh(x[0])?;
        let yy = t.mul(y, y)?;
        let a = t.add(yy, y)?;
        let b = t.mul(a, x[0])?;
        t.sub(b, x[0])
    });
    // Gradients of one leaf via a broadcast path and a same-shape path.
    assert_gradcheck(
        "row broadcast and direct",
        std::slice::from_ref(&x),
        |t, x| {
            let r = t.sum_cols(x[0])?;
            let b = t.mul(x[0], r)?;
            t.add(b, x[0])
        },
    );
}

#[test]
fn same_leaf_in_both_operands_of_matmul() {
    // f = Σ W ∘ (X·X): ∂f/∂X = W·Xᵀ + Xᵀ·W.
    let x = rand(2, &[3, 3], -1.0, 1.0);
    let w = rand(3, &[3, 3], -1.0, 1.0);
    let mut tape = Tape::new();
    let xv = tape.variable(x.clone());
    let wv = tape.constant(w.clone());
    let xx = tape.matmul(xv, xv).unwrap();
    let p = tape.mul(xx, wv).unwrap();
    let f = tape.sum(p).unwrap();
    let g = tape.backward(f).unwrap();
    let (xd, wd) = (x.data(), w.data());
    let mut want = vec![0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            for k in 0..3 {
                // (W·Xᵀ)_ij = Σ_k W_ik X_jk ; (Xᵀ·W)_ij = Σ_k X_ki W_kj
                want[i * 3 + j] += wd[i * 3 + k] * xd[j * 3 + k] + xd[k * 3 + i] * wd[k * 3 + j];
            }
        }
    }
    assert_close(g.get(xv).unwrap().data(), &want, 1e-13, "d Σ W∘(X·X) / dX");
    assert!(g.get(wv).is_none(), "a constant gets no gradient");

    assert_gradcheck("X·X", std::slice::from_ref(&x), |t, x| {
        t.matmul(x[0], x[0])
    });
    let r = rand(4, &[3, 2], -1.0, 1.0);
    for (ta, tb) in [(false, true), (true, false)] {
        assert_gradcheck(
            &format!("X op X ta={ta} tb={tb}"),
            std::slice::from_ref(&r),
            |t, x| t.matmul_with(x[0], x[0], ta, tb),
        );
    }
    let b = rand(5, &[2, 3, 3], -1.0, 1.0);
    assert_gradcheck("batched X·X", std::slice::from_ref(&b), |t, x| {
        t.matmul(x[0], x[0])
    });
}

// ---------------------------------------------------------------- repeated backward passes

/// `f(x, w) = Σ softplus(x·w) · tanh(x·w)`, a small smooth scalar function.
fn small_net(t: &mut Tape<f64>, x: Var, w: Var) -> Out {
    let h = t.matmul(x, w)?;
    let a = t.softplus(h)?;
    let b = t.tanh(h)?;
    let p = t.mul(a, b)?;
    t.sum(p)
}

#[test]
fn backward_after_a_create_graph_grad_matches_a_fresh_tape() {
    let x0 = rand(10, &[4, 3], -1.0, 1.0);
    let w0 = rand(11, &[3, 2], -1.0, 1.0);

    // Fresh tape: plain backward.
    let mut fresh = Tape::new();
    let (x, w) = (fresh.variable(x0.clone()), fresh.variable(w0.clone()));
    let f = small_net(&mut fresh, x, w).unwrap();
    let g_fresh = fresh.backward(f).unwrap();
    let (gx, gw) = (
        g_fresh.get(x).unwrap().clone(),
        g_fresh.get(w).unwrap().clone(),
    );

    // Same tape: grad with create_graph, then backward, twice, then another recorded
    // grad: every result equals the fresh one.
    let mut tape = Tape::new();
    let (x, w) = (tape.variable(x0.clone()), tape.variable(w0.clone()));
    let f = small_net(&mut tape, x, w).unwrap();
    let rec = tape.grad(f, None, &[x, w], true).unwrap();
    assert_close(
        tape.value(rec[0]).unwrap().data(),
        gx.data(),
        1e-14,
        "recorded dx",
    );
    assert_close(
        tape.value(rec[1]).unwrap().data(),
        gw.data(),
        1e-14,
        "recorded dw",
    );
    for pass in 0..2 {
        let g = tape.backward(f).unwrap();
        assert_close(
            g.get(x).unwrap().data(),
            gx.data(),
            1e-14,
            &format!("dx pass {pass}"),
        );
        assert_close(
            g.get(w).unwrap().data(),
            gw.data(),
            1e-14,
            &format!("dw pass {pass}"),
        );
        let e = tape.grad(f, None, &[x, w], false).unwrap();
        assert_close(
            tape.value(e[0]).unwrap().data(),
            gx.data(),
            1e-14,
            "eager dx",
        );
    }
    let rec2 = tape.grad(f, None, &[x, w], true).unwrap();
    assert_close(
        tape.value(rec2[1]).unwrap().data(),
        gw.data(),
        1e-14,
        "recorded dw again",
    );

    // A backward through the recorded gradient (a gradient penalty) equals the same
    // computation on a fresh tape.
    let penalty = |t: &mut Tape<f64>, x: Var, w: Var| -> Out {
        let f = small_net(t, x, w)?;
        let g = t.grad(f, None, &[w], true)?[0];
        let g2 = t.square(g)?;
        let s = t.sum(g2)?;
        t.add(s, f)
    };
    let mut fresh = Tape::new();
    let (fx, fw) = (fresh.variable(x0.clone()), fresh.variable(w0.clone()));
    let p = penalty(&mut fresh, fx, fw).unwrap();
    let want = fresh.backward(p).unwrap();
    // On the used tape: after the earlier passes, and twice in a row.
    let p = penalty(&mut tape, x, w).unwrap();
    for pass in 0..2 {
        let got = tape.backward(p).unwrap();
        assert_close(
            got.get(x).unwrap().data(),
            want.get(fx).unwrap().data(),
            1e-13,
            &format!("penalty dx pass {pass}"),
        );
        assert_close(
            got.get(w).unwrap().data(),
            want.get(fw).unwrap().data(),
            1e-13,
            &format!("penalty dw pass {pass}"),
        );
    }
    assert_gradcheck("gradient penalty", &[x0, w0], |t, v| penalty(t, v[0], v[1]));
}

// ---------------------------------------------------------------- tape memory

#[test]
fn eager_passes_leave_only_their_results_on_the_tape() {
    let mut tape = Tape::new();
    let x = tape.variable(rand(20, &[5, 3], -1.0, 1.0));
    let w = tape.variable(rand(21, &[3, 2], -1.0, 1.0));
    let f = small_net(&mut tape, x, w).unwrap();
    let n0 = tape.len();
    let bytes0 = tape.stats().value_bytes;

    let g = tape.grad(f, None, &[x, w], false).unwrap();
    assert_eq!(tape.len(), n0 + 2, "eager grad keeps only its two results");
    assert!(
        !tape.requires_grad(g[0]).unwrap(),
        "eager gradients are constants"
    );
    assert_eq!(
        tape.stats().value_bytes,
        bytes0 + (15 + 6) * std::mem::size_of::<f64>()
    );

    let n1 = tape.len();
    let grads = tape.backward(f).unwrap();
    assert_eq!(tape.len(), n1, "backward leaves the tape as it was");
    assert_eq!(grads.iter().count(), 2);

    // A seed given by the caller stays; nothing else does.
    let y = tape.matmul(x, w).unwrap();
    let seed = tape.constant(rand(22, &[5, 2], -1.0, 1.0));
    let n2 = tape.len();
    tape.grad(y, Some(seed), &[x], false).unwrap();
    assert_eq!(tape.len(), n2 + 1);

    // A recorded grad grows the tape; truncating to a mark frees it again.
    let (mark, n3) = (tape.mark(), tape.len());
    let before = tape.stats();
    let rec = tape.grad(f, None, &[x, w], true).unwrap();
    assert!(tape.len() > n3 + 2);
    assert!(tape.stats().recorded > before.recorded);
    assert!(tape.requires_grad(rec[1]).unwrap());
    tape.truncate(mark);
    assert_eq!(tape.stats().nodes, before.nodes);
    assert_eq!(tape.stats().value_bytes, before.value_bytes);
    assert_eq!(tape.stats().recorded, before.recorded);
}

// ---------------------------------------------------------------- errors

#[track_caller]
fn assert_mentions(e: &CoreError, words: &[&str]) {
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "`{text}` does not mention `{w}`");
    }
}

#[test]
fn shape_mismatches_name_the_op_and_both_shapes() {
    let mut tape = Tape::<f64>::new();
    let a = tape.variable(Tensor::zeros(&[3, 4]).unwrap());
    let b = tape.variable(Tensor::zeros(&[2, 4]).unwrap());
    let c = tape.variable(Tensor::zeros(&[1, 3, 4]).unwrap());
    let n = tape.len();
    for (name, r) in [
        ("add", tape.add(a, b)),
        ("sub", tape.sub(a, b)),
        ("mul", tape.mul(a, b)),
        ("div", tape.div(a, b)),
    ] {
        let e = r.unwrap_err();
        assert!(matches!(e, CoreError::ShapeMismatch { .. }), "{e:?}");
        assert_mentions(&e, &[name, "[3, 4]", "[2, 4]"]);
    }
    let e = tape
        .mask_mul(a, Tensor::zeros(&[4, 3]).unwrap())
        .unwrap_err();
    assert_mentions(&e, &["mask_mul", "[3, 4]", "[4, 3]"]);
    let e = tape.matmul(a, a).unwrap_err();
    assert_mentions(&e, &["matmul", "[3, 4]", "inner"]);
    let e = tape.matmul_with(a, b, true, false).unwrap_err();
    assert_mentions(&e, &["matmul", "[3, 4]", "[2, 4]"]);
    let e = tape.matmul(a, c).unwrap_err();
    assert_mentions(&e, &["matmul", "[3, 4]", "[1, 3, 4]"]);
    let e = tape.concat_cols(a, b).unwrap_err();
    assert_mentions(&e, &["concat_cols", "[3, 4]", "[2, 4]"]);
    let w = tape.variable(Tensor::zeros(&[3]).unwrap());
    let e = tape.layer_norm(a, Some((w, w)), 1e-5).unwrap_err();
    assert_mentions(&e, &["layer_norm", "weight", "[3]", "[3, 4]"]);
    let y = tape.tanh(a).unwrap();
    let e = tape.grad(y, Some(b), &[a], false).unwrap_err();
    assert_mentions(&e, &["grad", "seed", "[2, 4]", "[3, 4]"]);
    let e = tape.grad(y, Some(b), &[a], true).unwrap_err();
    assert_mentions(&e, &["grad", "[2, 4]", "[3, 4]"]);
    // Failed ops add nothing to the tape (the tanh and the mask constant aside).
    assert!(tape.len() <= n + 3, "{} nodes after errors", tape.len() - n);

    let e = tape.gather_rows(a, &[0, 3]).unwrap_err();
    assert!(matches!(
        e,
        CoreError::IndexOutOfRange {
            op: "gather_rows",
            position: 1,
            value: 3,
            bound: 3,
            ..
        }
    ));
    let e = tape.scatter_add(a, &[0, 1], 2).unwrap_err();
    assert!(matches!(
        e,
        CoreError::IndexLength {
            op: "scatter_add",
            len: 2,
            expected: 3,
            ..
        }
    ));
    let e = tape.segment_sum(a, &[0, 2, 1, 3]).unwrap_err();
    assert!(matches!(
        e,
        CoreError::BadPtr {
            op: "segment_sum",
            position: 2,
            ..
        }
    ));
    let e = tape.reshape(a, &[5, 2]).unwrap_err();
    assert_mentions(&e, &["reshape", "[5, 2]", "12"]);
    let e = tape.permute(a, [0, 1, 2]).unwrap_err();
    assert_mentions(&e, &["permute", "[3, 4]"]);
    let e = tape.permute(c, [0, 1, 1]).unwrap_err();
    assert!(matches!(e, CoreError::InvalidValue { op: "permute", .. }));
}

#[test]
fn handles_dropped_by_truncate_are_unknown() {
    let mut tape = Tape::<f64>::new();
    let x = tape.variable(Tensor::full(&[2], 0.5).unwrap());
    let mark = tape.mark();
    let y = tape.tanh(x).unwrap();
    let z = tape.sum(y).unwrap();
    tape.truncate(mark);
    assert_eq!(tape.len(), 1);
    for e in [
        tape.tanh(y).unwrap_err(),
        tape.value(z).unwrap_err().clone(),
        tape.grad(z, None, &[x], false).unwrap_err(),
        tape.grad(x, None, &[y], false).unwrap_err(),
        tape.backward(z).unwrap_err(),
        tape.add(x, y).unwrap_err(),
    ] {
        assert!(matches!(e, CoreError::UnknownVar { .. }), "{e:?}");
        assert_mentions(&e, &["not on this tape"]);
    }
    let e = tape.tanh(y).unwrap_err();
    assert!(
        matches!(
            e,
            CoreError::UnknownVar {
                op: "tanh",
                id: 1,
                len: 1
            }
        ),
        "{e:?}"
    );
    // The surviving leaf still works.
    let s = tape.sum(x).unwrap();
    assert_eq!(
        tape.backward(s).unwrap().get(x).unwrap().data(),
        &[1.0, 1.0]
    );
}

#[test]
fn gradients_of_many_values_need_a_seed() {
    let mut tape = Tape::<f64>::new();
    let x = tape.variable(Tensor::full(&[3], 0.5).unwrap());
    let y = tape.exp(x).unwrap();
    let n = tape.len();
    let e = tape.grad(y, None, &[x], false).unwrap_err();
    assert!(
        matches!(e, CoreError::NotScalar { op: "grad", .. }),
        "{e:?}"
    );
    assert_mentions(&e, &["grad", "[3]", "seed"]);
    let e = tape.grad(y, None, &[x], true).unwrap_err();
    assert!(matches!(e, CoreError::NotScalar { .. }));
    let e = tape.backward(y).unwrap_err();
    assert!(
        matches!(e, CoreError::NotScalar { op: "backward", .. }),
        "{e:?}"
    );
    assert_mentions(&e, &["backward", "[3]"]);
    assert_eq!(tape.len(), n, "failed passes leave nothing behind");
    // One value of any rank is fine without a seed.
    let r = tape.reshape(x, &[1, 3]).unwrap();
    let s = tape.sum_rows(r).unwrap();
    assert_eq!(tape.value(s).unwrap().shape(), &[1]);
    let g = tape.grad(s, None, &[x], false).unwrap()[0];
    assert_eq!(tape.value(g).unwrap().data(), &[1.0; 3]);
}

// ---------------------------------------------------------------- unrolled inner optimisation

/// `E(a, y) = ½Σ(y − a)² + ½Σ softplus(y∘a) + Σ tanh(y·M)²`, smooth in both.
fn energy(t: &mut Tape<f64>, a: Var, y: Var) -> Out {
    let m = t.constant(Tensor::from_vec(&[2, 2], vec![0.8, -0.3, 0.5, 1.1]).unwrap());
    let d = t.sub(y, a)?;
    let d2 = t.square(d)?;
    let e1 = t.sum(d2)?;
    let ya = t.mul(y, a)?;
    let sp = t.softplus(ya)?;
    let e2 = t.sum(sp)?;
    let ym = t.matmul(y, m)?;
    let th = t.tanh(ym)?;
    let th2 = t.square(th)?;
    let e3 = t.sum(th2)?;
    let e12 = t.add(e1, e2)?;
    let e12 = t.scale(e12, 0.5)?;
    t.add(e12, e3)
}

/// `y_{t+1} = y_t − softplus(lr)·∂E/∂y(a, y_t)` for `steps` steps from a fixed `y_0`
/// (a variable leaf, as PyG's zeros with `requires_grad`), then `Σ (y_T − target)²`.
fn unrolled_loss(t: &mut Tape<f64>, a: Var, lr: Var, steps: usize) -> Out {
    let y0 = Tensor::from_vec(&[3, 2], vec![0.1, -0.2, 0.3, 0.0, -0.4, 0.25]).unwrap();
    let target = Tensor::from_vec(&[3, 2], vec![0.5, -0.5, 0.2, 0.7, -0.1, 0.3]).unwrap();
    let mut y = t.variable(y0);
    let step = t.softplus(lr)?;
    for _ in 0..steps {
        let e = energy(t, a, y)?;
        let g = t.grad(e, None, &[y], true)?[0];
        let d = t.mul(g, step)?;
        y = t.sub(y, d)?;
    }
    let target = t.constant(target);
    let r = t.sub(y, target)?;
    let r2 = t.square(r)?;
    t.sum(r2)
}

/// The inner step size is `softplus(LR0)`: small enough that four steps stay far from
/// the inner optimum, so the loss depends on it clearly.
const LR0: f64 = -2.0;

#[test]
fn unrolled_inner_optimisation_gradients_match_finite_differences() {
    let a = Tensor::from_vec(&[3, 2], vec![0.4, -0.6, 1.0, 0.2, -0.3, 0.8]).unwrap();
    let lr = Tensor::scalar(LR0);
    for steps in [1, 3, 5] {
        // First and second order of the loss in (a, lr): the second order runs a third
        // nested differentiation through every inner gradient.
        assert_gradcheck(
            &format!("unrolled {steps} steps"),
            &[a.clone(), lr.clone()],
            |t, x| unrolled_loss(t, x[0], x[1], steps),
        );
    }
    // And through `backward`, against a plain central difference in lr.
    let mut tape = Tape::new();
    let (av, lv) = (tape.variable(a.clone()), tape.variable(lr.clone()));
    let loss = unrolled_loss(&mut tape, av, lv, 4).unwrap();
    let g = tape.backward(loss).unwrap();
    let at = |l: f64| {
        let mut t = Tape::new();
        let (av, lv) = (t.variable(a.clone()), t.variable(Tensor::scalar(l)));
        let loss = unrolled_loss(&mut t, av, lv, 4).unwrap();
        t.value(loss).unwrap().item()
    };
    let h = 1e-6;
    let fd = (at(LR0 + h) - at(LR0 - h)) / (2.0 * h);
    let dlr = g.get(lv).unwrap().item();
    assert!((dlr - fd).abs() < 1e-7, "d loss / d lr: {dlr} vs {fd}");
    assert!(dlr.abs() > 1e-2, "the check must not be vacuous: {dlr}");
    assert!(g.get(av).unwrap().data().iter().all(|v| v.abs() > 0.0));
}

#[test]
fn unrolled_inner_optimisation_over_scattered_sets() {
    // The shape of EquilibriumAggregation's inner problem: per-set outputs y [S, C],
    // gathered to the rows' sets, an energy through layer norm and softplus, summed
    // per set, with an empty set.
    let x = rand(30, &[5, 3], -1.0, 1.0);
    let index = [2usize, 0, 2, 1, 0];
    let sets = 4; // set 3 is empty
    let w0 = rand(31, &[3, 2], -0.8, 0.8);
    let lr0 = Tensor::scalar(-0.5);
    let f = |t: &mut Tape<f64>, p: &[Var]| -> Out {
        let (w, lr) = (p[0], p[1]);
        let xc = t.constant(x.clone());
        let xw = t.matmul(xc, w)?;
        let step = t.softplus(lr)?;
        let mut y = t.variable(Tensor::zeros(&[sets, 2]).unwrap());
        for _ in 0..3 {
            let yr = t.gather_rows(y, &index)?;
            let h = t.add(xw, yr)?;
            let h = t.layer_norm(h, None, 1e-5)?;
            let h = t.softplus(h)?;
            let per_set = t.scatter_mean(h, &index, sets)?;
            let y2 = t.square(y)?;
            let reg = t.scale(y2, 0.5)?;
            let e = t.add(per_set, reg)?;
            let e = t.sum(e)?;
            let g = t.grad(e, None, &[y], true)?[0];
            let d = t.mul(g, step)?;
            y = t.sub(y, d)?;
        }
        let s = t.sum_rows(y)?;
        let s = t.tanh(s)?;
        t.sum(s)
    };
    assert_gradcheck("unrolled over sets", &[w0, lr0], f);
}

// ---------------------------------------------------------------- seeds, wrt and recording

#[test]
fn a_seed_that_requires_a_gradient_is_differentiated_through() {
    // out = J(x)ᵀ·tanh(s): linear in the seed, so d out / d s must come out right, and
    // every rule must record its use of the incoming gradient.
    let x = rand(40, &[3, 2], -1.0, 1.0);
    let s = rand(41, &[3, 3], -1.0, 1.0);
    let w = rand(42, &[2, 3], -1.0, 1.0);
    assert_gradcheck("grad with a recorded seed", &[x, s], |t, v| {
        let wc = t.constant(w.clone());
        let h = t.matmul(v[0], wc)?;
        let y = t.softmax(h)?;
        let y = t.layer_norm(y, None, 1e-2)?;
        let y = t.softplus(y)?;
        let seed = t.tanh(v[1])?;
        Ok(t.grad(y, Some(seed), &[v[0]], true)?[0])
    });
}

#[test]
fn gradients_with_respect_to_intermediate_nodes() {
    let xs = [-1.2, 0.1, 0.9];
    let mut tape = Tape::new();
    let x = tape.variable(t1(&xs));
    let y = tape.tanh(x).unwrap();
    let yy = tape.mul(y, y).unwrap();
    let z = tape.sum(yy).unwrap();
    // dz/dy = 2y, recorded; d/dx Σ 2y = 2(1 − y²).
    let [gy, gx] = tape.grad(z, None, &[y, x], true).unwrap()[..] else {
        unreachable!()
    };
    let th: Vec<f64> = xs.iter().map(|v: &f64| v.tanh()).collect();
    let want: Vec<f64> = th.iter().map(|t| 2.0 * t).collect();
    assert_close(tape.value(gy).unwrap().data(), &want, 1e-14, "dz/dy");
    let want: Vec<f64> = th.iter().map(|t| 2.0 * t * (1.0 - t * t)).collect();
    assert_close(tape.value(gx).unwrap().data(), &want, 1e-14, "dz/dx");
    let s = tape.sum(gy).unwrap();
    let d = tape.grad(s, None, &[x], false).unwrap()[0];
    let want: Vec<f64> = th.iter().map(|t| 2.0 * (1.0 - t * t)).collect();
    assert_close(tape.value(d).unwrap().data(), &want, 1e-14, "d/dx Σ dz/dy");
}

#[test]
fn unrelated_and_later_variables_get_zero_gradients() {
    let mut tape = Tape::<f64>::new();
    let x = tape.variable(t1(&[0.5, -0.5]));
    let unrelated = tape.variable(Tensor::full(&[2, 3], 1.0).unwrap());
    let y = tape.exp(x).unwrap();
    let f = tape.sum(y).unwrap();
    let later = tape.variable(Tensor::full(&[4], 1.0).unwrap());
    for create_graph in [false, true] {
        let g = tape
            .grad(f, None, &[unrelated, later, x], create_graph)
            .unwrap();
        assert_eq!(tape.value(g[0]).unwrap(), &Tensor::zeros(&[2, 3]).unwrap());
        assert_eq!(tape.value(g[1]).unwrap(), &Tensor::zeros(&[4]).unwrap());
        assert_close(
            tape.value(g[2]).unwrap().data(),
            &[0.5f64.exp(), (-0.5f64).exp()],
            1e-15,
            "d Σ exp / dx",
        );
    }
    let b = tape.backward(f).unwrap();
    assert!(b.get(unrelated).is_none() && b.get(later).is_none());
    assert_eq!(b.iter().count(), 1);
}

#[test]
fn nodes_made_while_not_recording_are_constants() {
    let mut tape = Tape::<f64>::new();
    let x = tape.variable(t1(&[0.3, 0.7]));
    let was = tape.set_recording(false);
    assert!(was);
    let y = tape.tanh(x).unwrap();
    assert!(!tape.requires_grad(y).unwrap());
    tape.set_recording(true);
    let z = tape.mul(y, x).unwrap(); // y is a constant here: dz/dx = y
    let f = tape.sum(z).unwrap();
    let g = tape.backward(f).unwrap();
    assert_close(
        g.get(x).unwrap().data(),
        &[0.3f64.tanh(), 0.7f64.tanh()],
        1e-15,
        "no_grad branch",
    );
    // grad restores the recording flag it found.
    tape.set_recording(false);
    tape.grad(f, None, &[x], true).unwrap();
    assert!(!tape.is_recording());
}

#[test]
fn eager_inner_loop_with_truncation_matches_the_recorded_loop() {
    // The layers' eager mode: each inner gradient step computed without recording, its
    // graph truncated away, continuing from a fresh variable. Same values as the
    // recorded loop, with a tape that does not grow with the step count.
    let a0 = Tensor::from_vec(&[3, 2], vec![0.4, -0.6, 1.0, 0.2, -0.3, 0.8]).unwrap();
    let y0 = Tensor::from_vec(&[3, 2], vec![0.1, -0.2, 0.3, 0.0, -0.4, 0.25]).unwrap();
    let lr = 0.3;
    let mut rec = Tape::new();
    let a = rec.constant(a0.clone());
    let mut y = rec.variable(y0.clone());
    for _ in 0..6 {
        let e = energy(&mut rec, a, y).unwrap();
        let g = rec.grad(e, None, &[y], true).unwrap()[0];
        let d = rec.scale(g, lr).unwrap();
        y = rec.sub(y, d).unwrap();
    }
    let want = rec.value(y).unwrap().clone();

    let mut eager = Tape::new();
    let a = eager.constant(a0);
    // Mark before the state: each step drops the previous state with its graph.
    let mark = eager.mark();
    let mut y = eager.variable(y0);
    let len = eager.len();
    for _ in 0..6 {
        let e = energy(&mut eager, a, y).unwrap();
        let g = eager.grad(e, None, &[y], false).unwrap()[0];
        let d = eager.scale(g, lr).unwrap();
        let next = eager.sub(y, d).unwrap();
        let v = eager.value(next).unwrap().clone();
        eager.truncate(mark);
        y = eager.variable(v);
        assert_eq!(eager.len(), len, "the eager loop does not grow the tape");
    }
    assert_close(
        eager.value(y).unwrap().data(),
        want.data(),
        1e-14,
        "eager vs recorded inner loop",
    );
}

#[test]
fn f32_gradients_agree_with_f64() {
    // The same composite on both element types: the f32 path (its own kernels) must
    // give the f64 gradients to f32 accuracy, first and second order.
    fn net<T: readout_core::Real>(t: &mut Tape<T>, x: Var, w: Var) -> Out {
        let h = t.matmul(x, w)?;
        let h = t.layer_norm(h, None, T::from_f64(1e-5))?;
        let s = t.softmax(h)?;
        let p = t.softplus(h)?;
        let q = t.mul(s, p)?;
        let r = t.scatter_add(q, &[1, 0, 1, 2], 3)?;
        let r = t.tanh(r)?;
        let g = t.gather_rows(r, &[2, 2, 0])?;
        let g = t.sigmoid(g)?;
        t.sum(g)
    }
    fn grads<T: readout_core::Real>(x: &Tensor<f64>, w: &Tensor<f64>) -> Vec<Vec<f64>> {
        let mut t = Tape::<T>::new();
        let (xv, wv) = (t.variable(x.cast()), t.variable(w.cast()));
        let f = net(&mut t, xv, wv).unwrap();
        let g = t.grad(f, None, &[xv, wv], true).unwrap();
        let s0 = t.sum(g[0]).unwrap();
        let s1 = t.sum(g[1]).unwrap();
        let s = t.add(s0, s1).unwrap();
        let h = t.grad(s, None, &[xv, wv], false).unwrap();
        [g[0], g[1], h[0], h[1]]
            .iter()
            .map(|&v| t.value(v).unwrap().cast::<f64>().into_vec())
            .collect()
    }
    let x = rand(50, &[4, 3], -1.0, 1.0);
    let w = rand(51, &[3, 5], -1.0, 1.0);
    let g64 = grads::<f64>(&x, &w);
    let g32 = grads::<f32>(&x, &w);
    for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (u, v) in a.iter().zip(b) {
            assert!(
                (u - v).abs() <= 1e-4 * scale,
                "gradient {i}: f32 {u} vs f64 {v}"
            );
        }
    }
}

#[test]
fn grad_runs_only_the_rules_between_its_wrt_and_the_output() {
    // grad(E, [y], create_graph) inside an unrolled loop: E also depends on parameters
    // (variables), but the recorded gradient must not include the rules towards them.
    // The tape grows by the same amount whether the parameters are variables or not.
    let growth = |params_are_variables: bool| {
        let mut t = Tape::<f64>::new();
        let a0 = rand(60, &[6, 4], -1.0, 1.0);
        let w0 = rand(61, &[4, 4], -1.0, 1.0);
        let (a, w) = if params_are_variables {
            (t.variable(a0), t.variable(w0))
        } else {
            (t.constant(a0), t.constant(w0))
        };
        let y = t.variable(rand(62, &[6, 4], -1.0, 1.0));
        let h = t.matmul(a, w).unwrap();
        let h = t.tanh(h).unwrap();
        let z = t.mul(h, y).unwrap();
        let z = t.softplus(z).unwrap();
        let e = t.sum(z).unwrap();
        let (n, bytes) = (t.len(), t.stats().value_bytes);
        let g = t.grad(e, None, &[y], true).unwrap()[0];
        let grown = (t.len() - n, t.stats().value_bytes - bytes);
        // The pruned gradient is still the full one, and differentiable in a and w.
        let s = t.sum(g).unwrap();
        let d = t.grad(s, None, &[a, w], false).unwrap();
        let nonzero = t.value(d[0]).unwrap().data().iter().any(|v| *v != 0.0);
        (grown, t.value(g).unwrap().clone(), nonzero)
    };
    let (with, g_with, nz_with) = growth(true);
    let (without, g_without, nz_without) = growth(false);
    assert_eq!(with, without, "(nodes, bytes) recorded by grad");
    assert_eq!(g_with, g_without);
    assert!(nz_with && !nz_without);
}

/// `∂ⁿ/∂xⁿ Σ f(x)` for an elementwise `f`, from `n` nested `grad` calls.
fn nth_derivative(x: &Tensor<f64>, n: usize, f: impl Fn(&mut Tape<f64>, Var) -> Out) -> Vec<f64> {
    let mut tape = Tape::new();
    let xv = tape.variable(x.clone());
    let mut y = f(&mut tape, xv).unwrap();
    for k in 0..n {
        let s = tape.sum(y).unwrap();
        y = tape.grad(s, None, &[xv], k + 1 < n).unwrap()[0];
    }
    tape.value(y).unwrap().data().to_vec()
}

#[test]
fn powers_at_zero_have_finite_higher_derivatives() {
    // PyTorch's pow backward is zero for the exponent 0; computing 0·x^(−1) instead
    // gave NaN at x = 0 for d/dx x⁰, d²/dx² x¹ and d³/dx³ x².
    let x = t1(&[0.0, 1.5, -2.0]);
    assert_eq!(nth_derivative(&x, 1, |t, x| t.powf(x, 0.0)), [0.0; 3]);
    assert_eq!(nth_derivative(&x, 1, |t, x| t.powf(x, 1.0)), [1.0; 3]);
    assert_eq!(nth_derivative(&x, 2, |t, x| t.powf(x, 1.0)), [0.0; 3]);
    assert_eq!(nth_derivative(&x, 2, |t, x| t.powf(x, 2.0)), [2.0; 3]);
    assert_eq!(nth_derivative(&x, 3, |t, x| t.powf(x, 2.0)), [0.0; 3]);
    assert_eq!(nth_derivative(&x, 3, |t, x| t.powf(x, 3.0)), [6.0; 3]);
    assert_eq!(nth_derivative(&x, 4, |t, x| t.powf(x, 3.0)), [0.0; 3]);
}

#[test]
fn clamp_min_selects_the_gradient_instead_of_multiplying_it() {
    // sqrt(clamp_min(x, 0)): below 0 the clamp's output is 0, where sqrt's derivative
    // is infinite. PyTorch's clamp backward is where(x >= c, g, 0), which gives 0;
    // multiplying by a 0/1 mask gave inf·0 = NaN.
    let x = t1(&[-1.0, 4.0, -0.5, 0.25]);
    let mut tape = Tape::new();
    let xv = tape.variable(x.clone());
    let c = tape.clamp_min(xv, 0.0).unwrap();
    let r = tape.sqrt(c).unwrap();
    let s = tape.sum(r).unwrap();
    let g = tape.grad(s, None, &[xv], true).unwrap()[0];
    assert_eq!(tape.value(g).unwrap().data(), &[0.0, 0.25, 0.0, 1.0]);
    let s2 = tape.sum(g).unwrap();
    let h = tape.grad(s2, None, &[xv], false).unwrap()[0];
    // d/dx ½x^(−½) = −¼x^(−3/2) where x > 0, 0 elsewhere.
    assert_eq!(
        tape.value(h).unwrap().data(),
        &[0.0, -0.25 / 8.0, 0.0, -2.0]
    );
    let b = tape.backward(s).unwrap();
    assert_eq!(b.get(xv).unwrap().data(), &[0.0, 0.25, 0.0, 1.0]);
    // At the threshold itself the gradient passes, as in PyTorch (x ≥ c).
    let mut tape = Tape::new();
    let xv = tape.variable(t1(&[0.3]));
    let c = tape.clamp_min(xv, 0.3).unwrap();
    let s = tape.sum(c).unwrap();
    assert_eq!(tape.backward(s).unwrap().get(xv).unwrap().data(), &[1.0]);
}

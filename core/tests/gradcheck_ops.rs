//! Every op's first and second derivatives against central finite differences, in
//! `f64`, on inputs kept away from kinks: one test per op family, each a table of
//! shapes (including 0 and 1 rows) and variants.

use readout_core::gradcheck::{Check, GradcheckOptions, SplitMix64, check_gradients};
use readout_core::{CoreError, Tape, Tensor, Var};

type Out = Result<Var, CoreError>;

/// Uniform values in `[lo, hi)`, seeded by the dimensions so every table row differs.
fn rand(dims: &[usize], lo: f64, hi: f64) -> Tensor<f64> {
    let seed = dims
        .iter()
        .fold(0x1234_5678u64, |s, &d| {
            s.wrapping_mul(31).wrapping_add(d as u64)
        })
        .wrapping_add((lo.to_bits() >> 20) ^ (hi.to_bits() >> 24));
    SplitMix64::new(seed).tensor(dims, lo, hi).unwrap()
}

fn tensor(dims: &[usize], data: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(dims, data.to_vec()).unwrap()
}

/// Checks `f` itself, and `y·tanh(y)` of its output `y`: for an op that is linear in
/// its inputs the second derivative of `f` alone is zero, and the nonlinear head is
/// what makes the second-order check run the op's backward rule through its own
/// backward rule.
#[track_caller]
fn check(name: &str, inputs: &[Tensor<f64>], f: impl Fn(&mut Tape<f64>, &[Var]) -> Out) {
    let opts = GradcheckOptions::default();
    let n: usize = inputs.iter().map(Tensor::numel).sum();
    let report = check_gradients(&f, inputs, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.passed(), "{name}: {report}");
    for c in &report.checks {
        assert_eq!(
            c.compared, n,
            "{name}: {:?} compared too few elements",
            c.check
        );
    }
    assert!(report.summary(Check::SecondOrder).is_some());
    let head = |t: &mut Tape<f64>, xs: &[Var]| {
        let y = f(t, xs)?;
        let s = t.tanh(y)?;
        t.mul(y, s)
    };
    let report = check_gradients(head, inputs, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.passed(), "{name} (·tanh head): {report}");
}

// ---------------------------------------------------------------- linear algebra

#[test]
fn matmul_all_transposes_batched_and_empty() {
    // (m, k, n) of op(A)·op(B), including empty and one-row/one-column products.
    let sizes = [
        (3, 4, 2),
        (1, 3, 1),
        (2, 1, 3),
        (0, 3, 2),
        (3, 0, 2),
        (2, 3, 0),
    ];
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for &(m, k, n) in &sizes {
            let ad = if ta { [k, m] } else { [m, k] };
            let bd = if tb { [n, k] } else { [k, n] };
            let name = format!("matmul ta={ta} tb={tb} m={m} k={k} n={n}");
            check(
                &name,
                &[rand(&ad, -1.0, 1.0), rand(&bd, -1.0, 1.0)],
                |t, x| t.matmul_with(x[0], x[1], ta, tb),
            );
            for batch in [1, 2] {
                let a3 = [batch, ad[0], ad[1]];
                let b3 = [batch, bd[0], bd[1]];
                check(
                    &format!("{name} batch={batch}"),
                    &[rand(&a3, -1.0, 1.0), rand(&b3, -1.0, 1.0)],
                    |t, x| t.matmul_with(x[0], x[1], ta, tb),
                );
            }
        }
    }
    check(
        "matmul plain",
        &[rand(&[3, 4], -1.0, 1.0), rand(&[4, 5], -1.0, 1.0)],
        |t, x| t.matmul(x[0], x[1]),
    );
}

// ---------------------------------------------------------------- broadcasting arithmetic

/// `(a's shape, b's shape)` for every broadcast kind the binary ops take.
fn broadcast_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    let v = |a: &[usize], b: &[usize]| (a.to_vec(), b.to_vec());
    vec![
        // same shape, ranks 0 to 3, with 0 and 1 rows
        v(&[], &[]),
        v(&[4], &[4]),
        v(&[3, 4], &[3, 4]),
        v(&[2, 3, 4], &[2, 3, 4]),
        v(&[0, 4], &[0, 4]),
        v(&[1, 4], &[1, 4]),
        // one value
        v(&[3, 4], &[]),
        v(&[3, 4], &[1]),
        v(&[3, 4], &[1, 1]),
        v(&[2, 3, 4], &[1, 1, 1]),
        v(&[4], &[1]),
        v(&[0, 4], &[]),
        // a row, applied to every row
        v(&[3, 4], &[4]),
        v(&[3, 4], &[1, 4]),
        v(&[2, 3, 4], &[4]),
        v(&[2, 3, 4], &[1, 4]),
        v(&[2, 3, 4], &[1, 1, 4]),
        v(&[0, 4], &[4]),
        v(&[1, 4], &[4]),
        // a column, applied to every column
        v(&[3, 4], &[3, 1]),
        v(&[2, 3, 4], &[2, 3, 1]),
        v(&[0, 4], &[0, 1]),
        v(&[1, 3], &[1, 1]),
        v(&[4, 1], &[4, 1]),
    ]
}

#[test]
fn add_sub_mul_div_every_broadcast() {
    type BinOp = fn(&mut Tape<f64>, Var, Var) -> Out;
    let ops: [(&str, BinOp); 4] = [
        ("add", |t, a, b| t.add(a, b)),
        ("sub", |t, a, b| t.sub(a, b)),
        ("mul", |t, a, b| t.mul(a, b)),
        ("div", |t, a, b| t.div(a, b)),
    ];
    for (name, op) in ops {
        for (ad, bd) in broadcast_cases() {
            let a = rand(&ad, -1.5, 1.5);
            // Denominators away from 0 (both signs).
            let mut b = rand(&bd, 0.5, 1.5);
            for (i, v) in b.data_mut().iter_mut().enumerate() {
                if i % 2 == 1 {
                    *v = -*v;
                }
            }
            check(&format!("{name} {ad:?} by {bd:?}"), &[a, b], |t, x| {
                op(t, x[0], x[1])
            });
        }
    }
}

#[test]
fn binary_ops_with_one_constant_operand() {
    let a = rand(&[3, 4], -1.0, 1.0);
    let b = rand(&[4], 0.5, 1.5);
    check("div by constant row", std::slice::from_ref(&a), |t, x| {
        let c = t.constant(b.clone());
        t.div(x[0], c)
    });
    check("constant divided by x", std::slice::from_ref(&b), |t, x| {
        let c = t.constant(a.clone());
        t.div(c, x[0])
    });
    check("constant times x", std::slice::from_ref(&b), |t, x| {
        let c = t.constant(a.clone());
        t.mul(c, x[0])
    });
    check("constant minus x", std::slice::from_ref(&b), |t, x| {
        let c = t.constant(a.clone());
        t.sub(c, x[0])
    });
}

#[test]
fn mask_mul_same_shape_and_broadcast() {
    let mask = tensor(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    check("mask_mul same", &[rand(&[3, 2], -1.0, 1.0)], |t, x| {
        t.mask_mul(x[0], mask.clone())
    });
    let row = tensor(&[3], &[0.0, 1.0, 1.0]);
    check("mask_mul row", &[rand(&[2, 2, 3], -1.0, 1.0)], |t, x| {
        t.mask_mul(x[0], row.clone())
    });
    let col = tensor(&[4, 1], &[1.0, 0.0, 1.0, 0.0]);
    check("mask_mul column", &[rand(&[4, 3], -1.0, 1.0)], |t, x| {
        t.mask_mul(x[0], col.clone())
    });
    check("mask_mul empty", &[rand(&[0, 3], -1.0, 1.0)], |t, x| {
        t.mask_mul(x[0], Tensor::zeros(&[0, 3]).unwrap())
    });
}

// ---------------------------------------------------------------- unary functions

/// Shapes every unary op is checked on.
const UNARY_SHAPES: [&[usize]; 6] = [&[], &[5], &[3, 4], &[2, 2, 3], &[0, 3], &[1, 3]];

#[track_caller]
fn check_unary(name: &str, lo: f64, hi: f64, f: impl Fn(&mut Tape<f64>, Var) -> Out) {
    for dims in UNARY_SHAPES {
        check(
            &format!("{name} {dims:?}"),
            &[rand(dims, lo, hi)],
            |t, x| f(t, x[0]),
        );
    }
}

#[test]
fn neg_scale_add_scalar_square() {
    check_unary("neg", -2.0, 2.0, |t, x| t.neg(x));
    check_unary("scale", -2.0, 2.0, |t, x| t.scale(x, -1.7));
    check_unary("add_scalar", -2.0, 2.0, |t, x| t.add_scalar(x, 0.3));
    check_unary("square", -2.0, 2.0, |t, x| t.square(x));
}

#[test]
fn sqrt_powf_recip_on_their_domains() {
    check_unary("sqrt", 0.2, 3.0, |t, x| t.sqrt(x));
    for p in [2.5, -1.5, 0.5, 3.0, 1.0, 0.0, -0.5] {
        check_unary(&format!("powf {p}"), 0.3, 2.0, |t, x| t.powf(x, p));
    }
    // Integer powers of negative numbers are defined.
    check_unary("powf 2 negative", -2.0, -0.3, |t, x| t.powf(x, 2.0));
    check_unary("recip positive", 0.5, 2.0, |t, x| t.recip(x));
    check_unary("recip negative", -2.0, -0.5, |t, x| t.recip(x));
}

#[test]
fn exp_ln() {
    check_unary("exp", -2.0, 2.0, |t, x| t.exp(x));
    check_unary("ln", 0.2, 3.0, |t, x| t.ln(x));
}

#[test]
fn tanh_sigmoid() {
    check_unary("tanh", -3.0, 3.0, |t, x| t.tanh(x));
    check_unary("sigmoid", -6.0, 6.0, |t, x| t.sigmoid(x));
    // Far out on both sides, where the naive formulas overflow.
    let far = tensor(&[6], &[-40.0, -15.0, -0.5, 0.0, 15.0, 40.0]);
    check("sigmoid far", std::slice::from_ref(&far), |t, x| {
        t.sigmoid(x[0])
    });
    check("tanh far", &[far], |t, x| t.tanh(x[0]));
}

#[test]
fn softplus_both_sides_and_near_threshold() {
    check_unary("softplus", -3.0, 3.0, |t, x| t.softplus(x));
    // Near ±20 and beyond, never within a step of the switch at 20.
    let pts = tensor(
        &[12],
        &[
            -30.0, -20.5, -19.99, -5.0, -1e-3, 0.0, 1e-3, 5.0, 19.5, 19.999, 20.5, 30.0,
        ],
    );
    check("softplus near ±20", &[pts], |t, x| t.softplus(x[0]));
}

#[test]
fn clamp_min_away_from_threshold() {
    // Every point at least 0.05 from the threshold 0.3, on both sides.
    let pts = tensor(&[2, 4], &[-1.0, 0.1, 0.25, 0.35, 0.6, 1.2, -0.2, 2.0]);
    check("clamp_min", &[pts], |t, x| t.clamp_min(x[0], 0.3));
    check_unary("clamp_min all above", 0.5, 2.0, |t, x| t.clamp_min(x, 0.3));
    check_unary("clamp_min all below", -2.0, 0.2, |t, x| t.clamp_min(x, 0.3));
}

#[test]
fn student_t_kernel() {
    for tau in [1.0, 2.5, 0.4] {
        check_unary(&format!("student_t tau={tau}"), 0.01, 4.0, |t, x| {
            t.student_t(x, tau)
        });
    }
}

// ---------------------------------------------------------------- reductions

#[test]
fn sum_and_mean() {
    for dims in [&[][..], &[4], &[3, 4], &[2, 3, 4], &[1, 4], &[0, 4]] {
        check(
            &format!("sum {dims:?}"),
            &[rand(dims, -1.0, 1.0)],
            |t, x| t.sum(x[0]),
        );
        if !dims.contains(&0) {
            check(
                &format!("mean {dims:?}"),
                &[rand(dims, -1.0, 1.0)],
                |t, x| t.mean(x[0]),
            );
        }
    }
}

#[test]
fn row_and_column_reductions() {
    for dims in [&[4][..], &[3, 4], &[2, 3, 4], &[1, 4], &[3, 1], &[0, 4]] {
        let x = rand(dims, -1.0, 1.0);
        check(
            &format!("sum_rows {dims:?}"),
            std::slice::from_ref(&x),
            |t, x| t.sum_rows(x[0]),
        );
        check(
            &format!("mean_rows {dims:?}"),
            std::slice::from_ref(&x),
            |t, x| t.mean_rows(x[0]),
        );
        check(
            &format!("sum_cols {dims:?}"),
            std::slice::from_ref(&x),
            |t, x| t.sum_cols(x[0]),
        );
        if !dims.contains(&0) {
            check(&format!("mean_cols {dims:?}"), &[x], |t, x| {
                t.mean_cols(x[0])
            });
        }
    }
}

// ---------------------------------------------------------------- layout

#[test]
fn reshape_transpose() {
    let cases: [(&[usize], &[usize]); 6] = [
        (&[3, 4], &[2, 6]),
        (&[3, 4], &[12]),
        (&[12], &[2, 2, 3]),
        (&[2, 2, 3], &[4, 3]),
        (&[0, 4], &[0, 2, 2]),
        (&[1, 3], &[3]),
    ];
    for (from, to) in cases {
        check(
            &format!("reshape {from:?} to {to:?}"),
            &[rand(from, -1.0, 1.0)],
            |t, x| t.reshape(x[0], to),
        );
    }
    for dims in [
        &[3, 4][..],
        &[2, 3, 4],
        &[1, 4],
        &[4, 1],
        &[0, 4],
        &[2, 0, 3],
    ] {
        check(
            &format!("transpose {dims:?}"),
            &[rand(dims, -1.0, 1.0)],
            |t, x| t.transpose(x[0]),
        );
    }
}

#[test]
fn permute_all_six() {
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for perm in perms {
        for dims in [[2, 3, 4], [1, 2, 1], [0, 2, 3], [3, 1, 2]] {
            check(
                &format!("permute {perm:?} of {dims:?}"),
                &[rand(&dims, -1.0, 1.0)],
                |t, x| t.permute(x[0], perm),
            );
        }
    }
}

#[test]
fn concat_and_slice_cols() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[3, 2], &[3, 4]),
        (&[0, 2], &[0, 3]),
        (&[1, 1], &[1, 0]),
        (&[2, 3], &[2, 1]),
    ];
    for (ad, bd) in cases {
        check(
            &format!("concat_cols {ad:?} {bd:?}"),
            &[rand(ad, -1.0, 1.0), rand(bd, -1.0, 1.0)],
            |t, x| t.concat_cols(x[0], x[1]),
        );
    }
    // The same leaf on both sides.
    check("concat_cols x x", &[rand(&[2, 3], -1.0, 1.0)], |t, x| {
        t.concat_cols(x[0], x[0])
    });
    for (dims, start, width) in [
        ([3, 5], 1, 3),
        ([3, 5], 0, 5),
        ([3, 5], 4, 1),
        ([3, 5], 2, 0),
        ([0, 4], 1, 2),
        ([1, 4], 3, 1),
    ] {
        check(
            &format!("slice_cols {dims:?} {start}..+{width}"),
            &[rand(&dims, -1.0, 1.0)],
            |t, x| t.slice_cols(x[0], start, width),
        );
    }
}

// ---------------------------------------------------------------- gather / scatter / segments

#[test]
fn gather_rows_repeated_unsorted_and_empty() {
    let cases: [(&[usize], &[usize]); 6] = [
        (&[4, 3], &[3, 0, 3, 1, 1]),
        (&[4, 3], &[]),
        (&[5], &[4, 4, 0, 2]),
        (&[3, 2, 2], &[2, 0, 2]),
        (&[0, 3], &[]),
        (&[1, 3], &[0, 0, 0]),
    ];
    for (dims, index) in cases {
        check(
            &format!("gather_rows {dims:?} {index:?}"),
            &[rand(dims, -1.0, 1.0)],
            |t, x| t.gather_rows(x[0], index),
        );
    }
}

/// `(x's shape, index, dim_size)`: unsorted, repeated, with empty target rows.
fn scatter_cases() -> Vec<(Vec<usize>, Vec<usize>, usize)> {
    vec![
        (vec![5, 3], vec![2, 0, 2, 4, 0], 6),
        (vec![5], vec![1, 1, 1, 0, 3], 4),
        (vec![4, 2, 2], vec![3, 0, 3, 0], 5),
        (vec![0, 3], vec![], 3),
        (vec![0, 3], vec![], 0),
        (vec![1, 3], vec![2], 3),
    ]
}

#[test]
fn scatter_add_and_mean() {
    for (dims, index, n) in scatter_cases() {
        let x = rand(&dims, -1.0, 1.0);
        check(
            &format!("scatter_add {dims:?} {index:?} into {n}"),
            std::slice::from_ref(&x),
            |t, x| t.scatter_add(x[0], &index, n),
        );
        check(
            &format!("scatter_mean {dims:?} {index:?} into {n}"),
            &[x],
            |t, x| t.scatter_mean(x[0], &index, n),
        );
    }
}

#[test]
fn segment_sum_and_mean_with_empty_segments() {
    let cases: [(&[usize], &[usize]); 7] = [
        (&[5, 3], &[0, 2, 2, 5, 5]),
        (&[5, 3], &[0, 5]),
        (&[4], &[0, 0, 1, 4]),
        (&[3, 2, 2], &[0, 1, 3]),
        (&[0, 3], &[0]),
        (&[0, 3], &[0, 0, 0]),
        (&[1, 2], &[0, 0, 1, 1]),
    ];
    for (dims, ptr) in cases {
        let x = rand(dims, -1.0, 1.0);
        check(
            &format!("segment_sum {dims:?} {ptr:?}"),
            std::slice::from_ref(&x),
            |t, x| t.segment_sum(x[0], ptr),
        );
        check(&format!("segment_mean {dims:?} {ptr:?}"), &[x], |t, x| {
            t.segment_mean(x[0], ptr)
        });
    }
}

// ---------------------------------------------------------------- fused row ops

#[test]
fn softmax_rows() {
    for dims in [
        &[4][..],
        &[3, 4],
        &[2, 3, 4],
        &[0, 4],
        &[1, 1],
        &[3, 1],
        &[1, 5],
    ] {
        check(
            &format!("softmax {dims:?}"),
            &[rand(dims, -3.0, 3.0)],
            |t, x| t.softmax(x[0]),
        );
    }
    // Large logits: the max subtraction must not change the derivatives.
    let big = tensor(&[2, 3], &[100.0, 101.0, 99.5, -80.0, -81.0, -79.0]);
    check("softmax large logits", &[big], |t, x| t.softmax(x[0]));
}

#[test]
fn layer_norm_with_and_without_affine() {
    for dims in [&[3, 4][..], &[2, 3, 4], &[5], &[1, 5], &[0, 4], &[3, 2]] {
        let c = *dims.last().unwrap();
        let x = rand(dims, -2.0, 2.0);
        check(
            &format!("layer_norm {dims:?}"),
            std::slice::from_ref(&x),
            |t, x| t.layer_norm(x[0], None, 1e-5),
        );
        check(
            &format!("layer_norm affine {dims:?}"),
            &[x.clone(), rand(&[c], 0.5, 1.5), rand(&[c], -0.5, 0.5)],
            |t, x| t.layer_norm(x[0], Some((x[1], x[2])), 1e-5),
        );
        // A larger eps, and affine parameters that are constants.
        check(&format!("layer_norm eps 0.1 {dims:?}"), &[x], |t, x| {
            let w = t.constant(rand(&[c], 0.5, 1.5));
            let b = t.constant(rand(&[c], -0.5, 0.5));
            t.layer_norm(x[0], Some((w, b)), 0.1)
        });
    }
}

#[test]
fn repeat_segments_with_empty_segments() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[4, 3], &[0, 2, 2, 5, 6]),
        (&[3], &[0, 0, 3, 3]),
        (&[2, 2, 2], &[0, 1, 4]),
        (&[1, 3], &[0, 0]),
        (&[0, 3], &[0]),
    ];
    for (dims, ptr) in cases {
        check(
            &format!("repeat_segments {dims:?} {ptr:?}"),
            &[rand(dims, -1.0, 1.0)],
            |t, x| t.repeat_segments(x[0], ptr),
        );
    }
}

#[test]
fn segment_matmuls_with_empty_segments() {
    // (N, P, Q, ptr): empty segments first, in the middle and last; no rows at all.
    let cases: [(usize, usize, usize, &[usize]); 5] = [
        (6, 3, 2, &[0, 0, 2, 2, 5, 6, 6]),
        (4, 2, 3, &[0, 4]),
        (3, 1, 1, &[0, 1, 2, 3]),
        (0, 2, 2, &[0, 0, 0]),
        (2, 0, 2, &[0, 1, 2]),
    ];
    for (n, p, q, ptr) in cases {
        let b = ptr.len() - 1;
        let name = format!("N={n} P={p} Q={q} ptr={ptr:?}");
        check(
            &format!("segment_matmul_tn {name}"),
            &[rand(&[n, p], -1.0, 1.0), rand(&[n, q], -1.0, 1.0)],
            |t, x| t.segment_matmul_tn(x[0], x[1], ptr),
        );
        check(
            &format!("segment_matmul_nn {name}"),
            &[rand(&[n, p], -1.0, 1.0), rand(&[b, p, q], -1.0, 1.0)],
            |t, x| t.segment_matmul_nn(x[0], x[1], ptr),
        );
        check(
            &format!("segment_matmul_nt {name}"),
            &[rand(&[n, p], -1.0, 1.0), rand(&[b, q, p], -1.0, 1.0)],
            |t, x| t.segment_matmul_nt(x[0], x[1], ptr),
        );
        // The same leaf on both sides.
        check(
            &format!("segment_matmul_tn a a {name}"),
            &[rand(&[n, p], -1.0, 1.0)],
            |t, x| t.segment_matmul_tn(x[0], x[0], ptr),
        );
    }
}

#[test]
fn only_some_operands_need_gradients() {
    // Each multi-operand op with one operand a constant: the rules skip the parents
    // that need no gradient, and what they still compute must stay right.
    let a = rand(&[3, 4], -1.0, 1.0);
    let b = rand(&[4, 2], -1.0, 1.0);
    let w = rand(&[4], 0.5, 1.5);
    let bias = rand(&[4], -0.5, 0.5);
    let c = |t: &mut Tape<f64>, v: &Tensor<f64>| t.constant(v.clone());
    check("matmul, b constant", std::slice::from_ref(&a), |t, x| {
        let bc = c(t, &b);
        t.matmul(x[0], bc)
    });
    check("matmul, a constant", std::slice::from_ref(&b), |t, x| {
        let ac = c(t, &a);
        t.matmul(ac, x[0])
    });
    check(
        "matmul_with tt, a constant",
        std::slice::from_ref(&a),
        |t, x| {
            let bc = c(t, &b);
            t.matmul_with(bc, x[0], true, true)
        },
    );
    check(
        "concat_cols, a constant",
        std::slice::from_ref(&a),
        |t, x| {
            let ac = c(t, &a);
            t.concat_cols(ac, x[0])
        },
    );
    check(
        "layer_norm, x constant",
        &[w.clone(), bias.clone()],
        |t, v| {
            let xc = c(t, &a);
            t.layer_norm(xc, Some((v[0], v[1])), 1e-5)
        },
    );
    check(
        "layer_norm, only weight",
        std::slice::from_ref(&w),
        |t, v| {
            let xc = c(t, &a);
            let bc = c(t, &bias);
            t.layer_norm(xc, Some((v[0], bc)), 1e-5)
        },
    );
    check(
        "layer_norm, only bias",
        std::slice::from_ref(&bias),
        |t, v| {
            let wc = c(t, &w);
            let xc = c(t, &a);
            t.layer_norm(xc, Some((wc, v[0])), 1e-5)
        },
    );
    let ptr = [0, 1, 1, 3];
    let blocks = rand(&[3, 4, 2], -1.0, 1.0);
    check(
        "segment_matmul_nn, b constant",
        std::slice::from_ref(&a),
        |t, x| {
            let bc = c(t, &blocks);
            t.segment_matmul_nn(x[0], bc, &ptr)
        },
    );
    check(
        "segment_matmul_nn, a constant",
        std::slice::from_ref(&blocks),
        |t, x| {
            let ac = c(t, &a);
            t.segment_matmul_nn(ac, x[0], &ptr)
        },
    );
}

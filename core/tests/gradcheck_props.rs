//! Property tests: first and second derivatives against central finite differences
//! over random shapes (0 and 1 rows included) and over random compositions of ops —
//! small random programs run on a stack of variables, each op picking a
//! shape-compatible form for whatever shapes it meets.

use proptest::prelude::*;
use readout_core::gradcheck::{GradcheckOptions, GradcheckReport, SplitMix64, check_gradients};
use readout_core::{CoreError, Real, Tape, Tensor, Var};

type Out = Result<Var, CoreError>;

/// 48 cases per property (the whole file runs in well under a second); set
/// `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn inputs(seed: u64, shapes: &[Vec<usize>], lo: f64, hi: f64) -> Vec<Tensor<f64>> {
    let mut rng = SplitMix64::new(seed);
    shapes
        .iter()
        .map(|d| rng.tensor(d, lo, hi).unwrap())
        .collect()
}

fn run(
    inputs: &[Tensor<f64>],
    f: impl Fn(&mut Tape<f64>, &[Var]) -> Out,
) -> Result<GradcheckReport, TestCaseError> {
    check_gradients(f, inputs, &GradcheckOptions::default())
        .map_err(|e| TestCaseError::fail(format!("error: {e}")))
}

/// `y·tanh(y)`: makes the second derivative of a linear op non-trivial.
fn head(t: &mut Tape<f64>, y: Var) -> Out {
    let s = t.tanh(y)?;
    t.mul(y, s)
}

// ---------------------------------------------------------------- random programs

/// Rows and columns of a rank-2 value on the tape.
fn rc<T: Real>(t: &Tape<T>, v: Var) -> Result<(usize, usize), CoreError> {
    let s = t.value(v)?.shape();
    Ok((s[0], s[1]))
}

/// `softplus(x) + 0.5`: positive and at least 0.5, for `sqrt`, `ln`, `recip`, `powf`
/// and denominators.
fn pos<T: Real>(t: &mut Tape<T>, x: Var) -> Out {
    let s = t.softplus(x)?;
    t.add_scalar(s, T::from_f64(0.5))
}

/// A deterministic constant of the given shape, for masks and weights.
fn fixed<T: Real>(rows: usize, cols: usize, salt: u64) -> Tensor<T> {
    SplitMix64::new(salt ^ ((rows as u64) << 8) ^ cols as u64)
        .tensor(&[rows, cols], -1.0, 1.0)
        .unwrap()
        .cast()
}

/// Brings `b` to a shape that broadcasts over an `[r, c]` operand: itself when equal,
/// else a row, a column or a single value derived from it by a reduction.
fn broadcastable<T: Real>(t: &mut Tape<T>, b: Var, r: usize, c: usize) -> Out {
    let (rb, cb) = rc(t, b)?;
    if (rb, cb) == (r, c) {
        Ok(b)
    } else if cb == c {
        let s = t.sum_cols(b)?; // [c]: a row
        if rb % 2 == 0 {
            Ok(s)
        } else {
            t.reshape(s, &[1, c])
        }
    } else if rb == r {
        let s = t.sum_rows(b)?; // [r]
        t.reshape(s, &[r, 1]) // a column
    } else {
        t.sum(b) // one value
    }
}

/// How many op codes [`step`] knows.
const OPS: u8 = 35;

/// Applies one op, chosen by `code`, to the top of the stack (and the value below it
/// for binary ops). Every value on the stack is rank 2.
fn step<T: Real>(t: &mut Tape<T>, stack: &mut Vec<Var>, code: u8) -> Result<(), CoreError> {
    let a = *stack.last().expect("the stack is never empty");
    let below = if stack.len() >= 2 {
        stack[stack.len() - 2]
    } else {
        a
    };
    let (r, c) = rc(t, a)?;
    let sel = (code / OPS) as usize; // a second choice within an op
    let y = match code % OPS {
        0 => t.tanh(a)?,
        1 => t.sigmoid(a)?,
        2 => t.softplus(a)?,
        3 => {
            let th = t.tanh(a)?;
            t.exp(th)?
        }
        4 => t.square(a)?,
        5 => {
            let p = pos(t, a)?;
            t.sqrt(p)?
        }
        6 => {
            let p = pos(t, a)?;
            t.ln(p)?
        }
        7 => {
            let p = pos(t, a)?;
            t.recip(p)?
        }
        8 => {
            let p = pos(t, a)?;
            t.powf(p, T::from_f64([1.5, -0.5, 3.0, 0.7][sel % 4]))?
        }
        9 => {
            let s = t.square(a)?;
            t.student_t(s, T::from_f64(1.5))?
        }
        10 => match sel % 3 {
            0 => t.neg(a)?,
            1 => t.scale(a, T::from_f64(0.6))?,
            _ => t.add_scalar(a, T::from_f64(-0.4))?,
        },
        11..=14 => {
            let b = broadcastable(t, below, r, c)?;
            match code % OPS {
                11 => t.add(a, b)?,
                12 => t.sub(a, b)?,
                13 => t.mul(a, b)?,
                _ => {
                    let p = pos(t, b)?;
                    t.div(a, p)?
                }
            }
        }
        15 => {
            let (rb, cb) = rc(t, below)?;
            if c == rb {
                t.matmul(a, below)?
            } else if r == rb {
                t.matmul_with(a, below, true, false)?
            } else if c == cb {
                t.matmul_with(a, below, false, true)?
            } else {
                let w = t.constant(fixed(c, 2, 15));
                t.matmul(a, w)?
            }
        }
        16 => t.softmax(a)?,
        17 => {
            if sel.is_multiple_of(2) {
                t.layer_norm(a, None, T::from_f64(0.1))?
            } else {
                let w = t.constant(fixed(1, c, 17).reshape(&[c]).unwrap());
                let b = t.constant(fixed(1, c, 18).reshape(&[c]).unwrap());
                t.layer_norm(a, Some((w, b)), T::from_f64(0.1))?
            }
        }
        18 => {
            let s = if sel.is_multiple_of(2) {
                t.sum_rows(a)?
            } else {
                t.mean_rows(a)?
            };
            t.reshape(s, &[r, 1])?
        }
        19 => {
            let s = t.sum_cols(a)?;
            t.reshape(s, &[1, c])?
        }
        20 => t.transpose(a)?,
        21 => {
            let (rb, _) = rc(t, below)?;
            if rb == r {
                t.concat_cols(a, below)?
            } else {
                t.concat_cols(a, a)?
            }
        }
        22 => {
            let start = sel % c;
            let width = 1 + (sel / 2) % (c - start);
            t.slice_cols(a, start, width)?
        }
        23 => {
            // Repeated, unsorted rows; none from an empty input.
            let len = if r == 0 { 0 } else { 1 + sel % 4 };
            let index: Vec<usize> = (0..len).map(|i| (i * 5 + sel) % r.max(1)).collect();
            t.gather_rows(a, &index)?
        }
        24 => {
            // Into 1 to 3 rows, unsorted, some possibly empty.
            let n = 1 + sel % 3;
            let index: Vec<usize> = (0..r).map(|i| (i * 7 + sel) % n).collect();
            if sel.is_multiple_of(2) {
                t.scatter_add(a, &index, n)?
            } else {
                t.scatter_mean(a, &index, n)?
            }
        }
        25 => {
            // CSR segments over the rows, with an empty segment in front and at the end.
            let cut = sel % (r + 1);
            let ptr = [0, 0, cut, r, r];
            if sel.is_multiple_of(2) {
                t.segment_sum(a, &ptr)?
            } else {
                t.segment_mean(a, &ptr)?
            }
        }
        26 => {
            // Through rank 3 and back: [r, c] → [r, c, 1] → [c, r, 1] → [c, r].
            let a3 = t.reshape(a, &[r, c, 1])?;
            let p = t.permute(a3, [1, 0, 2])?;
            t.reshape(p, &[c, r])?
        }
        27 => {
            let flat = if sel.is_multiple_of(2) {
                [r * c, 1]
            } else {
                [1, r * c]
            };
            if r * c == 0 { a } else { t.reshape(a, &flat)? }
        }
        28 => {
            // The same value twice more on the stack: later ops share it.
            stack.push(a);
            a
        }
        29 => {
            let mask = fixed::<f64>(r, c, 29).into_vec();
            let mask: Vec<f64> = mask
                .into_iter()
                .map(|v| if v > 0.0 { 1.0 } else { 0.0 })
                .collect();
            t.mask_mul(a, Tensor::from_vec(&[r, c], mask).unwrap().cast())?
        }
        30 => {
            // Batched product of [r, c, 1]·[r, 1, c]: per-row outer products, summed.
            let a3 = t.reshape(a, &[r, c, 1])?;
            let o = t.matmul_with(a3, a3, false, true)?; // [r, c, c]
            let o = t.reshape(o, &[r * c, c])?;
            let s = t.segment_sum(o, &(0..=r).map(|i| i * c).collect::<Vec<_>>())?;
            t.tanh(s)?
        }
        31 => {
            // Rows repeated over CSR segments of sizes 0 to 2.
            let mut ptr = vec![0];
            for i in 0..r {
                ptr.push(ptr[i] + (i + sel) % 3);
            }
            t.repeat_segments(a, &ptr)?
        }
        32 => {
            // Per-segment aᵀ·a over two segments: [2, c, c], seen as [2c, c].
            let cut = sel % (r + 1);
            let o = t.segment_matmul_tn(a, a, &[0, cut, r])?;
            t.reshape(o, &[2 * c, c])?
        }
        33 => {
            // Per-segment a·Wᵀ with one [c, c] block per segment.
            let cut = sel % (r + 1);
            let w = t.constant(fixed(2 * c, c, 33).reshape(&[2, c, c]).unwrap());
            t.segment_matmul_nt(a, w, &[0, cut, r])?
        }
        _ => {
            // A clamp far below anything a tanh can reach: the gradient passes through.
            let th = t.tanh(a)?;
            t.clamp_min(th, T::from_f64(-3.0))?
        }
    };
    // Keep a column count of at least 1 so later ops have a valid choice.
    if t.value(y)?.rank() == 2 && rc(t, y)?.1 > 0 {
        stack.push(y);
    }
    Ok(())
}

fn program<T: Real>(t: &mut Tape<T>, xs: &[Var], ops: &[u8]) -> Out {
    let mut stack = xs.to_vec();
    for &code in ops {
        step(t, &mut stack, code)?;
    }
    Ok(*stack.last().expect("inputs are never empty"))
}

/// A random program's output, its eager gradient and a recorded Hessian-vector product,
/// on element type `T`, as `f64` vectors.
fn evaluate<T: Real>(xs: &[Tensor<f64>], ops: &[u8]) -> Result<Vec<Vec<f64>>, CoreError> {
    let mut t = Tape::<T>::new();
    let vars: Vec<Var> = xs.iter().map(|x| t.variable(x.cast())).collect();
    let y = program(&mut t, &vars, ops)?;
    let mut rng = SplitMix64::new(99);
    let v = rng.tensor(t.value(y)?.shape(), -1.0, 1.0)?;
    let seed = t.constant(v.cast());
    let eager = t.grad(y, Some(seed), &vars, false)?;
    let recorded = t.grad(y, Some(seed), &vars, true)?;
    let mut h = t.scalar(T::ZERO);
    for (&g, x) in recorded.iter().zip(xs) {
        let u = t.constant(rng.tensor(x.shape(), -1.0, 1.0)?.cast());
        let gu = t.mul(g, u)?;
        let s = t.sum(gu)?;
        h = t.add(h, s)?;
    }
    let hv = t.grad(h, None, &vars, false)?;
    let mut out = vec![t.value(y)?.cast::<f64>().into_vec()];
    for g in eager.iter().chain(&hv) {
        out.push(t.value(*g)?.cast::<f64>().into_vec());
    }
    Ok(out)
}

fn shape_2d() -> impl Strategy<Value = Vec<usize>> {
    (0usize..=3, 1usize..=3).prop_map(|(r, c)| vec![r, c])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_programs(
        shapes in prop::collection::vec(shape_2d(), 1..=3),
        ops in prop::collection::vec(any::<u8>(), 1..=6),
        seed in any::<u64>(),
    ) {
        let xs = inputs(seed, &shapes, -1.0, 1.0);
        let report = run(&xs, |t, v| program(t, v, &ops))?;
        prop_assert!(report.passed(), "ops {:?}: {}", ops, report);
    }

    /// The f32 path (SIMD kernels, fused eager rules) against the f64 one on the same
    /// random programs: values, gradients and Hessian-vector products agree to f32
    /// accuracy relative to each tensor's largest entry.
    #[test]
    fn random_programs_f32_agree_with_f64(
        shapes in prop::collection::vec(shape_2d(), 1..=3),
        ops in prop::collection::vec(any::<u8>(), 1..=6),
        seed in any::<u64>(),
    ) {
        // Cubes of cubes drive softmax into saturation, where f32 rounds p = 1 − 3e-8
        // to 1 and the Hessian terms p·(1 − p)·(large logit derivatives) vanish: a limit
        // of f32, not a bug. Use the exponent 1.5 instead of 3 here.
        let ops: Vec<u8> = ops
            .iter()
            .map(|&c| if c % OPS == 8 && (c / OPS) % 4 == 2 { c - 2 * OPS } else { c })
            .collect();
        let xs = inputs(seed, &shapes, -1.0, 1.0);
        let wide = evaluate::<f64>(&xs, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let narrow = evaluate::<f32>(&xs, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (k, (a, b)) in narrow.iter().zip(&wide).enumerate() {
            prop_assert_eq!(a.len(), b.len());
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                prop_assert!(
                    (x - y).abs() <= 1e-4 * scale,
                    "ops {:?}: tensor {} element {}: f32 {} vs f64 {} (scale {})", ops, k, i, x, y, scale
                );
            }
        }
    }

    #[test]
    fn matmul_random_shapes(
        m in 0usize..=3, k in 0usize..=3, n in 0usize..=3, batch in 0usize..=2,
        ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>(),
    ) {
        let ad = if ta { [k, m] } else { [m, k] };
        let bd = if tb { [n, k] } else { [k, n] };
        let shapes = if batch == 0 {
            vec![ad.to_vec(), bd.to_vec()]
        } else {
            vec![vec![batch, ad[0], ad[1]], vec![batch, bd[0], bd[1]]]
        };
        let xs = inputs(seed, &shapes, -1.0, 1.0);
        let report = run(&xs, |t, v| {
            let y = t.matmul_with(v[0], v[1], ta, tb)?;
            head(t, y)
        })?;
        prop_assert!(report.passed(), "{}", report);
    }

    #[test]
    fn broadcast_arithmetic_random_shapes(
        lead in prop::collection::vec(0usize..=3, 0..=2), c in 1usize..=4,
        kind in 0usize..4, op in 0usize..4, seed in any::<u64>(),
    ) {
        let mut ad = lead.clone();
        ad.push(c);
        let bd: Vec<usize> = match kind {
            0 => ad.clone(),
            1 => vec![],
            2 => vec![c],
            _ => {
                let mut d = lead.clone();
                d.push(1);
                d
            }
        };
        let mut xs = inputs(seed, std::slice::from_ref(&ad), -1.5, 1.5);
        xs.extend(inputs(seed ^ 1, std::slice::from_ref(&bd), 0.5, 1.5));
        let report = run(&xs, |t, v| {
            let y = match op {
                0 => t.add(v[0], v[1])?,
                1 => t.sub(v[0], v[1])?,
                2 => t.mul(v[0], v[1])?,
                _ => t.div(v[0], v[1])?,
            };
            head(t, y)
        })?;
        prop_assert!(report.passed(), "{:?} by {:?}: {}", ad, bd, report);
    }

    #[test]
    fn gather_scatter_segments_random_indices(
        n in 0usize..=5, c in 1usize..=3, dim_size in 1usize..=4,
        picks in prop::collection::vec(any::<u16>(), 0..=6),
        sizes in prop::collection::vec(0usize..=3, 0..=4),
        seed in any::<u64>(),
    ) {
        let xs = inputs(seed, &[vec![n, c]], -1.0, 1.0);
        // Gather: any rows, repeated, unsorted.
        let gather: Vec<usize> = if n == 0 {
            vec![]
        } else {
            picks.iter().map(|&p| p as usize % n).collect()
        };
        // Scatter: one target per row.
        let scatter: Vec<usize> = (0..n)
            .map(|i| picks.get(i).map_or(i, |&p| p as usize) % dim_size)
            .collect();
        // Segments: random sizes (empty ones included), the rest in a last segment.
        let mut ptr = vec![0];
        for &s in &sizes {
            let next = (ptr[ptr.len() - 1] + s).min(n);
            ptr.push(next);
        }
        ptr.push(n);
        let report = run(&xs, |t, v| {
            let g = t.gather_rows(v[0], &gather)?;
            let g = head(t, g)?;
            let g = t.sum(g)?;
            let s = t.scatter_add(v[0], &scatter, dim_size)?;
            let s = head(t, s)?;
            let sm = t.scatter_mean(v[0], &scatter, dim_size)?;
            let sm = head(t, sm)?;
            let p = t.segment_sum(v[0], &ptr)?;
            let p = head(t, p)?;
            let pm = t.segment_mean(v[0], &ptr)?;
            let pm = head(t, pm)?;
            let s = t.concat_cols(s, sm)?;
            let s = t.sum(s)?;
            let p = t.concat_cols(p, pm)?;
            let p = t.sum(p)?;
            let total = t.add(g, s)?;
            t.add(total, p)
        })?;
        prop_assert!(report.passed(), "gather {:?} scatter {:?} ptr {:?}: {}", gather, scatter, ptr, report);
    }

    #[test]
    fn softmax_layer_norm_random_shapes(
        dims in prop::collection::vec(0usize..=3, 0..=2), c in 1usize..=5,
        affine in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut d = dims.clone();
        d.push(c);
        let mut xs = inputs(seed, std::slice::from_ref(&d), -2.0, 2.0);
        xs.extend(inputs(seed ^ 7, &[vec![c], vec![c]], 0.5, 1.5));
        let report = run(&xs, |t, v| {
            let s = t.softmax(v[0])?;
            let aff = if affine { Some((v[1], v[2])) } else { None };
            let l = t.layer_norm(v[0], aff, 1e-3)?;
            let p = t.mul(s, l)?;
            head(t, p)
        })?;
        prop_assert!(report.passed(), "{:?}: {}", d, report);
    }
}

//! Small random configurations and inputs of both layers, with sane values:
//!
//! - the `f32` results agree with the `f64` results relative to the result's scale,
//!   `|a − b| ≤ tol·(1 + max|b|)`: outputs, `S` and `kl_loss` with `tol` = [`TOL`],
//!   every gradient with `tol` = [`TOL_GRAD`]; where EquilibriumAggregation's exact
//!   gradient or output is ill-conditioned (it moves by more than that when the inputs
//!   move by their `f32` rounding), within [`CONDITIONING_FACTOR`] times that movement;
//! - the inference path (a fused engine whose sums are grouped differently from the
//!   tape's) agrees within [`TOL`]: MemPooling's with its training forward,
//!   EquilibriumAggregation's with the `f64` forward (conditioning-aware as above);
//! - `ptr` equals the equivalent sorted `index` (EquilibriumAggregation, bit for bit);
//!   for MemPooling, `[N, F]` + `batch` equals the `to_dense_batch`-padded `[B, N, F]`
//!   + `mask`, and the ragged path equals the dense path (within [`TOL`]).
//!
//! See `fuzz/README.md` for why the bound is what it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use readout_core::{Real, Tape, Tensor};
use readout_fuzz::Draw;
use readout_layers::PygWeights;
use readout_layers::{
    Bound, EquilibriumAggregation, InnerGrad, Mask, MemPooling, Parameters, PoolArgs, PoolPath,
    Segments,
};

/// Relative agreement required between `f32` and `f64` outputs (and between the
/// `f32` paths).
const TOL: f64 = 2e-3;
/// Relative agreement required between `f32` and `f64` gradients: they go through one
/// more backward pass (EquilibriumAggregation: a second-order one) of LayerNorm, whose
/// condition number `|x|/|x − mean|` is unbounded for nearly constant rows.
const TOL_GRAD: f64 = 2e-2;
/// Random perturbations of the inputs by their `f32` rounding used to estimate how much
/// the exact gradient moves (only when [`TOL_GRAD`] is exceeded).
const PERTURBATIONS: u64 = 4;
/// How much more than the estimated movement an `f32` gradient may differ: it rounds
/// every intermediate value, not only the inputs, and a few random perturbations
/// underestimate the worst one. Small enough that finding O1 (a defect: 90× its
/// movement) still fails.
const CONDITIONING_FACTOR: f64 = 20.0;

fuzz_target!(|data: &[u8]| {
    let mut d = Draw::new(data);
    if d.bool() {
        equilibrium(&mut d);
    } else {
        mem_pool(&mut d);
    }
});

fn scale(want: &[f64]) -> f64 {
    1.0 + want.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// `|got − want| ≤ TOL·(1 + max|want|)` element by element.
fn close<T: Real>(what: &str, got: &[T], want: &[f64]) {
    close_tol(what, got, want, TOL);
}

/// `|got − want| ≤ tol·(1 + max|want|)` element by element.
fn close_tol<T: Real>(what: &str, got: &[T], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let s = scale(want);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        assert!(
            (g - w).abs() <= tol * s,
            "{what}[{i}]: {g} vs {w} (scale {s}, allowed {})",
            tol * s
        );
    }
}

fn to64<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn fill_params(d: &mut Draw, params: &mut Parameters, r: f32) {
    for p in params.iter_mut() {
        for v in p.value_mut() {
            *v = d.sane(r);
        }
    }
}

fn weights(d: &mut Draw, n: usize) -> Vec<f32> {
    (0..n).map(|_| d.sane(1.0)).collect()
}

/// Output and gradients (every parameter, then `x`) of `Σ out·w` on a tape of `T`.
fn eq_run<T: Real>(
    layer: &EquilibriumAggregation,
    x: &Tensor<f32>,
    segments: Segments<'_>,
    dim_size: Option<usize>,
    w: &[f32],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    eq_run_perturbed::<T>(layer, x, segments, dim_size, w, None)
}

/// [`eq_run`] with every parameter and `x` multiplied by `1 + δ`, `|δ| ≤ 2⁻²⁴` drawn
/// from `seed` (when given): the exact maths at inputs that differ from the given ones
/// by their `f32` rounding.
fn eq_run_perturbed<T: Real>(
    layer: &EquilibriumAggregation,
    x: &Tensor<f32>,
    segments: Segments<'_>,
    dim_size: Option<usize>,
    w: &[f32],
    seed: Option<u64>,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut state = seed.unwrap_or(0) | 1;
    let mut perturb = |t: &Tensor<f32>| -> Tensor<T> {
        let values = t.data().iter().map(|&v| {
            let mut v = f64::from(v);
            if seed.is_some() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                v *= 1.0 + unit * f64::from(f32::EPSILON) / 2.0;
            }
            T::from_f64(v)
        });
        Tensor::from_vec(t.shape(), values.collect()).unwrap()
    };
    let mut tape = Tape::<T>::new();
    let vars = layer
        .parameters()
        .iter()
        .map(|p| tape.variable(perturb(p.value())))
        .collect();
    let p = Bound::from_vars(vars);
    let xv = tape.variable(perturb(x));
    let out = layer
        .forward_on(&mut tape, &p, xv, segments, dim_size, InnerGrad::Record)
        .expect("valid configuration");
    let shape = tape.value(out).unwrap().shape().to_vec();
    let wt = Tensor::from_vec(&shape, w.to_vec()).unwrap().cast();
    let wv = tape.constant(wt);
    let prod = tape.mul(out, wv).unwrap();
    let loss = tape.sum(prod).unwrap();
    let mut wrt = p.vars().to_vec();
    wrt.push(xv);
    let grads = tape.grad(loss, None, &wrt, false).unwrap();
    let y = to64(tape.value(out).unwrap().data());
    let g = grads
        .iter()
        .map(|&g| to64(tape.value(g).unwrap().data()))
        .collect();
    (y, g)
}

/// `max |got − want| / (1 + max |want|)`.
fn rel_error(got: &[f64], want: &[f64]) -> f64 {
    let s = scale(want);
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
        / s
}

fn equilibrium(d: &mut Draw) {
    let cin = d.int(1, 3);
    let cout = d.int(1, 3);
    let hidden: Vec<usize> = (0..d.int(0, 2)).map(|_| d.int(1, 6)).collect();
    let grad_iter = d.int(0, 3);
    let mut layer = EquilibriumAggregation::new(cin, cout, &hidden, grad_iter, 0.1).unwrap();
    fill_params(d, layer.parameters_mut(), 1.0);
    // Keep every LayerNorm input row away from constant: spread the biases of the
    // linears feeding the norms by 0.5 per unit. Near a constant row the norm's
    // derivatives grow like 1/(var + 1e-5)^(k/2) and their terms cancel (the recorded
    // second-order pass sums terms of ~1e6 to ~0), so no f32 result can agree with
    // f64 there; that regime is left to layer_inputs' finiteness checks.
    for p in layer.parameters_mut().iter_mut() {
        let feeds_norm = p.name().starts_with("potential.layers.") && p.name().ends_with(".0.bias");
        if feeds_norm {
            for (j, v) in p.value_mut().iter_mut().enumerate() {
                *v += 0.5 * j as f32;
            }
        }
    }
    let n = d.int(0, 10);
    let x = Tensor::from_vec(&[n, cin], (0..n * cin).map(|_| d.sane(2.0)).collect()).unwrap();
    let sets = d.int(1, 4);
    let sorted = d.bool();
    let mut index: Vec<i64> = (0..n).map(|_| d.int(0, sets - 1) as i64).collect();
    if sorted {
        index.sort_unstable();
    }
    let dim_size = if d.bool() {
        Some(sets + d.int(0, 2))
    } else {
        None
    };
    let segments = if d.chance(40) {
        Segments::One
    } else {
        Segments::Index(&index)
    };
    let rows = match (segments, dim_size) {
        (_, Some(s)) => s,
        (Segments::One, None) => 1,
        _ => index.iter().max().map_or(0, |&m| m as usize + 1),
    };
    let w = weights(d, rows * cout);

    if std::env::var_os("READOUT_FUZZ_DEBUG").is_some() {
        eprintln!(
            "cin {cin} cout {cout} hidden {hidden:?} grad_iter {grad_iter} x {x:?} segments {segments:?} dim_size {dim_size:?} loss weights {w:?}\nparams {:?}",
            layer.parameters().state_dict()
        );
    }
    let (y32, g32) = eq_run::<f32>(&layer, &x, segments, dim_size, &w);
    let (y64, g64) = eq_run::<f64>(&layer, &x, segments, dim_size, &w);
    // How far the exact (f64) output moves when the inputs move by their f32 rounding:
    // the conditioning allowance of the two output checks below.
    let output_moved = || {
        (1..=PERTURBATIONS)
            .map(|seed| {
                let (yp, _) =
                    eq_run_perturbed::<f64>(&layer, &x, segments, dim_size, &w, Some(seed));
                rel_error(&yp, &y64)
            })
            .fold(0.0f64, f64::max)
    };
    // The f32 forward within TOL of f64, or, where the exact output itself moves by more
    // than that under f32 input rounding (LayerNorm rows whose spread is small next to
    // their mean), within CONDITIONING_FACTOR times that movement, as for the gradients.
    let err = rel_error(&to64(&y32), &y64);
    if err > TOL {
        let moved = output_moved();
        let allowed = TOL + CONDITIONING_FACTOR * moved;
        assert!(
            err <= allowed,
            "eq out f32 vs f64: relative error {err:.3e} > {allowed:.3e} (the f64 output moves by {moved:.3e} under f32 input rounding)\n{y32:?}\n{y64:?}"
        );
    }
    // Gradients: within TOL_GRAD, or, where the exact gradient itself moves by more
    // than that when the inputs move by their f32 rounding (finding O2: an ill-conditioned
    // LayerNorm inside the unrolled loop), within CONDITIONING_FACTOR times that movement.
    let mut spread: Option<Vec<f64>> = None;
    for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
        let err = rel_error(a, b);
        if err <= TOL_GRAD {
            continue;
        }
        let spread = spread.get_or_insert_with(|| {
            let mut worst = vec![0.0f64; g64.len()];
            for seed in 1..=PERTURBATIONS {
                let (_, gp) =
                    eq_run_perturbed::<f64>(&layer, &x, segments, dim_size, &w, Some(seed));
                for (m, (p, q)) in worst.iter_mut().zip(gp.iter().zip(&g64)) {
                    *m = m.max(rel_error(p, q));
                }
            }
            worst
        });
        let allowed = TOL_GRAD + CONDITIONING_FACTOR * spread[i];
        assert!(
            err <= allowed,
            "eq grad {i} f32 vs f64: relative error {err:.3e} > {allowed:.3e} (the f64 gradient moves by {:.3e} under f32 input rounding)\n{a:?}\n{b:?}",
            spread[i]
        );
    }

    // Inference (the fused engine) vs the f64 forward: within TOL, or, where the exact
    // output itself moves by more than that under f32 input rounding, within
    // CONDITIONING_FACTOR times that movement (as for the gradients).
    let inf = layer.forward(&x, segments, dim_size).unwrap();
    let inf64 = to64(inf.data());
    let err = rel_error(&inf64, &y64);
    if err > TOL {
        let moved = output_moved();
        let allowed = TOL + CONDITIONING_FACTOR * moved;
        assert!(
            err <= allowed,
            "eq inference vs f64 forward: relative error {err:.3e} > {allowed:.3e} (the f64 output moves by {moved:.3e} under f32 input rounding)\n{inf64:?}\n{y64:?}"
        );
    }

    // ptr = the equivalent sorted index, bit for bit, on both paths.
    if sorted && matches!(segments, Segments::Index(_)) {
        let s = dim_size.unwrap_or(rows);
        let mut ptr = vec![0i64; s + 1];
        for &i in &index {
            ptr[i as usize + 1] += 1;
        }
        for j in 0..s {
            ptr[j + 1] += ptr[j];
        }
        let by_ptr = layer.forward(&x, Segments::Ptr(&ptr), dim_size).unwrap();
        assert_eq!(
            bits(by_ptr.data()),
            bits(inf.data()),
            "eq inference: ptr {ptr:?} vs index {index:?}"
        );
        let (yp, gp) = eq_run::<f32>(&layer, &x, Segments::Ptr(&ptr), dim_size, &w);
        assert_eq!(bits64(&yp), bits64(&y32), "eq training: ptr vs index");
        for (a, b) in gp.iter().zip(&g32) {
            assert_eq!(bits64(a), bits64(b), "eq gradients: ptr vs index");
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn bits64(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Out, padded S, kl_loss and the gradients (parameters, then `x`) of
/// `Σ out·w + kl_loss` on a tape of `T`.
#[allow(clippy::type_complexity)]
fn mp_run<T: Real>(
    pool: &MemPooling,
    x: &Tensor<f32>,
    args: PoolArgs<'_>,
    w: &[f32],
) -> (Vec<f64>, Vec<f64>, f64, Vec<Vec<f64>>) {
    let mut tape = Tape::<T>::new();
    let p = pool.parameters().bind(&mut tape, true);
    let xv = tape.variable(x.cast());
    let mut pooled = pool
        .forward_on(&mut tape, &p, xv, args)
        .expect("valid configuration");
    let out = pooled.out();
    let s = pooled.s(&mut tape).unwrap();
    let kl = pooled.kl_loss(&mut tape).unwrap();
    let shape = tape.value(out).unwrap().shape().to_vec();
    let wt = Tensor::from_vec(&shape, w.to_vec()).unwrap().cast();
    let wv = tape.constant(wt);
    let prod = tape.mul(out, wv).unwrap();
    let sum = tape.sum(prod).unwrap();
    let loss = tape.add(sum, kl).unwrap();
    let mut wrt = p.vars().to_vec();
    wrt.push(xv);
    let grads = tape.grad(loss, None, &wrt, false).unwrap();
    (
        to64(tape.value(out).unwrap().data()),
        to64(tape.value(s).unwrap().data()),
        tape.value(kl).unwrap().item().to_f64(),
        grads
            .iter()
            .map(|&g| to64(tape.value(g).unwrap().data()))
            .collect(),
    )
}

fn mem_pool(d: &mut Draw) {
    let f = d.int(1, 3);
    let o = d.int(1, 3);
    let heads = d.int(1, 3);
    let k = d.int(1, 4);
    let tau = 0.25 + d.sane64(1.0).abs() * 3.75;
    let mut pool = MemPooling::new(f, o, heads, k, tau).unwrap();
    fill_params(d, pool.parameters_mut(), 1.5);
    // Graph sizes (some empty), nodes as [N, F] with a sorted batch.
    let b = d.int(1, 4);
    let sizes: Vec<usize> = (0..b).map(|_| d.int(0, 4)).collect();
    let n: usize = sizes.iter().sum();
    let x = Tensor::from_vec(&[n, f], (0..n * f).map(|_| d.sane(2.0)).collect()).unwrap();
    let batch: Vec<i64> = sizes
        .iter()
        .enumerate()
        .flat_map(|(g, &c)| std::iter::repeat_n(g as i64, c))
        .collect();
    let max_nodes = sizes.iter().copied().max().unwrap_or(0);
    let w = weights(d, b * k * o);
    let path = if d.bool() {
        PoolPath::Ragged
    } else {
        PoolPath::Dense
    };
    let args = PoolArgs::new().batch(&batch).batch_size(b).path(path);

    let (o32, s32, kl32, g32) = mp_run::<f32>(&pool, &x, args, &w);
    let (o64, s64, kl64, g64) = mp_run::<f64>(&pool, &x, args, &w);
    close("mp out f32 vs f64", &o32, &o64);
    close("mp S f32 vs f64", &s32, &s64);
    close("mp kl_loss f32 vs f64", &[kl32], &[kl64]);
    for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
        close_tol(&format!("mp grad {i} f32 vs f64"), a, b, TOL_GRAD);
    }

    // Inference = the training forward, up to rounding: on the ragged path it is a
    // fused engine (distances through one GEMM against all keys, blocks of rows).
    let (io, is) = pool.forward(&x, args).unwrap();
    close("mp inference out", io.data(), &o32);
    close("mp inference S", is.data(), &s32);

    // The other path.
    let other = args.path(match path {
        PoolPath::Ragged => PoolPath::Dense,
        PoolPath::Dense | PoolPath::RaggedTape => PoolPath::Ragged,
    });
    let (oo, os) = pool.forward(&x, other).unwrap();
    close("mp ragged vs dense out", oo.data(), &o32);
    close("mp ragged vs dense S", os.data(), &s32);

    // The same batch padded by hand with a mask.
    if max_nodes > 0 {
        let mut dense = vec![0.0f32; b * max_nodes * f];
        let mut mask = vec![false; b * max_nodes];
        let mut row = 0;
        for (g, &c) in sizes.iter().enumerate() {
            for p in 0..c {
                let at = g * max_nodes + p;
                mask[at] = true;
                dense[at * f..(at + 1) * f].copy_from_slice(&x.data()[row * f..(row + 1) * f]);
                row += 1;
            }
        }
        let xd = Tensor::from_vec(&[b, max_nodes, f], dense).unwrap();
        let m = Mask::new([b, max_nodes], &mask).unwrap();
        let (dout, ds) = pool
            .forward(&xd, PoolArgs::new().mask(m).path(path))
            .unwrap();
        close(
            "mp [B, N, F] + mask vs [N, F] + batch: out",
            dout.data(),
            &o32,
        );
        close("mp [B, N, F] + mask vs [N, F] + batch: S", ds.data(), &s32);
    }
}

//! Arbitrary construction arguments, shapes, index / ptr / batch / mask / dim_size /
//! max_num_nodes / batch_size and feature values for both layers, forward and
//! backward. Every call must return `Ok` or a typed `Err` (never panic, abort, run out
//! of memory on an absurd size, or loop forever); absurd sizes must be refused; with
//! finite inputs and parameters in a sane range, outputs and gradients are finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use readout_core::{Tape, Tensor};
use readout_fuzz::{Draw, all_finite};
use readout_layers::PygWeights;
use readout_layers::{
    EquilibriumAggregation, InnerGrad, LayerError, Mask, MemPooling, PoolArgs, PoolPath, Segments,
};

/// Feature values within this magnitude (and finite) count as sane.
const SANE_X: f32 = 1e3;
/// Parameter values within this magnitude count as sane.
const SANE_P: f32 = 4.0;
/// Largest tensor the target builds (bigger draws get a zero dimension instead).
const MAX_BUILD: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut d = Draw::new(data);
    if d.bool() {
        equilibrium(&mut d);
    } else {
        mem_pool(&mut d);
    }
});

/// An error must explain itself.
fn check_err(e: &LayerError) {
    assert!(!e.to_string().is_empty(), "{e:?} has an empty message");
}

fn sane_x(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite() && x.abs() <= SANE_X)
}

/// Dimensions for a tensor: each drawn with [`Draw::size`] (absurd ones included);
/// when their product would be too large to build, one of them becomes 0, so that
/// empty tensors with absurd other dimensions are tried.
fn dims(d: &mut Draw, want: &[usize], max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = want
        .iter()
        .map(|&w| if d.chance(220) { w } else { d.size(max).0 })
        .collect();
    let fits = |v: &[usize]| {
        v.iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .is_some_and(|n| n <= MAX_BUILD)
    };
    if !fits(&v) {
        let i = d.int(0, v.len() - 1);
        v[i] = 0;
        if !fits(&v) {
            v.iter_mut().for_each(|x| *x = 0);
        }
    }
    v
}

/// A tensor with the given dimensions: sane values, or anything (NaN, inf, huge,
/// subnormal).
fn tensor(d: &mut Draw, dims: &[usize]) -> Tensor<f32> {
    let n: usize = dims.iter().product();
    let wild = d.chance(100);
    let data = (0..n)
        .map(|_| if wild { d.value() } else { d.sane(4.0) })
        .collect();
    Tensor::from_vec(dims, data).expect("dims have rank ≤ 3 and the right count")
}

/// Sometimes overwrites parameter values with anything; returns whether every
/// parameter stays sane.
fn perturb_params(d: &mut Draw, params: &mut readout_layers::Parameters) -> bool {
    if d.chance(60) {
        for p in params.iter_mut() {
            let vals = p.value_mut();
            if !vals.is_empty() && d.chance(100) {
                let i = d.int(0, vals.len() - 1);
                vals[i] = d.value();
            }
        }
    }
    params.iter().all(|p| {
        p.value()
            .data()
            .iter()
            .all(|v| v.is_finite() && v.abs() <= SANE_P)
    })
}

fn loss_weights(d: &mut Draw, shape: &[usize]) -> Tensor<f32> {
    let n: usize = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| d.sane(1.0)).collect()).expect("valid shape")
}

fn index_vec(d: &mut Draw, n: usize, bound: usize) -> Vec<i64> {
    // `n` may be absurd (an empty x with an absurd first dimension).
    let len = if n <= 64 && d.chance(240) {
        n
    } else {
        d.int(0, n.min(64) + 2)
    };
    (0..len).map(|_| d.index_entry(bound)).collect()
}

/// A CSR `ptr` for `n` rows: usually valid, sometimes broken.
fn ptr_vec(d: &mut Draw, n: usize) -> Vec<i64> {
    let sets = d.int(0, 5);
    let mut cuts: Vec<i64> = (0..sets.saturating_sub(1))
        .map(|_| d.int(0, n) as i64)
        .collect();
    cuts.sort_unstable();
    let mut ptr = Vec::with_capacity(sets + 1);
    if sets > 0 {
        ptr.push(0);
        ptr.extend(cuts);
        ptr.push(n as i64);
    }
    if !ptr.is_empty() && d.chance(30) {
        let i = d.int(0, ptr.len() - 1);
        ptr[i] = d.index_entry(n.saturating_add(1));
    }
    ptr
}

fn equilibrium(d: &mut Draw) {
    let mut absurd = false;
    let mut size = |d: &mut Draw, max| {
        let (v, a) = d.size(max);
        absurd |= a;
        v
    };
    let cin = size(d, 4);
    let cout = size(d, 4);
    let layers = d.int(0, 3);
    let hidden: Vec<usize> = (0..layers).map(|_| size(d, 8)).collect();
    let grad_iter = size(d, 4);
    let lamb = if d.bool() { d.sane(2.0) } else { d.value() };
    let mut layer = match EquilibriumAggregation::new(cin, cout, &hidden, grad_iter, lamb) {
        Ok(l) => l,
        Err(e) => return check_err(&e),
    };
    assert!(
        !absurd,
        "EquilibriumAggregation::new accepted absurd sizes ({cin}, {cout}, {hidden:?}, grad_iter {grad_iter})"
    );
    let sane_params = perturb_params(d, layer.parameters_mut());

    let want: Vec<usize> = match d.int(0, 15) {
        0 => vec![d.int(0, 6)],
        1 => vec![d.int(0, 3), d.int(0, 3), cin],
        2 => vec![d.int(0, 12), d.int(0, 5)],
        _ => vec![d.int(0, 12), cin],
    };
    let xd = dims(d, &want, 12);
    let x = tensor(d, &xd);
    let n = xd.first().copied().unwrap_or(0);
    let index;
    let ptr;
    let segments = match d.int(0, 2) {
        0 => Segments::One,
        1 => {
            let bound = d.int(0, 5);
            index = index_vec(d, n, bound);
            Segments::Index(&index)
        }
        _ => {
            ptr = ptr_vec(d, n);
            Segments::Ptr(&ptr)
        }
    };
    let (dim_size, dim_absurd) = if d.bool() {
        let (v, a) = d.size(6);
        (Some(v), a)
    } else {
        (None, false)
    };
    let sane = sane_params && sane_x(x.data());

    match layer.forward(&x, segments, dim_size) {
        Ok(y) => {
            assert!(!dim_absurd, "forward accepted dim_size {dim_size:?}");
            assert_eq!(y.shape().len(), 2);
            assert_eq!(y.shape()[1], cout);
            if let Some(s) = dim_size {
                assert_eq!(y.shape()[0], s);
            }
            if sane {
                assert!(
                    all_finite(y.data()),
                    "non-finite output {y:?} for sane input"
                );
            }
        }
        Err(e) => check_err(&e),
    }

    // Training: every gradient, through the recorded inner loop (or the eager one).
    let mode = if d.chance(200) {
        InnerGrad::Record
    } else {
        InnerGrad::Eager
    };
    let mut tape = Tape::<f32>::new();
    let p = layer.parameters().bind(&mut tape, true);
    let xv = tape.variable(x.clone());
    let out = match layer.forward_on(&mut tape, &p, xv, segments, dim_size, mode) {
        Ok(o) => o,
        Err(e) => return check_err(&e),
    };
    let shape = tape.value(out).expect("on tape").shape().to_vec();
    let w = loss_weights(d, &shape);
    let wv = tape.constant(w);
    let prod = tape.mul(out, wv).expect("same shape");
    let loss = tape.sum(prod).expect("sum");
    let grads = tape.backward(loss).expect("scalar loss");
    if sane {
        assert!(tape.value(loss).expect("on tape").all_finite());
        for (v, g) in grads.iter() {
            assert!(g.all_finite(), "non-finite gradient of leaf {v:?}: {g:?}");
        }
    }
    layer.parameters_mut().accumulate(&p, &grads);
}

fn mem_pool(d: &mut Draw) {
    let mut absurd = false;
    let mut size = |d: &mut Draw, max| {
        let (v, a) = d.size(max);
        absurd |= a;
        v
    };
    let f = size(d, 4);
    let o = size(d, 4);
    let heads = size(d, 3);
    let k = size(d, 4);
    let tau = match d.int(0, 7) {
        0 => d.pick(&[
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            1e-300,
            1e300,
            5e-324,
        ]),
        1 => f64::from(d.value()),
        _ => 0.25 + d.sane64(1.0).abs() * 3.75,
    };
    let mut pool = match MemPooling::new(f, o, heads, k, tau) {
        Ok(l) => l,
        Err(e) => return check_err(&e),
    };
    assert!(
        !absurd,
        "MemPooling::new accepted absurd sizes ({f}, {o}, {heads}, {k})"
    );
    let sane_params = perturb_params(d, pool.parameters_mut()) && (0.25..=4.0).contains(&tau);

    let dense = d.chance(90);
    let want: Vec<usize> = match (dense, d.int(0, 15)) {
        (_, 0) => vec![d.int(0, 6)],
        (_, 1) => vec![d.int(0, 6), d.int(0, 5)],
        (true, _) => vec![d.int(0, 3), d.int(0, 5), f],
        (false, _) => vec![d.int(0, 12), f],
    };
    let xd = dims(d, &want, 8);
    let x = tensor(d, &xd);
    let n = xd.first().copied().unwrap_or(0);

    let mut args = PoolArgs::new().path(if d.bool() {
        PoolPath::Ragged
    } else {
        PoolPath::Dense
    });
    let mut expect_absurd_err = false;
    // batch: sorted graph ids from per-graph counts, sometimes broken.
    let batch: Vec<i64>;
    if d.chance(if dense { 20 } else { 200 }) {
        let mut v = Vec::new();
        let mut g = 0i64;
        while v.len() < n.min(MAX_BUILD) {
            if d.chance(70) {
                g += d.int(1, 2) as i64;
            }
            v.push(g);
        }
        if !v.is_empty() && d.chance(30) {
            let i = d.int(0, v.len() - 1);
            v[i] = d.index_entry(4);
        }
        if d.chance(10) {
            v.push(g);
        }
        batch = v;
        args = args.batch(&batch);
    }
    let mask_data: Vec<bool>;
    if d.chance(if dense { 120 } else { 15 }) {
        let mask_dims = if d.chance(230) && xd.len() == 3 {
            [xd[0], xd[1]]
        } else {
            [d.int(0, 4), d.int(0, 6)]
        };
        let len = match mask_dims[0].checked_mul(mask_dims[1]) {
            Some(l) if l <= MAX_BUILD && d.chance(245) => l,
            _ => d.int(0, 9),
        };
        mask_data = (0..len).map(|_| d.chance(190)).collect();
        match Mask::new(mask_dims, &mask_data) {
            Ok(m) => args = args.mask(m),
            Err(e) => check_err(&e),
        }
    }
    if d.chance(if dense { 15 } else { 80 }) {
        let (v, a) = d.size(6);
        expect_absurd_err |= a;
        args = args.max_num_nodes(v);
    }
    if d.chance(if dense { 15 } else { 80 }) {
        let (v, a) = d.size(6);
        expect_absurd_err |= a;
        args = args.batch_size(v);
    }
    let sane = sane_params && sane_x(x.data());

    match pool.forward(&x, args) {
        Ok((out, s)) => {
            assert!(
                !expect_absurd_err,
                "forward accepted an absurd size: {args:?}"
            );
            assert_eq!(out.shape().len(), 3);
            assert_eq!(&out.shape()[1..], &[k, o]);
            assert_eq!(s.shape()[0], out.shape()[0]);
            assert_eq!(s.shape()[2], k);
            if sane {
                assert!(
                    all_finite(out.data()),
                    "non-finite out {out:?} for sane input"
                );
                assert!(all_finite(s.data()), "non-finite S {s:?} for sane input");
            }
            match MemPooling::kl_loss(&s) {
                Ok(l) => assert!(!sane || l.is_finite(), "kl_loss {l} for sane input"),
                Err(e) => check_err(&e),
            }
        }
        Err(e) => check_err(&e),
    }
    if let Err(e) = pool.forward_ragged(&x, args) {
        check_err(&e);
    }

    // Training: gradients of out, S and kl_loss to every parameter and to x.
    let mut tape = Tape::<f32>::new();
    let p = pool.parameters().bind(&mut tape, true);
    let xv = tape.variable(x.clone());
    let mut pooled = match pool.forward_on(&mut tape, &p, xv, args) {
        Ok(o) => o,
        Err(e) => return check_err(&e),
    };
    let out = pooled.out();
    let shape = tape.value(out).expect("on tape").shape().to_vec();
    let w = loss_weights(d, &shape);
    let wv = tape.constant(w);
    let prod = tape.mul(out, wv).expect("same shape");
    let mut loss = tape.sum(prod).expect("sum");
    match pooled.kl_loss(&mut tape) {
        Ok(kl) => loss = tape.add(loss, kl).expect("scalars"),
        Err(e) => check_err(&e),
    }
    if d.bool() {
        let sn = pooled
            .s_nodes(&mut tape)
            .expect("after a successful forward");
        let s2 = tape.square(sn).expect("square");
        let s2 = tape.sum(s2).expect("sum");
        loss = tape.add(loss, s2).expect("scalars");
    }
    let grads = tape.backward(loss).expect("scalar loss");
    if sane {
        assert!(tape.value(loss).expect("on tape").all_finite());
        for (v, g) in grads.iter() {
            assert!(g.all_finite(), "non-finite gradient of leaf {v:?}: {g:?}");
        }
    }
}

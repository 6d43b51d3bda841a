//! Every SIMD kernel (each available path) against its scalar reference, on arbitrary
//! lengths, strides, offsets (unaligned slices) and values, within the bound documented
//! on the kernel; no path may write outside its output.
//!
//! - `gemm`: each path and the scalar reference are within
//!   `(k + 2)·ε·(|α|·Σ_p |a_ip·b_pj| + |β·c_ij|)` of the exact (f64) result, so they are
//!   within twice that of each other (`kernels/tests/gemm.rs`'s bound); compared where
//!   that bound is finite.
//! - elementwise `unary`: each SIMD path within the ulp bound documented on its
//!   [`Unary`] variant of the exact (f64) value; ops without a vector transcendental
//!   (powers, scale, clamps, ...) exactly equal to the scalar reference.
//! - `softmax_rows`: within `(6 + 2·cols)·ε` relative (+1e-38) of the scalar reference
//!   (`kernels/tests/rows.rs`'s bound), NaN where it has NaN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use readout_fuzz::Draw;
use readout_kernels::Path;
use readout_kernels::elementwise::{Unary, unary_with};
use readout_kernels::gemm::{GemmShape, gemm_with};
use readout_kernels::rows::softmax_rows_with;

const SENTINEL: f32 = 12345.0;

fuzz_target!(|data: &[u8]| {
    let mut d = Draw::new(data);
    match d.int(0, 2) {
        0 => gemm(&mut d),
        1 => unary(&mut d),
        _ => softmax(&mut d),
    }
});

fn fast_paths() -> impl Iterator<Item = Path> {
    [Path::Portable, Path::Avx2]
        .into_iter()
        .filter(|p| p.is_available())
}

/// Values for a kernel: one regime per call (moderate, or anything).
fn values(d: &mut Draw, n: usize) -> Vec<f32> {
    let wild = d.chance(80);
    (0..n)
        .map(|_| if wild { d.value() } else { d.sane(4.0) })
        .collect()
}

fn gemm(d: &mut Draw) {
    let (m, n, k) = (d.int(0, 40), d.int(0, 40), d.int(0, 40));
    let (ta, tb) = (d.bool(), d.bool());
    let mut s = GemmShape::with_trans(m, n, k, ta, tb);
    s.lda += d.int(0, 3);
    s.ldb += d.int(0, 3);
    s.ldc += d.int(0, 3);
    let (a, b) = (values(d, s.a_len()), values(d, s.b_len()));
    let c0 = values(d, s.c_len());
    let alpha = d.pick(&[1.0f32, -1.0, 0.5, 2.0, 0.0, -2.0]);
    let beta = d.pick(&[0.0f32, 1.0, 0.5, -1.0]);
    // The f64 magnitude Σ|a·b| per element, for the bound.
    let at = |i: usize, p: usize| {
        if ta {
            a[p * s.lda + i]
        } else {
            a[i * s.lda + p]
        }
    };
    let bt = |p: usize, j: usize| {
        if tb {
            b[j * s.ldb + p]
        } else {
            b[p * s.ldb + j]
        }
    };
    let off = d.int(0, 3);
    let run = |path: Path| {
        let mut buf = vec![SENTINEL; off + c0.len() + 1];
        buf[off..off + c0.len()].copy_from_slice(&c0);
        gemm_with(path, &s, alpha, &a, &b, beta, &mut buf[off..off + c0.len()]);
        assert!(
            buf[..off]
                .iter()
                .chain(&buf[off + c0.len()..])
                .all(|&v| v == SENTINEL),
            "{path:?} wrote outside C"
        );
        buf[off..off + c0.len()].to_vec()
    };
    let want = run(Path::Scalar);
    let eps = f64::from(f32::EPSILON);
    for path in fast_paths() {
        let got = run(path);
        for i in 0..m {
            for j in 0..n {
                let at_c = i * s.ldc + j;
                let mut mag = 0.0f64;
                for p in 0..k {
                    mag += (f64::from(at(i, p)) * f64::from(bt(p, j))).abs();
                }
                let mut bound_mag = f64::from(alpha).abs() * mag;
                if beta != 0.0 {
                    bound_mag += (f64::from(beta) * f64::from(c0[at_c])).abs();
                }
                let bound = 2.0 * ((k as f64 + 2.0) * eps * bound_mag + 1e-30);
                // Overflow or non-finite operands: the bound says nothing. That includes
                // products that overflow `f32` inside the sum even when `alpha = 0`
                // hides them from `bound_mag`: the scalar sum then reaches ±inf (and
                // `0·inf = NaN`) while an FMA path may cancel them exactly (finding H7).
                let huge = f64::from(f32::MAX) / 4.0;
                if !bound.is_finite() || bound_mag > huge || mag > huge {
                    continue;
                }
                let (g, w) = (f64::from(got[at_c]), f64::from(want[at_c]));
                assert!(
                    (g - w).abs() <= bound || (g.is_nan() && w.is_nan()),
                    "{path:?} {s:?} alpha {alpha} beta {beta}: C[{i},{j}] = {g}, scalar {w}, bound {bound}"
                );
            }
        }
        // Padding columns between rows (ldc > n) are never written.
        for i in 0..m {
            for j in n..s.ldc {
                let at_c = i * s.ldc + j;
                if at_c < c0.len() {
                    assert_eq!(
                        got[at_c].to_bits(),
                        c0[at_c].to_bits(),
                        "{path:?} wrote C padding"
                    );
                }
            }
        }
    }
}

/// ulp of the exact value, floored at the smallest subnormal.
fn ulp(y: f64) -> f64 {
    let a = y.abs();
    if a < f64::from(f32::MIN_POSITIVE) {
        return 2f64.powi(-149);
    }
    2f64.powi(a.log2().floor() as i32 - 23)
}

/// Error of `got` in ulps of the exact `want`; infinite when the classes differ.
fn ulps(got: f32, want: f64) -> f64 {
    if want.is_nan() {
        return if got.is_nan() { 0.0 } else { f64::INFINITY };
    }
    let w32 = want as f32;
    if w32.is_infinite() || got.is_infinite() {
        return if got == w32 || (got.abs() == f32::MAX && w32.is_infinite()) {
            0.0
        } else {
            f64::INFINITY
        };
    }
    (f64::from(got) - want).abs() / ulp(want)
}

fn unary(d: &mut Draw) {
    let tau = d.pick(&[1.0f32, 2.0, 0.5, 3.7, 10.0, 0.25]);
    let c = d.value();
    let op = d.pick(&[
        Unary::Exp,
        Unary::Ln,
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Softplus,
        Unary::StudentT(tau),
        Unary::Neg,
        Unary::Square,
        Unary::Sqrt,
        Unary::Recip,
        Unary::Scale(c),
        Unary::AddScalar(c),
        Unary::ClampMin(c),
        Unary::StepGe(c),
        Unary::Powf(c),
    ]);
    let len = d.int(0, 70);
    let off = d.int(0, 7);
    let mut xbuf = values(d, off + len);
    // StudentT's documented domain is x ≥ 0.
    if let Unary::StudentT(_) = op {
        for v in &mut xbuf {
            if d.chance(200) {
                *v = v.abs();
            }
        }
    }
    let x = &xbuf[off..];
    let mut want = vec![0.0f32; len];
    unary_with(Path::Scalar, op, x, &mut want);
    for path in fast_paths() {
        let mut buf = vec![SENTINEL; len + 2];
        unary_with(path, op, x, &mut buf[1..=len]);
        assert!(
            buf[0] == SENTINEL && buf[len + 1] == SENTINEL,
            "{path:?} {op:?} wrote outside out"
        );
        let got = &buf[1..=len];
        for (i, (&xi, &g)) in x.iter().zip(got).enumerate() {
            let exact = match op {
                Unary::Exp => f64::from(xi).exp(),
                Unary::Ln => f64::from(xi).ln(),
                Unary::Tanh => f64::from(xi).tanh(),
                Unary::Sigmoid => Unary::<f64>::Sigmoid.apply(f64::from(xi)),
                Unary::Softplus => Unary::<f64>::Softplus.apply(f64::from(xi)),
                Unary::StudentT(t) => {
                    // p rounded to f32, as the kernel sees it.
                    let p = f64::from(-(1.0 + t) * 0.5);
                    (1.0 + f64::from(xi) / f64::from(t)).powf(p)
                }
                _ => {
                    // No vector transcendental: the same IEEE operations.
                    let w = want[i];
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{path:?} {op:?}({xi:e}) = {g:e}, scalar {w:e}"
                    );
                    continue;
                }
            };
            let bound = match op {
                Unary::Exp => 1.5,
                Unary::Ln => 1.0,
                Unary::Tanh => 1.5,
                Unary::Sigmoid => 2.5,
                Unary::Softplus => 2.0,
                Unary::StudentT(t) => {
                    if !(0.0..=1e30).contains(&xi) {
                        // Outside the vector domain: the scalar definition.
                        let w = want[i];
                        assert!(
                            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                            "{path:?} {op:?}({xi:e}) = {g:e}, scalar {w:e}"
                        );
                        continue;
                    }
                    2.0 + f64::from((1.0 + t) * 0.5)
                }
                _ => unreachable!(),
            };
            let e = ulps(g, exact);
            assert!(
                e <= bound,
                "{path:?} {op:?}({xi:e} = {:#x}) = {g:e}, exact {exact:e}: {e} ulp > {bound}",
                xi.to_bits()
            );
        }
    }
}

fn softmax(d: &mut Draw) {
    let rows = d.int(0, 5);
    let cols = d.int(1, 40);
    let off = d.int(0, 7);
    let xbuf = values(d, off + rows * cols);
    let x = &xbuf[off..];
    let mut want = vec![0.0f32; x.len()];
    softmax_rows_with(Path::Scalar, x, cols, &mut want);
    let bound = (6.0 + 2.0 * cols as f32) * f32::EPSILON;
    for path in fast_paths() {
        let mut buf = vec![SENTINEL; x.len() + 2];
        softmax_rows_with(path, x, cols, &mut buf[1..=x.len()]);
        assert!(
            buf[0] == SENTINEL && buf[x.len() + 1] == SENTINEL,
            "{path:?} softmax wrote outside out"
        );
        for (i, (&g, &w)) in buf[1..=x.len()].iter().zip(&want).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= bound * w.abs() + 1e-38;
            assert!(
                ok,
                "{path:?} cols {cols} at {i}: {g:e} vs scalar {w:e} (row {:?})",
                &x[i / cols * cols..(i / cols + 1) * cols]
            );
        }
    }
}

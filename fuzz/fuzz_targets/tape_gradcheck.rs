//! Random small op graphs built from the fuzzer's bytes; first derivatives (eager and
//! recorded) and second derivatives against central finite differences in `f64`, with
//! `readout_core::gradcheck::check_gradients` and its default tolerances.
//!
//! The program is decoded once and replayed on every evaluation. An instruction whose
//! operand shapes do not fit is skipped (shapes never depend on values, so it is
//! skipped on every replay). Each value carries a magnitude bound computed from the
//! program alone; an op whose bound would exceed [`LIMIT`] is followed by `tanh`, and
//! ops with a restricted domain or a kink get their input squashed first (`ln` of
//! `softplus(x) + 0.5`, `softplus` of values bounded below its threshold 20, ...), so
//! the finite differences stay accurate and never straddle a kink.
#![no_main]

use libfuzzer_sys::fuzz_target;
use readout_core::gradcheck::{GradcheckOptions, check_gradients};
use readout_core::{CoreError, Tape, Tensor, Var};
use readout_fuzz::Draw;

/// Elements of each input checked against finite differences.
const MAX_CHECKED_ELEMENTS: usize = 4;

/// Largest magnitude a value may reach before it is squashed with `tanh`.
const LIMIT: f64 = 30.0;

#[derive(Clone, Debug)]
enum Op {
    Tanh,
    Sigmoid,
    Softplus,
    ExpTanh,
    LnPos,
    RecipPos,
    SqrtPos,
    PowPos(f64),
    Square,
    Neg,
    Scale(f64),
    AddScalar(f64),
    Add,
    Sub,
    Mul,
    DivPos,
    Sum,
    Mean,
    SumRows,
    MeanRows,
    SumCols,
    MeanCols,
    MatMul(bool, bool),
    Transpose,
    Reshape(u8),
    Permute([usize; 3]),
    Gather(Vec<u8>),
    ScatterAdd(Vec<u8>, usize),
    ScatterMean(Vec<u8>, usize),
    SegmentSum(Vec<u8>),
    SegmentMean(Vec<u8>),
    RepeatSegments(Vec<u8>),
    SegMatTN(Vec<u8>),
    SegMatNN(Vec<u8>),
    SegMatNT(Vec<u8>),
    ConcatCols,
    SliceCols(u8, u8),
    Softmax,
    LayerNorm(bool, f64),
    StudentT(f64),
}

#[derive(Clone, Debug)]
struct Instr {
    op: Op,
    /// Operand picks (taken modulo the number of values so far).
    args: [usize; 3],
}

fn decode(d: &mut Draw) -> (Vec<Vec<usize>>, Vec<Instr>) {
    let inputs: Vec<Vec<usize>> = (0..d.int(1, 3))
        .map(|_| {
            let rank = d.int(0, 3);
            (0..rank)
                .map(|_| if d.chance(8) { 0 } else { d.int(1, 4) })
                .collect()
        })
        .collect();
    let seeds = |d: &mut Draw| -> Vec<u8> { (0..8).map(|_| d.byte()).collect() };
    let mut prog = Vec::new();
    for _ in 0..d.int(1, 8) {
        let op = match d.int(0, 39) {
            0 => Op::Tanh,
            1 => Op::Sigmoid,
            2 => Op::Softplus,
            3 => Op::ExpTanh,
            4 => Op::LnPos,
            5 => Op::RecipPos,
            6 => Op::SqrtPos,
            7 => Op::PowPos(d.sane64(2.5) + 0.5),
            8 => Op::Square,
            9 => Op::Neg,
            10 => Op::Scale(d.sane64(2.0)),
            11 => Op::AddScalar(d.sane64(2.0)),
            12 => Op::Add,
            13 => Op::Sub,
            14 => Op::Mul,
            15 => Op::DivPos,
            16 => Op::Sum,
            17 => Op::Mean,
            18 => Op::SumRows,
            19 => Op::MeanRows,
            20 => Op::SumCols,
            21 => Op::MeanCols,
            22 => Op::MatMul(d.bool(), d.bool()),
            23 => Op::Transpose,
            24 => Op::Reshape(d.byte()),
            25 => Op::Permute(d.pick(&[[0, 2, 1], [1, 0, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]])),
            26 => Op::Gather(seeds(d)),
            27 => Op::ScatterAdd(seeds(d), d.int(0, 4)),
            28 => Op::ScatterMean(seeds(d), d.int(0, 4)),
            29 => Op::SegmentSum(seeds(d)),
            30 => Op::SegmentMean(seeds(d)),
            31 => Op::RepeatSegments(seeds(d)),
            32 => Op::SegMatTN(seeds(d)),
            33 => Op::SegMatNN(seeds(d)),
            34 => Op::SegMatNT(seeds(d)),
            35 => Op::ConcatCols,
            36 => Op::SliceCols(d.byte(), d.byte()),
            37 => Op::Softmax,
            38 => Op::LayerNorm(d.bool(), 0.01 + d.sane64(1.0).abs()),
            _ => Op::StudentT(0.5 + d.sane64(1.0).abs() * 3.5),
        };
        let args = [d.int(0, 255), d.int(0, 255), d.int(0, 255)];
        prog.push(Instr { op, args });
    }
    (inputs, prog)
}

/// `len` indices below `bound` from seed bytes (cycled).
fn index_from(seeds: &[u8], len: usize, bound: usize) -> Vec<usize> {
    (0..len)
        .map(|i| seeds[i % seeds.len()] as usize % bound.max(1))
        .collect()
}

/// A valid CSR ptr over `n` rows (1 to 4 segments, some possibly empty).
fn ptr_from(seeds: &[u8], n: usize) -> Vec<usize> {
    let sets = seeds[0] as usize % 4 + 1;
    let mut cuts: Vec<usize> = (1..sets).map(|i| seeds[i] as usize % (n + 1)).collect();
    cuts.sort_unstable();
    let mut ptr = vec![0];
    ptr.extend(cuts);
    ptr.push(n);
    ptr
}

/// Runs one instruction; `Ok(None)` when the operands do not fit (skipped).
fn step(
    t: &mut Tape<f64>,
    vals: &[(Var, f64)],
    ins: &Instr,
) -> Result<Option<(Var, f64)>, CoreError> {
    let pick = |k: usize| vals[ins.args[k] % vals.len()];
    let (a, ba) = pick(0);
    let (b, bb) = pick(1);
    let (c, bc) = pick(2);
    let sa = t.value(a)?.shape().to_vec();
    let rows = |s: &[usize]| s.first().copied().unwrap_or(1);
    // Squashes to a bounded positive value: softplus(tanh(x)) + shift ∈ (shift, 1.32 + shift).
    let positive = |t: &mut Tape<f64>, x: Var, shift: f64| -> Result<Var, CoreError> {
        let th = t.tanh(x)?;
        let sp = t.softplus(th)?;
        t.add_scalar(sp, shift)
    };
    // Means over nothing are 0/0 = NaN (as in PyTorch): not a derivative to check.
    let numel: usize = sa.iter().product();
    let cols = sa.last().copied().unwrap_or(1);
    let empty_mean = match &ins.op {
        Op::Mean => numel == 0,
        Op::MeanRows | Op::LayerNorm(..) => cols == 0,
        Op::MeanCols => cols > 0 && numel == 0,
        _ => false,
    };
    if empty_mean {
        return Ok(None);
    }
    let r = match &ins.op {
        Op::Tanh => (t.tanh(a)?, 1.0),
        Op::Sigmoid => (t.sigmoid(a)?, 1.0),
        Op::Softplus => {
            // Keep away from the threshold 20.
            let x = if ba < 19.0 { a } else { t.tanh(a)? };
            (t.softplus(x)?, ba.min(19.0) + 0.7)
        }
        Op::ExpTanh => {
            let th = t.tanh(a)?;
            (t.exp(th)?, 2.72)
        }
        Op::LnPos => {
            let p = positive(t, a, 0.5)?;
            (t.ln(p)?, 1.0)
        }
        Op::RecipPos => {
            let p = positive(t, a, 0.5)?;
            (t.recip(p)?, 2.0)
        }
        Op::SqrtPos => {
            let p = positive(t, a, 0.25)?;
            (t.sqrt(p)?, 1.3)
        }
        Op::PowPos(e) => {
            let p = positive(t, a, 0.5)?;
            (t.powf(p, *e)?, 2f64.powf(e.abs()) * 2.0)
        }
        Op::Square => (t.square(a)?, ba * ba),
        Op::Neg => (t.neg(a)?, ba),
        Op::Scale(s) => (t.scale(a, *s)?, ba * s.abs()),
        Op::AddScalar(s) => (t.add_scalar(a, *s)?, ba + s.abs()),
        Op::Add => match t.add(a, b) {
            Ok(v) => (v, ba + bb),
            Err(_) => return Ok(None),
        },
        Op::Sub => match t.sub(a, b) {
            Ok(v) => (v, ba + bb),
            Err(_) => return Ok(None),
        },
        Op::Mul => match t.mul(a, b) {
            Ok(v) => (v, ba * bb),
            Err(_) => return Ok(None),
        },
        Op::DivPos => {
            // Shapes first, so that a misfit adds nothing to the tape's function.
            let p = positive(t, b, 0.5)?;
            match t.div(a, p) {
                Ok(v) => (v, ba * 2.0),
                Err(_) => return Ok(None),
            }
        }
        Op::Sum => (t.sum(a)?, ba * sa.iter().product::<usize>().max(1) as f64),
        Op::Mean => (t.mean(a)?, ba),
        Op::SumRows => (t.sum_rows(a)?, ba * sa.last().copied().unwrap_or(1) as f64),
        Op::MeanRows => (t.mean_rows(a)?, ba),
        Op::SumCols => {
            let r: usize = sa[..sa.len().saturating_sub(1)].iter().product();
            (t.sum_cols(a)?, ba * r.max(1) as f64)
        }
        Op::MeanCols => (t.mean_cols(a)?, ba),
        Op::MatMul(ta, tb) => match t.matmul_with(a, b, *ta, *tb) {
            Ok(v) => {
                let k = if *ta {
                    sa[sa.len() - 2]
                } else {
                    sa[sa.len() - 1]
                };
                (v, ba * bb * k.max(1) as f64)
            }
            Err(_) => return Ok(None),
        },
        Op::Transpose => match t.transpose(a) {
            Ok(v) => (v, ba),
            Err(_) => return Ok(None),
        },
        Op::Reshape(s) => {
            let n: usize = sa.iter().product();
            let dims: Vec<usize> = match s % 4 {
                0 => vec![n],
                1 => vec![1, n],
                2 => vec![n, 1],
                _ => vec![],
            };
            match t.reshape(a, &dims) {
                Ok(v) => (v, ba),
                Err(_) => return Ok(None),
            }
        }
        Op::Permute(p) => match t.permute(a, *p) {
            Ok(v) => (v, ba),
            Err(_) => return Ok(None),
        },
        Op::Gather(s) => {
            if sa.is_empty() || rows(&sa) == 0 {
                return Ok(None);
            }
            let idx = index_from(s, s[0] as usize % 5, rows(&sa));
            (t.gather_rows(a, &idx)?, ba)
        }
        Op::ScatterAdd(s, dim) | Op::ScatterMean(s, dim) => {
            if sa.is_empty() {
                return Ok(None);
            }
            let dim = (*dim).max(1);
            let idx = index_from(s, rows(&sa), dim);
            if matches!(ins.op, Op::ScatterAdd(..)) {
                (t.scatter_add(a, &idx, dim)?, ba * rows(&sa).max(1) as f64)
            } else {
                (t.scatter_mean(a, &idx, dim)?, ba)
            }
        }
        Op::SegmentSum(s) | Op::SegmentMean(s) => {
            if sa.is_empty() {
                return Ok(None);
            }
            let ptr = ptr_from(s, rows(&sa));
            if matches!(ins.op, Op::SegmentSum(_)) {
                (t.segment_sum(a, &ptr)?, ba * rows(&sa).max(1) as f64)
            } else {
                (t.segment_mean(a, &ptr)?, ba)
            }
        }
        Op::RepeatSegments(s) => {
            if sa.is_empty() {
                return Ok(None);
            }
            // One segment per row of `a`, sizes 0 to 3.
            let mut ptr = vec![0usize];
            for i in 0..rows(&sa) {
                ptr.push(ptr[i] + s[i % s.len()] as usize % 4);
            }
            (t.repeat_segments(a, &ptr)?, ba)
        }
        Op::SegMatTN(s) => {
            if sa.len() != 2 {
                return Ok(None);
            }
            let ptr = ptr_from(s, rows(&sa));
            match t.segment_matmul_tn(a, b, &ptr) {
                Ok(v) => (v, ba * bb * rows(&sa).max(1) as f64),
                Err(_) => return Ok(None),
            }
        }
        Op::SegMatNN(s) | Op::SegMatNT(s) => {
            let sb = t.value(b)?.shape().to_vec();
            if sa.len() != 2 || sb.len() != 3 {
                return Ok(None);
            }
            let n = rows(&sa);
            // Exactly sb[0] segments over n rows.
            let segs = sb[0];
            if segs == 0 {
                return Ok(None);
            }
            let mut cuts: Vec<usize> = (1..segs)
                .map(|i| s[i % s.len()] as usize % (n + 1))
                .collect();
            cuts.sort_unstable();
            let mut ptr = vec![0];
            ptr.extend(cuts);
            ptr.push(n);
            let k = sa[1];
            let r = if matches!(ins.op, Op::SegMatNN(_)) {
                t.segment_matmul_nn(a, b, &ptr)
            } else {
                t.segment_matmul_nt(a, b, &ptr)
            };
            match r {
                Ok(v) => (v, ba * bb * k.max(1) as f64),
                Err(_) => return Ok(None),
            }
        }
        Op::ConcatCols => match t.concat_cols(a, b) {
            Ok(v) => (v, ba.max(bb)),
            Err(_) => return Ok(None),
        },
        Op::SliceCols(s, w) => {
            if sa.len() != 2 {
                return Ok(None);
            }
            let cols = sa[1];
            let start = *s as usize % (cols + 1);
            let width = *w as usize % (cols - start + 1);
            (t.slice_cols(a, start, width)?, ba)
        }
        Op::Softmax => match t.softmax(a) {
            Ok(v) => (v, 1.0),
            Err(_) => return Ok(None),
        },
        Op::LayerNorm(affine, eps) => {
            let cols = sa.last().copied().unwrap_or(1);
            let wb = if *affine {
                let ok = |t: &Tape<f64>, v: Var| {
                    t.value(v).map(|x| x.shape() == [cols]).unwrap_or(false)
                };
                if ok(t, b) && ok(t, c) {
                    Some((b, c))
                } else {
                    None
                }
            } else {
                None
            };
            match t.layer_norm(a, wb, *eps) {
                Ok(v) => {
                    let wmax = if wb.is_some() { bb } else { 1.0 };
                    let bmax = if wb.is_some() { bc } else { 0.0 };
                    (v, (cols as f64).sqrt() * wmax + bmax)
                }
                Err(_) => return Ok(None),
            }
        }
        Op::StudentT(tau) => {
            let sq = t.square(a)?;
            (t.student_t(sq, *tau)?, 1.0)
        }
    };
    let (v, bound) = r;
    if bound > LIMIT {
        Ok(Some((t.tanh(v)?, 1.0)))
    } else {
        Ok(Some((v, bound)))
    }
}

fn run(t: &mut Tape<f64>, leaves: &[Var], prog: &[Instr]) -> Result<Var, CoreError> {
    let mut vals: Vec<(Var, f64)> = leaves.iter().map(|&v| (v, 1.5)).collect();
    for ins in prog {
        // A typed error (a rank or shape an op does not take) skips the instruction;
        // it depends on shapes only, so it is skipped on every replay.
        if let Ok(Some(v)) = step(t, &vals, ins) {
            vals.push(v);
        }
    }
    Ok(vals[vals.len() - 1].0)
}

fuzz_target!(|data: &[u8]| {
    let mut d = Draw::new(data);
    let (shapes, prog) = decode(&mut d);
    let inputs: Vec<Tensor<f64>> = shapes
        .iter()
        .map(|s| {
            let n: usize = s.iter().product();
            Tensor::from_vec(s, (0..n).map(|_| d.sane64(1.5)).collect()).expect("rank ≤ 3")
        })
        .collect();
    let opts = GradcheckOptions {
        seed: d.u64(),
        // Finite differences at 4 elements of each input, picked by the seed: every
        // element of an input goes through the same ops, so checking all of them (up
        // to 64) multiplied the cost without reaching new code; the analytic
        // gradients are still computed in full.
        max_elements: Some(MAX_CHECKED_ELEMENTS),
        ..GradcheckOptions::default()
    };
    let report = check_gradients(|t, xs| run(t, xs, &prog), &inputs, &opts)
        .unwrap_or_else(|e| panic!("a program of fitting ops failed: {e}\n{prog:?}"));
    assert!(
        report.passed(),
        "{report}\ninputs {shapes:?}\nprogram {prog:?}"
    );
});

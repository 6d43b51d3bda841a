//! Long elementwise calls, split over the rayon pool (`readout_kernels::parallel`),
//! give the bits of the unsplit call: for every broadcast, on 1, 2 and 3 threads, with
//! rows of 7 values so that parts end inside SIMD vectors. Needs the `rayon` feature
//! (`cargo test -p readout-kernels --features rayon --test parallel`).
#![cfg(feature = "rayon")]

use readout_kernels::elementwise::{Binary, Broadcast, Unary, binary, unary};
use readout_kernels::layout::expand;
use readout_kernels::parallel::{PARALLEL_MIN_VALUES, on_this_thread};

const BROADCASTS: [Broadcast; 4] = [
    Broadcast::Same,
    Broadcast::Scalar,
    Broadcast::Row,
    Broadcast::Col,
];

fn on_threads<R: Send>(k: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(k)
        .build()
        .unwrap()
        .install(f)
}

/// `n` values in (−2, 2), none zero (they divide).
fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 1.9 * ((i as f32 + seed) * 0.618).sin())
        .collect()
}

/// The index into `b` of value `i` of a `[rows, cols]` operand.
fn b_index(bcast: Broadcast, i: usize, cols: usize) -> usize {
    match bcast {
        Broadcast::Same => i,
        Broadcast::Scalar => 0,
        Broadcast::Row => i % cols,
        Broadcast::Col => i / cols,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Rows of 7 and a length just past the threshold: parts of whole rows, not a
/// multiple of 8 values.
const COLS: usize = 7;
const ROWS: usize = PARALLEL_MIN_VALUES / COLS + 5;

#[test]
fn split_binary_calls_give_the_bits_of_one_thread() {
    let n = ROWS * COLS;
    assert!(n >= PARALLEL_MIN_VALUES);
    let a = values(n, 0.0);
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
        for bcast in BROADCASTS {
            let b = values(bcast.b_len(ROWS, COLS), 3.0);
            let run = || {
                let mut out = vec![0.0f32; n];
                binary(op, &a, &b, bcast, COLS, &mut out);
                out
            };
            let one = on_threads(1, run);
            // Each value is one IEEE operation on every path: the reference is exact.
            let want: Vec<f32> = (0..n)
                .map(|i| op.apply(a[i], b[b_index(bcast, i, COLS)]))
                .collect();
            assert_eq!(bits(&one), bits(&want), "{op:?} {bcast:?} on 1 thread");
            for threads in [2, 3] {
                let split = on_threads(threads, run);
                assert_eq!(bits(&split), bits(&one), "{op:?} {bcast:?} on {threads}");
            }
            // Inside on_this_thread the call is not split; same bits still.
            let nested = on_threads(2, || on_this_thread(run));
            assert_eq!(bits(&nested), bits(&one), "{op:?} {bcast:?} nested");
        }
    }
}

#[test]
fn split_unary_calls_give_the_bits_of_one_thread() {
    let n = ROWS * COLS;
    let x = values(n, 1.0);
    for op in [Unary::Tanh, Unary::Exp, Unary::Sigmoid, Unary::Square] {
        let run = || {
            let mut out = vec![0.0f32; n];
            unary(op, &x, &mut out);
            out
        };
        let one = on_threads(1, run);
        for threads in [2, 3] {
            assert_eq!(bits(&on_threads(threads, run)), bits(&one), "{op:?}");
        }
    }
}

#[test]
fn split_expands_give_the_bits_of_one_thread() {
    let n = ROWS * COLS;
    for bcast in BROADCASTS {
        let src = values(bcast.b_len(ROWS, COLS), 2.0);
        let want: Vec<f32> = (0..n).map(|i| src[b_index(bcast, i, COLS)]).collect();
        for threads in [1, 2, 3] {
            let mut out = vec![0.0f32; n];
            on_threads(threads, || expand(&src, bcast, ROWS, COLS, &mut out));
            assert_eq!(bits(&out), bits(&want), "{bcast:?} on {threads}");
        }
    }
    // A copy given as one long row (as `Tape::constant_copied` makes it).
    let src = values(n, 5.0);
    let mut out = vec![0.0f32; n];
    on_threads(2, || expand(&src, Broadcast::Same, 1, n, &mut out));
    assert_eq!(bits(&out), bits(&src));
}

#[test]
fn long_sums_give_the_same_bits_on_any_number_of_threads() {
    use readout_kernels::reduce::sum_all;
    let n = 3 * PARALLEL_MIN_VALUES + 12_345;
    let x = values(n, 4.0);
    let one = on_threads(1, || sum_all(&x));
    let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
    assert!(
        (f64::from(one) - exact).abs() <= 1e-6 * n as f64,
        "{one} vs {exact}"
    );
    for threads in [2, 3] {
        assert_eq!(on_threads(threads, || sum_all(&x)).to_bits(), one.to_bits());
    }
}

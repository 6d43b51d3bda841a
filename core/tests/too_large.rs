//! Results too large to allocate are typed errors, not allocator panics ("capacity
//! overflow"): tensors with a zero dimension can carry absurd other dimensions, and
//! `dim_size` / `ptr` arguments can ask for any number of rows.

use readout_core::{CoreError, Tape, Tensor};

const ABSURD: usize = 1 << 40;

fn too_large<T: std::fmt::Debug>(r: Result<T, CoreError>, op: &str) {
    match r {
        Err(CoreError::TooLarge { op: o, .. }) => assert_eq!(o, op),
        other => panic!("expected TooLarge from {op}, got {other:?}"),
    }
}

#[test]
fn constructors() {
    too_large(Tensor::<f32>::zeros(&[ABSURD, ABSURD]), "Tensor::full");
    too_large(Tensor::<f64>::full(&[usize::MAX, 2], 1.0), "Tensor::full");
    // Representable but beyond one allocation (isize::MAX bytes).
    too_large(Tensor::<f64>::zeros(&[1 << 62]), "Tensor::full");
    // An empty tensor with an absurd dimension is fine: it holds nothing.
    let e = Tensor::<f32>::zeros(&[ABSURD, 0]).unwrap();
    assert_eq!(e.numel(), 0);
    let msg = Tensor::<f32>::zeros(&[ABSURD, ABSURD])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("too large") && msg.contains("1099511627776"),
        "{msg}"
    );
}

#[test]
fn ops_with_absurd_results() {
    let mut t = Tape::<f32>::new();
    let a = t.variable(Tensor::zeros(&[ABSURD, 0]).unwrap());
    let b = t.variable(Tensor::zeros(&[0, ABSURD]).unwrap());
    too_large(t.matmul(a, b), "matmul");
    let x = t.variable(Tensor::from_vec(&[2, 3], vec![1.0; 6]).unwrap());
    too_large(t.scatter_add(x, &[0, 1], usize::MAX), "scatter_add");
    too_large(t.scatter_mean(x, &[0, 1], usize::MAX), "scatter_add");
    let row = t.variable(Tensor::from_vec(&[1, 3], vec![1.0; 3]).unwrap());
    too_large(t.repeat_segments(row, &[0, usize::MAX]), "repeat_segments");
    let c = t.variable(Tensor::zeros(&[0, ABSURD]).unwrap());
    too_large(t.segment_matmul_tn(b, c, &[0, 0]), "segment_matmul_tn");
    let blocks = t.variable(Tensor::zeros(&[1, 0, ABSURD]).unwrap());
    too_large(
        t.segment_matmul_nn(a, blocks, &[0, ABSURD]),
        "segment_matmul_nn",
    );
    // The tape still works afterwards.
    let s = t.sum(x).unwrap();
    assert_eq!(t.value(s).unwrap().item(), 6.0);
}

//! `MemPooling`: every bad constructor argument and forward input is a typed error
//! naming the argument.

use readout_core::{Tape, Tensor};
use readout_layers::PygWeights;
use readout_layers::{LayerError, Mask, MemPooling, PoolArgs, PoolPath};

fn err_name(e: &LayerError) -> String {
    match e {
        LayerError::InvalidArgument { name, .. } => (*name).to_string(),
        LayerError::WrongShape { name, .. } | LayerError::LengthMismatch { name, .. } => {
            name.clone()
        }
        other => format!("{other:?}"),
    }
}

#[test]
fn constructor_errors() {
    for (args, name) in [
        ((0, 2, 1, 1, 1.0), "in_channels"),
        ((2, 0, 1, 1, 1.0), "out_channels"),
        ((2, 2, 0, 1, 1.0), "heads"),
        ((2, 2, 1, 0, 1.0), "num_clusters"),
        ((2, 2, 1, 1, 0.0), "tau"),
        ((2, 2, 1, 1, -1.0), "tau"),
        ((2, 2, 1, 1, f64::NAN), "tau"),
        ((2, 2, 1, 1, f64::INFINITY), "tau"),
    ] {
        let e = MemPooling::new(args.0, args.1, args.2, args.3, args.4).unwrap_err();
        assert!(matches!(e, LayerError::InvalidArgument { .. }), "{e}");
        assert_eq!(err_name(&e), name, "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn forward_errors() {
    let l = MemPooling::new(3, 2, 2, 2, 1.0).unwrap();
    let x2 = Tensor::filled(readout_core::Shape::d2(5, 3), 0.5f32);
    let x3 = Tensor::filled(readout_core::Shape::d3(2, 4, 3), 0.5f32);
    let mask = [true; 8];
    let m = Mask::new([2, 4], &mask).unwrap();
    let m_wrong = Mask::new([4, 2], &mask).unwrap();
    let cases: Vec<(&Tensor<f32>, PoolArgs<'_>, &str, &str)> = vec![
        (
            &x2,
            PoolArgs::new().batch(&[0, 1, 0, 1, 1]),
            "batch",
            "sorted",
        ),
        (&x2, PoolArgs::new().batch(&[0, 0, 1]), "batch", "5"),
        (&x2, PoolArgs::new().batch(&[-1, 0, 0, 1, 1]), "batch", "-1"),
        (
            &x2,
            PoolArgs::new().batch(&[0, 0, 1, 1, 3]).batch_size(3),
            "batch_size",
            "4",
        ),
        (&x2, PoolArgs::new().batch_size(0), "batch_size", "0"),
        (&x2, PoolArgs::new().mask(m), "mask", "dense"),
        (&x3, PoolArgs::new().mask(m_wrong), "mask", "[4, 2]"),
        (&x3, PoolArgs::new().batch(&[0, 0]), "batch", "dense"),
        (
            &x3,
            PoolArgs::new().max_num_nodes(3),
            "max_num_nodes",
            "dense",
        ),
        (&x3, PoolArgs::new().batch_size(2), "batch_size", "dense"),
    ];
    for (x, args, name, text) in cases {
        for path in [PoolPath::Ragged, PoolPath::Dense] {
            let e = l.forward(x, args.path(path)).unwrap_err();
            assert_eq!(err_name(&e), name, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains(text), "{msg}");
        }
    }
    // x of the wrong width or rank.
    let wide = Tensor::filled(readout_core::Shape::d2(5, 4), 0.5f32);
    let e = l.forward(&wide, PoolArgs::new()).unwrap_err();
    assert!(
        matches!(&e, LayerError::WrongShape { name, expected, got } if name == "x" && expected == &vec![5, 3] && got == &vec![5, 4]),
        "{e}"
    );
    let wide3 = Tensor::filled(readout_core::Shape::d3(2, 4, 2), 0.5f32);
    let e = l.forward(&wide3, PoolArgs::new()).unwrap_err();
    assert!(
        matches!(&e, LayerError::WrongShape { name, .. } if name == "x"),
        "{e}"
    );
    let flat = Tensor::filled(readout_core::Shape::d1(3), 0.5f32);
    let e = l.forward(&flat, PoolArgs::new()).unwrap_err();
    assert_eq!(err_name(&e), "x", "{e}");
    let empty_dense = Tensor::filled(readout_core::Shape::d3(0, 4, 3), 0.5f32);
    let e = l.forward(&empty_dense, PoolArgs::new()).unwrap_err();
    assert_eq!(err_name(&e), "x", "{e}");
    // An empty batch needs batch_size; with it, the graphs are empty.
    let none = Tensor::filled(readout_core::Shape::d2(0, 3), 0.5f32);
    let e = l.forward(&none, PoolArgs::new().batch(&[])).unwrap_err();
    assert_eq!(err_name(&e), "batch", "{e}");
    let (out, s) = l
        .forward(&none, PoolArgs::new().batch(&[]).batch_size(2))
        .unwrap();
    assert_eq!((out.shape(), s.shape()), (&[2, 2, 2][..], &[2, 0, 2][..]));
    assert!(out.data().iter().all(|&v| v == 0.0));
    // Sizes that cannot be allocated are errors, not panics or aborts.
    let e = l
        .forward(&x2, PoolArgs::new().batch(&[0, 0, 1, 1, i64::MAX]))
        .unwrap_err();
    assert!(matches!(e, LayerError::TooLarge { .. }), "{e}");
    let e = l
        .forward(&x2, PoolArgs::new().batch_size(usize::MAX))
        .unwrap_err();
    assert!(matches!(e, LayerError::TooLarge { .. }), "{e}");
    let e = l
        .forward(&x2, PoolArgs::new().max_num_nodes(usize::MAX / 2))
        .unwrap_err();
    assert!(matches!(e, LayerError::TooLarge { .. }), "{e}");
    // max_num_nodes = 0 drops every node (as to_dense_batch does).
    let (out, s) = l
        .forward(
            &x2,
            PoolArgs::new().batch(&[0, 0, 1, 1, 1]).max_num_nodes(0),
        )
        .unwrap();
    assert_eq!((out.shape(), s.shape()), (&[2, 2, 2][..], &[2, 0, 2][..]));
    // A mask of the wrong length.
    let e = Mask::new([2, 4], &[true; 7]).unwrap_err();
    assert_eq!(err_name(&e), "mask", "{e}");
    // Parameters that are not this layer's.
    let other = MemPooling::new(3, 2, 3, 2, 1.0).unwrap();
    let mut tape = Tape::<f32>::new();
    let b = other.parameters().bind(&mut tape, false);
    let xv = tape.constant(x2.clone());
    let e = l
        .forward_on(&mut tape, &b, xv, PoolArgs::new())
        .unwrap_err();
    assert!(
        matches!(&e, LayerError::WrongShape { name, .. } if name == "k"),
        "{e}"
    );
    // kl_loss of something that is not [B, N, K], or B = 0.
    let e = MemPooling::kl_loss(&x2).unwrap_err();
    assert_eq!(err_name(&e), "S", "{e}");
    let e =
        MemPooling::kl_loss(&Tensor::filled(readout_core::Shape::d3(0, 2, 2), 0.5)).unwrap_err();
    assert_eq!(err_name(&e), "S", "{e}");
}

//! Regression tests for what the fuzz targets found (`fuzz/README.md`): each reproduces
//! one finding with the smallest input that showed it.

use readout_core::{Tape, Tensor};
use readout_layers::PygWeights;
use readout_layers::limits::{MAX_ELEMENTS, MAX_GRAD_ITER};
use readout_layers::{
    EquilibriumAggregation, InnerGrad, LayerError, Mask, MemPooling, PoolArgs, PoolPath, Segments,
};

const ABSURD: usize = 1 << 40;

fn too_large(r: Result<impl std::fmt::Debug, LayerError>, name: &str) {
    match r {
        Err(LayerError::TooLarge { name: n, limit, .. }) => {
            assert!(n.contains(name), "{n} does not name {name}");
            assert_eq!(limit, MAX_ELEMENTS);
        }
        other => panic!("expected TooLarge naming {name}, got {other:?}"),
    }
}

/// layer_inputs: `MemPooling::new` with absurd sizes panicked with "capacity overflow"
/// (the parameter tensor's element count saturated to `usize::MAX`).
#[test]
fn mem_pooling_new_refuses_absurd_sizes() {
    too_large(MemPooling::new(ABSURD, 2, 1, 1, 1.0), "k");
    too_large(MemPooling::new(1, 2, usize::MAX, usize::MAX, 1.0), "k");
    too_large(MemPooling::new(2, ABSURD, 1, 1, 1.0), "lin.weight");
    let e = MemPooling::new(1, 1, 1, usize::MAX, 1.0).unwrap_err();
    assert!(e.to_string().contains("above the limit"), "{e}");
}

#[test]
fn equilibrium_new_refuses_absurd_sizes() {
    too_large(
        EquilibriumAggregation::new(usize::MAX, 1, &[], 1, 0.1),
        "in_channels + out_channels",
    );
    too_large(
        EquilibriumAggregation::new(1, 1, &[ABSURD], 1, 0.1),
        "potential.layers.0.0.weight",
    );
    too_large(
        EquilibriumAggregation::new(1 << 29, 1, &[8], 1, 0.1),
        "potential.layers.0.0.weight",
    );
    let e = EquilibriumAggregation::new(1, 1, &[], MAX_GRAD_ITER + 1, 0.1).unwrap_err();
    assert!(
        matches!(
            e,
            LayerError::InvalidArgument {
                name: "grad_iter",
                ..
            }
        ),
        "{e}"
    );
    assert!(EquilibriumAggregation::new(1, 1, &[], MAX_GRAD_ITER, 0.1).is_ok());
}

/// layer_inputs: an absurd `dim_size`, or an `index` entry near `i64::MAX`, made the
/// forward allocate that many set rows (abort: out of memory).
#[test]
fn equilibrium_forward_refuses_absurd_set_counts() {
    let layer = EquilibriumAggregation::new(2, 3, &[4], 2, 0.1).unwrap();
    let x = Tensor::from_vec(&[2, 2], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
    too_large(layer.forward(&x, Segments::One, Some(ABSURD)), "dim_size");
    too_large(
        layer.forward(&x, Segments::Index(&[0, 1]), Some(usize::MAX)),
        "dim_size",
    );
    too_large(
        layer.forward(&x, Segments::Index(&[0, i64::MAX]), None),
        "max(index) + 1",
    );
    too_large(
        layer.forward(&x, Segments::Ptr(&[0, 2]), Some(ABSURD)),
        "dim_size",
    );
    let empty = Tensor::from_vec(&[0, 2], vec![]).unwrap();
    too_large(
        layer.forward(&empty, Segments::One, Some(ABSURD)),
        "dim_size",
    );
    // A large but sane dim_size still works.
    let y = layer.forward(&x, Segments::One, Some(1000)).unwrap();
    assert_eq!(y.shape(), &[1000, 3]);
}

/// layer_inputs: an absurd `batch_size`, `max_num_nodes` or `batch` entry, or an
/// empty dense `x` with an absurd batch dimension, made MemPooling allocate that many
/// graphs or padded rows (abort: out of memory).
#[test]
fn mem_pooling_forward_refuses_absurd_batches() {
    let pool = MemPooling::new(2, 3, 2, 2, 1.0).unwrap();
    let x = Tensor::from_vec(&[2, 2], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
    for path in [PoolPath::Ragged, PoolPath::Dense] {
        let args = PoolArgs::new().path(path);
        too_large(pool.forward(&x, args.batch_size(ABSURD)), "batch_size");
        too_large(
            pool.forward(&x, args.batch(&[0, 1]).batch_size(ABSURD)),
            "batch_size",
        );
        too_large(pool.forward(&x, args.batch(&[0, i64::MAX])), "batch_size");
        too_large(
            pool.forward(&x, args.max_num_nodes(ABSURD)),
            "max_num_nodes",
        );
        too_large(
            pool.forward(&x, args.batch(&[0, 0]).max_num_nodes(usize::MAX)),
            "max_num_nodes",
        );
        let empty = Tensor::from_vec(&[ABSURD, 0, 2], vec![]).unwrap();
        too_large(pool.forward(&empty, args), "batch_size");
        let mask = Mask::new([ABSURD, 0], &[]).unwrap();
        too_large(pool.forward(&empty, args.mask(mask)), "batch_size");
    }
}

/// layer_inputs: with no set at all (`x` empty and `dim_size = 0`), the recorded
/// energy's regulariser was a mean over zero sets, 0/0, and the gradient of `lamb`
/// came out NaN (0·∞ in the second backward). With no set there is no regulariser.
#[test]
fn no_set_gives_finite_gradients() {
    let layer = EquilibriumAggregation::new(1, 2, &[3], 2, 0.1).unwrap();
    let x = Tensor::from_vec(&[0, 1], vec![]).unwrap();
    for segments in [Segments::One, Segments::Index(&[]), Segments::Ptr(&[0])] {
        let mut tape = Tape::<f32>::new();
        let p = layer.parameters().bind(&mut tape, true);
        let xv = tape.variable(x.clone());
        let y = layer
            .forward_on(&mut tape, &p, xv, segments, Some(0), InnerGrad::Record)
            .unwrap();
        assert_eq!(tape.value(y).unwrap().shape(), &[0, 2]);
        let loss = tape.sum(y).unwrap();
        let grads = tape.backward(loss).unwrap();
        for (v, g) in grads.iter() {
            assert!(g.all_finite(), "gradient of {v:?}: {g:?}");
        }
        assert_eq!(
            layer.forward(&x, segments, Some(0)).unwrap().shape(),
            &[0, 2]
        );
    }
}

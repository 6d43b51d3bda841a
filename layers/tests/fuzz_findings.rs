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

/// layer_numerics, finding O1: `f32` and `f64` gradients of EquilibriumAggregation with
/// `hidden [2, 2]` were 3.6 % apart (the target's bound is 2 %). At the third inner step
/// an element's second LayerNorm input row was `[-8.336, -8.354]`: a spread of 0.009
/// under a mean of 8.3, and the norm's backward rebuilt `x̂` from the `f32`-rounded row
/// mean, so `Σ x̂ ≠ 0` and the second-order terms (`rstd² ≈ 1.2e4`) no longer cancelled.
/// With `x̂` re-centred (readout-core's layer norm backward) they agree to 6e-4.
#[test]
fn width_two_layer_norm_gradients_keep_f32_precision() {
    let m = -0.796_078_4f32;
    let values: [&[f32]; 19] = [
        &[m],
        &[m; 12],
        &[m, -0.296_078_4],
        &[-0.793_942_15, m],
        &[m, m],
        &[-0.702_327, m, m, m],
        &[m, -0.296_078_4],
        &[m, m],
        &[m, m],
        &[m, m],
        &[m],
        &[m, m, m, m, m, m, -0.796_139_5, m, m, m, m, m],
        &[m, m],
        &[m, m, -0.795_864_8, m, m, m, m, m, m, m, m, m],
        &[m, m],
        &[m, m, m, 0.844_571_6, -0.958_098_7, 0.769_436_1],
        &[0.555_199_5],
        &[0.382_467_4],
        &[0.995_544_3],
    ];
    let mut layer = EquilibriumAggregation::new(3, 3, &[2, 2], 3, 0.1).unwrap();
    for (p, v) in layer.parameters_mut().iter_mut().zip(values) {
        p.value_mut().copy_from_slice(v);
    }
    let x = [
        0.232_944_25f32,
        0.198_825_12,
        0.019_745_111,
        1.797_177_1,
        0.893_781_9,
        -0.182_772_52,
        -1.268_726_6,
        -0.540_505_05,
        -0.538_796_07,
        0.929_976_46,
        -0.589_089_75,
        -1.776_241_7,
    ];
    let mut w = vec![1.0f32; 15];
    w[..3].copy_from_slice(&[0.465_995_3, -0.294_544_88, 0.997_650_15]);
    let index = [2i64, 3, 1, 0];

    /// Every parameter's gradient, then `x`'s, of `Σ out·w` on a tape of `T`.
    fn grads<T: readout_core::Real>(
        layer: &EquilibriumAggregation,
        x: &[f32],
        w: &[f32],
        index: &[i64],
    ) -> Vec<Vec<f64>> {
        let cast = |shape: &[usize], v: &[f32]| {
            let t = Tensor::from_vec(shape, v.to_vec()).unwrap();
            t.cast::<T>()
        };
        let mut tape = Tape::<T>::new();
        let p = layer.parameters().bind(&mut tape, true);
        let xv = tape.variable(cast(&[4, 3], x));
        let segments = Segments::Index(index);
        let out = layer
            .forward_on(&mut tape, &p, xv, segments, Some(5), InnerGrad::Record)
            .unwrap();
        let wv = tape.constant(cast(&[5, 3], w));
        let prod = tape.mul(out, wv).unwrap();
        let loss = tape.sum(prod).unwrap();
        let mut wrt = p.vars().to_vec();
        wrt.push(xv);
        let g = tape.grad(loss, None, &wrt, false).unwrap();
        g.iter()
            .map(|&v| {
                tape.value(v)
                    .unwrap()
                    .data()
                    .iter()
                    .map(|a| a.to_f64())
                    .collect()
            })
            .collect()
    }
    let g32 = grads::<f32>(&layer, &x, &w, &index);
    let g64 = grads::<f64>(&layer, &x, &w, &index);
    for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
        let scale = 1.0 + b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (p, q) in a.iter().zip(b) {
            // Measured 6e-4 at most; 3.6e-2 before the re-centring.
            assert!(
                (p - q).abs() <= 2e-3 * scale,
                "gradient {i}: {a:?} vs {b:?}"
            );
        }
    }
}

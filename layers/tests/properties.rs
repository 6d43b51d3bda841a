//! Properties beyond the fuzz targets (proptest, modest case counts):
//!
//! - MemPooling's `out` does not change when the nodes of each graph are permuted (its
//!   `S` rows move with their nodes), on both paths, for `[N, F]` + `batch` input;
//! - results do not depend on the thread count. The only parallelism in the layers is
//!   the kernels' GEMM with the `rayon` feature, which splits the rows of `C` and never
//!   `K`, so 1 and 2 threads must give the same bits for both layers' inference and
//!   training paths. Those tests need the feature:
//!   `cargo test -p readout-layers --features rayon --test properties` (run by CI).
//!   (EquilibriumAggregation's permutation invariance is tested elsewhere.)

use proptest::prelude::*;
use readout_core::Tensor;
use readout_layers::PygWeights;
use readout_layers::{MemPooling, PoolArgs, PoolPath};

/// A deterministic generator for test data (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn pool(f: usize, o: usize, h: usize, k: usize, tau: f64, seed: u64) -> MemPooling {
    let mut l = MemPooling::new(f, o, h, k, tau).unwrap();
    let mut rng = Rng(seed);
    for p in l.parameters_mut().iter_mut() {
        for v in p.value_mut() {
            *v = rng.uniform(-1.2, 1.2);
        }
    }
    l
}

fn batch_of(sizes: &[usize]) -> Vec<i64> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(g, &s)| std::iter::repeat_n(g as i64, s))
        .collect()
}

/// `|a − b| ≤ tol·(1 + max|b|)` element by element.
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = 1.0 + b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Permuting the nodes within each graph permutes the rows of `S` and leaves `out`
    /// unchanged (up to the rounding of a sum in another order).
    #[test]
    fn mem_pool_out_is_invariant_to_node_order_within_graphs(
        sizes in proptest::collection::vec(0usize..7, 1..5),
        f in 1usize..5,
        o in 1usize..4,
        heads in 1usize..3,
        k in 1usize..5,
        tau in prop::sample::select(&[0.5f64, 1.0, 2.5][..]),
        dense in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let layer = pool(f, o, heads, k, tau, seed);
        let n: usize = sizes.iter().sum();
        let mut rng = Rng(seed ^ 0x5555);
        let x = rng.vec(n * f, -2.0, 2.0);
        let batch = batch_of(&sizes);
        // A random permutation inside each graph: perm[new] = old.
        let mut perm: Vec<usize> = (0..n).collect();
        let mut start = 0;
        for &s in &sizes {
            for i in (1..s).rev() {
                let j = rng.below(i + 1);
                perm.swap(start + i, start + j);
            }
            start += s;
        }
        let xp: Vec<f32> = perm.iter().flat_map(|&i| x[i * f..(i + 1) * f].to_vec()).collect();
        let path = if dense { PoolPath::Dense } else { PoolPath::Ragged };
        let args = PoolArgs::new().batch(&batch).batch_size(sizes.len()).path(path);
        let x = Tensor::from_vec(&[n, f], x).unwrap();
        let xp = Tensor::from_vec(&[n, f], xp).unwrap();
        let (out, s) = layer.forward_ragged(&x, args).unwrap();
        let (outp, sp) = layer.forward_ragged(&xp, args).unwrap();
        assert_close("out", outp.data(), out.data(), 1e-5);
        for (new, &old) in perm.iter().enumerate() {
            prop_assert_eq!(&sp.data()[new * k..(new + 1) * k], &s.data()[old * k..(old + 1) * k]);
        }
        // And the same through PyG's padded output.
        let (outd, _) = layer.forward(&xp, args).unwrap();
        assert_close("padded out", outd.data(), out.data(), 1e-5);
    }
}

#[cfg(feature = "rayon")]
mod threads {
    use super::*;
    use readout_core::Tape;
    use readout_layers::{EquilibriumAggregation, InnerGrad, Segments};

    fn on_threads<R: Send>(k: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .unwrap()
            .install(f)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Inference output, training output and every gradient of a MemPooling batch.
    fn mem_pool_run(
        layer: &MemPooling,
        x: &Tensor<f32>,
        batch: &[i64],
        path: PoolPath,
    ) -> Vec<Vec<u32>> {
        let args = PoolArgs::new().batch(batch).path(path);
        let (out, s) = layer.forward(x, args).unwrap();
        let mut tape = Tape::<f32>::new();
        let p = layer.parameters().bind(&mut tape, true);
        let xv = tape.variable(x.clone());
        let mut pooled = layer.forward_on(&mut tape, &p, xv, args).unwrap();
        let kl = pooled.kl_loss(&mut tape).unwrap();
        let sum = tape.sum(pooled.out()).unwrap();
        let loss = tape.add(sum, kl).unwrap();
        let mut wrt = p.vars().to_vec();
        wrt.push(xv);
        let grads = tape.grad(loss, None, &wrt, false).unwrap();
        let mut v = vec![bits(out.data()), bits(s.data())];
        for g in grads {
            v.push(bits(tape.value(g).unwrap().data()));
        }
        v
    }

    fn eq_run(layer: &EquilibriumAggregation, x: &Tensor<f32>, index: &[i64]) -> Vec<Vec<u32>> {
        let y = layer.forward(x, Segments::Index(index), None).unwrap();
        let mut tape = Tape::<f32>::new();
        let p = layer.parameters().bind(&mut tape, true);
        let xv = tape.variable(x.clone());
        let out = layer
            .forward_on(
                &mut tape,
                &p,
                xv,
                Segments::Index(index),
                None,
                InnerGrad::Record,
            )
            .unwrap();
        let sq = tape.square(out).unwrap();
        let loss = tape.sum(sq).unwrap();
        let mut wrt = p.vars().to_vec();
        wrt.push(xv);
        let grads = tape.grad(loss, None, &wrt, false).unwrap();
        let mut v = vec![bits(y.data()), bits(tape.value(out).unwrap().data())];
        for g in grads {
            v.push(bits(tape.value(g).unwrap().data()));
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4))]

        /// Sizes large enough for the GEMMs to split (≥ `PARALLEL_MIN_FLOPS`): 1 and 2
        /// threads give the same bits, forward and gradients, on both paths.
        #[test]
        fn mem_pool_results_do_not_depend_on_thread_count(
            graphs in 20usize..40,
            seed in any::<u64>(),
            dense in any::<bool>(),
        ) {
            let (f, heads, k) = (48, 4, 16);
            let layer = pool(f, 32, heads, k, 1.0, seed);
            let mut rng = Rng(seed);
            let sizes: Vec<usize> = (0..graphs).map(|_| 60 + rng.below(80)).collect();
            let n: usize = sizes.iter().sum();
            // The largest GEMM, x·kᵀ, must be big enough to be split.
            prop_assert!(2 * n * heads * k * f >= readout_kernels::gemm::PARALLEL_MIN_FLOPS as usize);
            let x = Tensor::from_vec(&[n, f], rng.vec(n * f, -1.0, 1.0)).unwrap();
            let batch = batch_of(&sizes);
            let path = if dense { PoolPath::Dense } else { PoolPath::Ragged };
            let one = on_threads(1, || mem_pool_run(&layer, &x, &batch, path));
            let two = on_threads(2, || mem_pool_run(&layer, &x, &batch, path));
            prop_assert!(one == two, "1 and 2 threads differ");
        }

        #[test]
        fn equilibrium_results_do_not_depend_on_thread_count(
            n in 3000usize..4000,
            seed in any::<u64>(),
        ) {
            let (cin, cout) = (16, 8);
            let mut layer = EquilibriumAggregation::new(cin, cout, &[64, 64], 2, 0.1).unwrap();
            let mut rng = Rng(seed);
            for p in layer.parameters_mut().iter_mut() {
                for v in p.value_mut() {
                    *v = rng.uniform(-0.5, 0.5);
                }
            }
            let x = Tensor::from_vec(&[n, cin], rng.vec(n * cin, -1.0, 1.0)).unwrap();
            let index: Vec<i64> = (0..n).map(|_| rng.below(50) as i64).collect();
            let one = on_threads(1, || eq_run(&layer, &x, &index));
            let two = on_threads(2, || eq_run(&layer, &x, &index));
            prop_assert!(one == two, "1 and 2 threads differ");
        }
    }
}

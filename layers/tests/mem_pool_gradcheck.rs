//! `MemPooling`'s gradients in `f64` against finite differences, first and second
//! order.

mod common;

use common::mem_pool::*;
use common::{Rng, weighted_sum};
use readout_core::gradcheck::{GradcheckOptions, check_gradients};
use readout_core::{CoreError, Tape, Tensor, Var};
use readout_layers::PygWeights;
use readout_layers::{LayerError, MemPooling, PoolArgs, PoolPath};

#[test]
fn finite_differences_first_and_second_order() {
    let l = layer(3, 2, 2, 3, 1.3, 31);
    let batch = [0i64, 0, 0, 1, 2, 2, 2, 2];
    let mut rng = Rng::new(32);
    let x = random_x(&mut rng, &[8, 3]);
    let inputs: Vec<Tensor<f64>> = l
        .parameters()
        .iter()
        .map(|p| p.value().cast())
        .chain(std::iter::once(x))
        .collect();
    let w_out = rng.vec(3 * 3 * 2, -1.0, 1.0);
    let w_s = rng.vec(3 * 4 * 3, -1.0, 1.0);
    let core = |e: LayerError| match e {
        LayerError::Core(c) => c,
        other => panic!("{other}"),
    };
    for (path, ragged_kl) in [
        (PoolPath::Ragged, true),
        (PoolPath::Ragged, false),
        (PoolPath::RaggedTape, true),
        (PoolPath::Dense, false),
    ] {
        let build = |tape: &mut Tape<f64>, v: &[Var]| -> Result<Var, CoreError> {
            let bound = readout_layers::Bound::from_vars(v[..3].to_vec());
            let args = PoolArgs::new().batch(&batch).path(path);
            let mut p = l.forward_on(tape, &bound, v[3], args).map_err(core)?;
            let s = p.s(tape).map_err(core)?;
            let kl = if ragged_kl {
                p.kl_loss(tape).map_err(core)?
            } else {
                MemPooling::kl_loss_on(tape, s).map_err(core)?
            };
            let a = weighted_sum(tape, p.out(), &w_out);
            let b = weighted_sum(tape, s, &w_s);
            let loss = tape.add(a, b)?;
            tape.add(loss, kl)
        };
        let opts = GradcheckOptions {
            second_order: path != PoolPath::Ragged,
            ..GradcheckOptions::default()
        };
        let report = check_gradients(build, &inputs, &opts).unwrap();
        assert!(report.passed(), "{path:?}: {report}");
        let n: usize = inputs.iter().map(|t| t.numel()).sum();
        assert_eq!(report.checks.len(), if opts.second_order { 3 } else { 1 });
        assert!(report.checks.iter().all(|c| c.compared == n));
    }
}

//! Every workload runs in both modes (on a few hundred rows, so that the test is fast),
//! `train` reaches every parameter, and the probe extrapolates as documented.

use readout_benches::case::{EXTRA_MP, Prepared, Spec, all_specs, extra_mp_specs};
use readout_benches::measure::{self, Limits};
use readout_benches::{Mode, Workloads};

/// Parameters whose gradient is exactly 0 by construction (in PyG too): the biases of
/// the potential's last `Linear(→ 1)`, of its last skip, and of the last block's skip
/// (added after the last `tanh`, so it reaches `F` linearly) shift `F` by a constant,
/// so `∂E/∂y` and the output do not depend on them; with one inner step, `y₀ = 0` makes
/// the regulariser's gradient (hence `lamb`'s) 0 and the momentum term unused.
fn structural_zeros(spec: &Spec) -> Vec<String> {
    let Spec::Eq(w) = spec else {
        return Vec::new();
    };
    let l = w.num_layers.len();
    let mut v = vec![
        format!("potential.layers.{l}.bias"),
        format!("potential.res_trans.{l}.bias"),
    ];
    if l > 0 {
        v.push(format!("potential.res_trans.{}.bias", l - 1));
    }
    if w.grad_iter == 1 {
        v.push("lamb".into());
        v.push("optimizer._mom".into());
    }
    v
}

#[test]
fn every_workload_runs_and_train_reaches_every_parameter() {
    let all = Workloads::shipped().unwrap();
    for spec in all_specs(&all) {
        let (small, fraction) = spec.scaled(300.0 / spec.rows() as f64);
        assert!(fraction > 0.0 && fraction <= 1.0);
        let mut p = Prepared::new(&small).unwrap();
        let infer = p.run(Mode::Infer).unwrap();
        assert!(infer.is_finite(), "{}", spec.name());
        let loss = p.run(Mode::Train).unwrap();
        assert!(loss.is_finite(), "{}", spec.name());
        let zero_ok = structural_zeros(&spec);
        for (name, g) in p.grad_norms() {
            if zero_ok.contains(&name) {
                assert_eq!(g, 0.0, "{}: {name}", spec.name());
                continue;
            }
            assert!(
                g > 0.0 && g.is_finite(),
                "{}: {name} gradient sum {g}",
                spec.name()
            );
        }
        // train zeroes the gradients first: a second call gives the same ones.
        let before = p.grad_norms();
        p.run(Mode::Train).unwrap();
        assert_eq!(before, p.grad_norms(), "{}", spec.name());
    }
}

/// The criterion-only MemPooling shapes run at full size in both modes, and `train`
/// reaches every parameter (with one cluster, `S ≡ 1`: `k` and `conv.weight` get
/// exactly 0, in PyG too); trailing empty graphs are graphs of the batch.
#[test]
fn extra_mem_pool_shapes_run() {
    let specs = extra_mp_specs();
    assert_eq!(specs.len(), EXTRA_MP.len());
    for spec in specs {
        let Spec::Mp(w) = &spec else {
            panic!("{}: not a MemPooling shape", spec.name())
        };
        assert!(!w.graph_sizes.is_empty(), "{}", w.name);
        let mut p = Prepared::new(&spec).unwrap();
        assert!(p.run(Mode::Infer).unwrap().is_finite(), "{}", w.name);
        assert!(p.run(Mode::Train).unwrap().is_finite(), "{}", w.name);
        for (name, g) in p.grad_norms() {
            let zero = w.num_clusters == 1 && name != "lin.weight";
            assert!(
                if zero {
                    g == 0.0
                } else {
                    g > 0.0 && g.is_finite()
                },
                "{}: {name} gradient sum {g}",
                w.name
            );
        }
    }
}

#[test]
fn probe_on_a_small_workload_is_exact() {
    let all = Workloads::shipped().unwrap();
    let spec = &all_specs(&all)[1]; // eq_small, 1000 elements
    let limits = Limits {
        max_bytes: 1e12,
        max_call_seconds: 60.0,
    };
    let est = measure::probe_within(spec, Mode::Infer, &limits).unwrap();
    assert!(est.exact());
    assert!(measure::skip_reason(&est, &limits).is_none());
}

//! The optimisers, schedulers, gradient clipping and freezing against trajectories
//! recorded from torch 2.15 (`tests/data/optim/generate.py`, which defines every
//! scenario below the same way): the same start, the same gradient at every step, and
//! after every step the parameters, the learning rate and the clipped norm compared at
//! float32 rounding. Also: a run stopped, saved and resumed from its optimiser state
//! continues bit for bit.

use std::collections::BTreeMap;
use std::path::PathBuf;

use readout_layers::{
    Adam, CosineAnnealingLR, ExponentialLR, LayerError, LrScheduler, Optimizer, OptimizerState,
    Parameter, Parameters, Sgd, StepLR, Tensor, clip_grad_norm,
};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

const STEPS: usize = 12;
const NAMES: [&str; 2] = ["a", "b"];

/// The recorded tensors of every scenario, as f64 values by name.
fn recorded() -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/optim/trajectories.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let values = match v.dtype() {
                Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
                Dtype::F64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                other => panic!("{name}: {other:?}"),
            };
            (name, (v.shape().to_vec(), values))
        })
        .collect()
}

struct Scenario {
    opt: Box<dyn Optimizer>,
    sched: Option<Box<dyn LrScheduler>>,
    clip: Option<(f64, f64)>,
    frozen_b: &'static [usize],
}

/// The scenarios of `generate.py`, built with readout's API.
fn scenario(name: &str) -> Scenario {
    let plain = |opt: Box<dyn Optimizer>| Scenario {
        opt,
        sched: None,
        clip: None,
        frozen_b: &[],
    };
    let adam = |lr| Adam::new(lr).unwrap();
    match name {
        "adam" => plain(Box::new(adam(0.01))),
        "adam_l2" => plain(Box::new(Adam::with(0.01, (0.9, 0.999), 1e-8, 0.1).unwrap())),
        "adam_amsgrad" => plain(Box::new(
            Adam::with(0.01, (0.9, 0.999), 1e-8, 0.01)
                .unwrap()
                .amsgrad(true),
        )),
        "adamw" => plain(Box::new(
            Adam::adamw(0.01, (0.9, 0.999), 1e-8, 0.05).unwrap(),
        )),
        "adamw_amsgrad" => plain(Box::new(
            Adam::adamw(0.02, (0.8, 0.99), 1e-6, 0.1)
                .unwrap()
                .amsgrad(true),
        )),
        "sgd" => plain(Box::new(Sgd::new(0.1, 0.0, 0.0).unwrap())),
        "sgd_momentum_dampening" => plain(Box::new(
            Sgd::new(0.1, 0.9, 0.01).unwrap().dampening(0.3).unwrap(),
        )),
        "sgd_nesterov" => plain(Box::new(
            Sgd::new(0.05, 0.8, 0.02).unwrap().nesterov(true).unwrap(),
        )),
        "step_lr" => {
            let opt = adam(0.02);
            let sched = StepLR::new(&opt, 3, 0.5).unwrap();
            Scenario {
                sched: Some(Box::new(sched)),
                ..plain(Box::new(opt))
            }
        }
        "exponential_lr" => {
            let opt = Sgd::new(0.1, 0.5, 0.0).unwrap();
            let sched = ExponentialLR::new(&opt, 0.9).unwrap();
            Scenario {
                sched: Some(Box::new(sched)),
                ..plain(Box::new(opt))
            }
        }
        "cosine_lr" => {
            let opt = adam(0.03);
            let sched = CosineAnnealingLR::new(&opt, 4, 0.001).unwrap();
            Scenario {
                sched: Some(Box::new(sched)),
                ..plain(Box::new(opt))
            }
        }
        "clip_l2" => Scenario {
            clip: Some((0.5, 2.0)),
            ..plain(Box::new(adam(0.01)))
        },
        "clip_inf" => Scenario {
            clip: Some((0.3, f64::INFINITY)),
            ..plain(Box::new(Sgd::new(0.1, 0.9, 0.0).unwrap()))
        },
        "freeze" => Scenario {
            clip: Some((1.0, 2.0)),
            frozen_b: &[0, 1, 2, 3, 4, 8],
            ..plain(Box::new(
                Adam::with(0.01, (0.9, 0.999), 1e-8, 0.01).unwrap(),
            ))
        },
        other => panic!("no scenario {other}"),
    }
}

const SCENARIOS: [&str; 14] = [
    "adam",
    "adam_l2",
    "adam_amsgrad",
    "adamw",
    "adamw_amsgrad",
    "sgd",
    "sgd_momentum_dampening",
    "sgd_nesterov",
    "step_lr",
    "exponential_lr",
    "cosine_lr",
    "clip_l2",
    "clip_inf",
    "freeze",
];

fn start(rec: &BTreeMap<String, (Vec<usize>, Vec<f64>)>, name: &str) -> Parameters {
    Parameters::new(
        NAMES
            .iter()
            .map(|p| {
                let (shape, v) = &rec[&format!("{name}.init.{p}")];
                let v = v.iter().map(|&x| x as f32).collect();
                Parameter::new(*p, Tensor::from_vec(shape, v).unwrap())
            })
            .collect(),
    )
}

/// Sets step `t`'s recorded gradients and freezes `b` when the scenario does.
fn feed(
    rec: &BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    name: &str,
    s: &Scenario,
    t: usize,
    params: &mut Parameters,
) {
    params.zero_grad();
    for (i, p) in NAMES.iter().enumerate() {
        let frozen = *p == "b" && s.frozen_b.contains(&t);
        params.at_mut(i).set_requires_grad(!frozen);
        if let Some((_, g)) = rec.get(&format!("{name}.grad.{t}.{p}")) {
            assert!(!frozen);
            for (dst, &src) in params.at_mut(i).grad_mut().iter_mut().zip(g) {
                *dst = src as f32;
            }
        } else {
            assert!(frozen, "{name}: no gradient for {p} at step {t}");
        }
    }
}

/// `max |got − want| / max(1, max |want|)`.
fn error(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, w)| (f64::from(g) - w).abs() / scale)
        .fold(0.0, f64::max)
}

#[test]
fn every_scenario_follows_torch_at_float32_rounding() {
    let rec = recorded();
    for name in SCENARIOS {
        let mut s = scenario(name);
        let mut params = start(&rec, name);
        let mut worst = 0.0f64;
        for t in 0..STEPS {
            let before: Vec<Vec<f32>> = params.iter().map(|p| p.value().data().to_vec()).collect();
            feed(&rec, name, &s, t, &mut params);
            if let Some((max_norm, norm_type)) = s.clip {
                let norm = clip_grad_norm(&mut params, max_norm, norm_type).unwrap();
                let want = rec[&format!("{name}.norm.{t}")].1[0];
                assert!(
                    (f64::from(norm) - want).abs() <= 2e-7 * want.max(1.0),
                    "{name} step {t}: norm {norm} vs torch {want}"
                );
            }
            s.opt.step(&mut params);
            if let Some(sched) = &mut s.sched {
                sched.step(s.opt.as_mut()).unwrap();
                assert_eq!(sched.last_epoch(), t as u64 + 1);
            }
            let want_lr = rec[&format!("{name}.lr.{t}")].1[0];
            assert!(
                (s.opt.lr() - want_lr).abs() <= 1e-15 * want_lr,
                "{name} step {t}: lr {} vs torch {want_lr}",
                s.opt.lr()
            );
            for (i, p) in NAMES.iter().enumerate() {
                let want = &rec[&format!("{name}.after.{t}.{p}")].1;
                let got = params.at(i).value().data();
                if *p == "b" && s.frozen_b.contains(&t) {
                    assert_eq!(got, &before[i][..], "{name} step {t}: frozen b moved");
                }
                worst = worst.max(error(got, want));
            }
        }
        // Float32 rounding of a dozen updates of values of order 1.
        assert!(
            worst <= 2e-6,
            "{name}: worst error {worst:e} over {STEPS} steps"
        );
    }
}

/// A frozen parameter gets no gradient from a backward pass: it is bound as a constant.
#[test]
fn a_frozen_parameter_gets_no_gradient() {
    let mut params = Parameters::new(vec![
        Parameter::new("w", Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap()),
        Parameter::new("k", Tensor::from_vec(&[2], vec![3.0, 4.0]).unwrap()),
    ]);
    params.at_mut(1).set_requires_grad(false);
    let mut tape = readout_layers::Tape::<f32>::new();
    let b = params.bind(&mut tape, true);
    let prod = tape.mul(b.var(0), b.var(1)).unwrap();
    let loss = tape.sum(prod).unwrap();
    let grads = tape.backward(loss).unwrap();
    assert!(grads.get(b.var(1)).is_none());
    params.accumulate(&b, &grads);
    assert_eq!(params.at(0).grad().data(), &[3.0, 4.0]);
    assert_eq!(params.at(1).grad().data(), &[0.0, 0.0]);
    let mut adam = Adam::new(0.1).unwrap();
    adam.step(&mut params);
    assert_eq!(params.at(1).value().data(), &[3.0, 4.0]);
    assert_eq!((adam.steps_of(0), adam.steps_of(1)), (1, 0));
}

/// Runs `steps` steps of a scenario from `params`, feeding the recorded gradients from
/// step `from`.
fn run_steps(
    rec: &BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    name: &str,
    s: &mut Scenario,
    params: &mut Parameters,
    from: usize,
    steps: usize,
) {
    for t in from..from + steps {
        feed(rec, name, s, t, params);
        if let Some((max_norm, norm_type)) = s.clip {
            clip_grad_norm(params, max_norm, norm_type).unwrap();
        }
        s.opt.step(params);
    }
}

fn bits(p: &Parameters) -> Vec<u32> {
    p.iter()
        .flat_map(|p| p.value().data().iter().map(|v| v.to_bits()))
        .collect()
}

/// Twelve steps in one go, and six steps, the optimiser's state saved to a file, a
/// fresh optimiser (other hyper-parameters) loading it, six more steps: the same bits.
fn resume<O>(name: &str, make: impl Fn() -> O, mut fresh: O)
where
    O: Optimizer + OptimizerState + PartialEq + std::fmt::Debug + 'static,
{
    let rec = recorded();
    let with = |opt: O| Scenario {
        opt: Box::new(opt),
        ..scenario(name)
    };
    let mut whole = with(make());
    let mut p_whole = start(&rec, name);
    run_steps(&rec, name, &mut whole, &mut p_whole, 0, STEPS);

    let mut opt = make();
    let mut p = start(&rec, name);
    let mut first = Scenario {
        opt: Box::new(NoOpt),
        ..scenario(name)
    };
    for t in 0..6 {
        feed(&rec, name, &first, t, &mut p);
        if let Some((max_norm, norm_type)) = first.clip {
            clip_grad_norm(&mut p, max_norm, norm_type).unwrap();
        }
        opt.step(&mut p);
    }
    first.opt = Box::new(NoOpt);
    let dir = std::env::temp_dir().join(format!("readout-optim-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.safetensors");
    opt.save_state(&p, &path).unwrap();
    fresh.load_state(&p, &path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(fresh, opt, "{name}");
    let mut resumed = with(fresh);
    run_steps(&rec, name, &mut resumed, &mut p, 6, STEPS - 6);
    assert_eq!(bits(&p), bits(&p_whole), "{name}");
}

/// Stands in for the optimiser while the test drives a concrete one.
struct NoOpt;

impl Optimizer for NoOpt {
    fn lr(&self) -> f64 {
        0.0
    }
    fn set_lr(&mut self, _: f64) -> Result<(), LayerError> {
        Ok(())
    }
    fn step(&mut self, _: &mut Parameters) {}
}

#[test]
fn a_resumed_run_continues_bit_for_bit() {
    let other_adam = || Adam::new(0.5).unwrap();
    let other_sgd = || Sgd::new(0.5, 0.0, 0.0).unwrap();
    resume(
        "adam_amsgrad",
        || {
            Adam::with(0.01, (0.9, 0.999), 1e-8, 0.01)
                .unwrap()
                .amsgrad(true)
        },
        other_adam(),
    );
    resume(
        "adamw",
        || Adam::adamw(0.01, (0.9, 0.999), 1e-8, 0.05).unwrap(),
        other_adam(),
    );
    // `b` is frozen at step 8 and has fewer steps than `a`: per-parameter counts.
    resume(
        "freeze",
        || Adam::with(0.01, (0.9, 0.999), 1e-8, 0.01).unwrap(),
        other_adam(),
    );
    resume(
        "sgd_momentum_dampening",
        || Sgd::new(0.1, 0.9, 0.01).unwrap().dampening(0.3).unwrap(),
        other_sgd(),
    );
    resume(
        "sgd_nesterov",
        || Sgd::new(0.05, 0.8, 0.02).unwrap().nesterov(true).unwrap(),
        other_sgd(),
    );
}

#[test]
fn state_files_of_the_wrong_kind_or_shape_are_refused() {
    let mut params = Parameters::new(vec![Parameter::new(
        "w",
        Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap(),
    )]);
    params.at_mut(0).grad_mut().copy_from_slice(&[0.5, -0.5]);
    let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
    sgd.step(&mut params);
    let bytes = sgd.state_bytes(&params).unwrap();
    let mut adam = Adam::new(0.1).unwrap();
    let before = adam.clone();
    match adam.load_state_bytes(&params, &bytes) {
        Err(LayerError::BadMetadata { key, reason }) => {
            assert_eq!(key, "optimizer");
            assert!(reason.contains("SGD"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(adam, before);
    let other = Parameters::new(vec![Parameter::new(
        "w",
        Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]).unwrap(),
    )]);
    assert!(matches!(
        Sgd::new(0.1, 0.0, 0.0)
            .unwrap()
            .load_state_bytes(&other, &bytes),
        Err(LayerError::WrongShape { .. })
    ));
    let renamed = Parameters::new(vec![Parameter::new(
        "v",
        Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap(),
    )]);
    assert_eq!(
        Sgd::new(0.1, 0.0, 0.0)
            .unwrap()
            .load_state_bytes(&renamed, &bytes)
            .unwrap_err(),
        LayerError::UnexpectedTensors {
            names: vec!["state.w.momentum_buffer".into()]
        }
    );
}

#[test]
fn hyper_parameters_are_checked() {
    let adam = Adam::new(0.1).unwrap();
    assert!(StepLR::new(&adam, 0, 0.5).is_err());
    assert!(CosineAnnealingLR::new(&adam, 0, 0.0).is_err());
    assert!(ExponentialLR::new(&adam, f64::NAN).is_err());
    let sgd = Sgd::new(0.1, 0.0, 0.0).unwrap();
    assert!(matches!(
        sgd.clone().nesterov(true),
        Err(LayerError::InvalidArgument {
            name: "nesterov",
            ..
        })
    ));
    let damp = Sgd::new(0.1, 0.9, 0.0).unwrap().dampening(0.1).unwrap();
    assert!(damp.nesterov(true).is_err());
    let mut adam = adam;
    assert!(adam.set_lr(-1.0).is_err());
    assert_eq!(adam.lr(), 0.1);
    adam.set_lr(0.25).unwrap();
    assert_eq!(adam.lr(), 0.25);
    let mut p = Parameters::new(vec![Parameter::new(
        "w",
        Tensor::from_vec(&[1], vec![1.0]).unwrap(),
    )]);
    assert!(clip_grad_norm(&mut p, -1.0, 2.0).is_err());
    assert!(clip_grad_norm(&mut p, 1.0, 0.0).is_err());
}

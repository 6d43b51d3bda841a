//! The PyG reference cases in `tests/data/` parse, with the names and shapes the format
//! (tests/data/README.md) and PyG's layers imply.

use std::collections::BTreeSet;
use std::path::PathBuf;

use readout_layers::{Case, CaseArgs, LayerKind, load_cases, relative_error};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn cases() -> Vec<Case> {
    load_cases(data_dir()).expect("every reference case parses")
}

/// PyG's state_dict keys and shapes for a configuration (the spec, written out).
fn pyg_params(args: &CaseArgs) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    match args {
        CaseArgs::Equilibrium(a) => {
            let d = a.in_channels + a.out_channels;
            let mut sizes = vec![d];
            sizes.extend(&a.num_layers);
            sizes.push(1);
            let l = a.num_layers.len();
            for i in 0..l {
                let p = format!("potential.layers.{i}.");
                out.push((format!("{p}0.weight"), vec![sizes[i + 1], sizes[i]]));
                out.push((format!("{p}0.bias"), vec![sizes[i + 1]]));
                out.push((format!("{p}1.weight"), vec![sizes[i + 1]]));
                out.push((format!("{p}1.bias"), vec![sizes[i + 1]]));
            }
            out.push((format!("potential.layers.{l}.weight"), vec![1, sizes[l]]));
            out.push((format!("potential.layers.{l}.bias"), vec![1]));
            for (i, &s) in sizes[1..].iter().enumerate() {
                out.push((format!("potential.res_trans.{i}.weight"), vec![s, d]));
                out.push((format!("potential.res_trans.{i}.bias"), vec![s]));
            }
            out.push(("optimizer._lr".into(), vec![1]));
            out.push(("optimizer._mom".into(), vec![1]));
            out.push(("lamb".into(), vec![1]));
        }
        CaseArgs::MemPooling(a) => {
            out.push(("k".into(), vec![a.heads, a.num_clusters, a.in_channels]));
            out.push(("conv.weight".into(), vec![1, a.heads, 1, 1]));
            out.push(("lin.weight".into(), vec![a.out_channels, a.in_channels]));
        }
    }
    out
}

#[test]
fn all_fifteen_cases_parse() {
    let cases = cases();
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "eq_deep_custom_optim",
            "eq_iter0_padded",
            "eq_iter1_median_shape",
            "eq_no_hidden",
            "eq_one_hidden_many_iters",
            "eq_single_set",
            "eq_two_sets",
            "eq_unsorted_empty_sets",
            "mp_dense_mask",
            "mp_dense_no_mask",
            "mp_padding_empty_graphs",
            "mp_pyg_test_shape",
            "mp_single_graph",
            "mp_tau_uneven",
            "mp_wide",
        ]
    );
}

#[test]
fn parameters_have_pyg_names_and_shapes_and_load_strictly() {
    for case in cases() {
        let expected = pyg_params(&case.args);
        let got: Vec<&str> = case.params.names().collect();
        let mut want: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        want.sort_unstable();
        assert_eq!(got, want, "{}", case.name);
        let mut sd = case.params.clone();
        for (name, shape) in &expected {
            if shape.len() > 3 {
                let t = sd.take_reshaped(name, shape, &[shape[1]]).unwrap();
                assert_eq!(t.shape(), &[shape[1]][..]);
            } else {
                let t = sd.take(name, shape).unwrap();
                assert_eq!(t.shape(), &shape[..], "{} {name}", case.name);
            }
        }
        sd.finish().unwrap();
    }
}

#[test]
fn inputs_outputs_and_metadata_match_the_format() {
    for case in cases() {
        let c = &case.name;
        let params = pyg_params(&case.args);
        let mut want: BTreeSet<String> = params.iter().map(|(n, _)| format!("grad.{n}")).collect();
        want.insert("grad.input.x".into());
        want.insert("out".into());
        want.insert("loss".into());
        let x_shape = case.x.shape().to_vec();
        match &case.args {
            CaseArgs::Equilibrium(a) => {
                assert_eq!(case.layer, LayerKind::Equilibrium);
                assert_eq!(case.kl_weight, 0.0, "{c}");
                assert!(case.batch.is_none() && case.mask.is_none(), "{c}");
                assert_eq!(x_shape.len(), 2, "{c}");
                assert_eq!(x_shape[1], a.in_channels, "{c}");
                let n = x_shape[0];
                let rows = match (&case.index, case.forward.dim_size) {
                    (_, Some(d)) => d,
                    (Some(ix), None) => usize::try_from(*ix.iter().max().unwrap()).unwrap() + 1,
                    (None, None) => 1,
                };
                if let Some(ix) = &case.index {
                    assert_eq!(ix.len(), n, "{c}");
                    assert!(ix.iter().all(|&i| i >= 0 && (i as usize) < rows), "{c}");
                }
                assert_eq!(
                    case.expected("out").unwrap().shape(),
                    &[rows, a.out_channels][..],
                    "{c}"
                );
                assert_eq!(
                    case.loss_weights("out").unwrap().shape(),
                    &[rows, a.out_channels][..]
                );
                assert_eq!(case.lossw.len(), 1);
                assert_eq!(case.loss, "sum(out * lossw.out)");
            }
            CaseArgs::MemPooling(a) => {
                assert_eq!(case.layer, LayerKind::MemPooling);
                assert_eq!(case.kl_weight, 0.7, "{c}");
                assert!(case.index.is_none(), "{c}");
                want.insert("S".into());
                want.insert("kl_loss".into());
                let (b, n) = if x_shape.len() == 3 {
                    assert!(case.batch.is_none());
                    (x_shape[0], x_shape[1])
                } else {
                    assert_eq!(x_shape.len(), 2);
                    match &case.batch {
                        Some(batch) => {
                            assert_eq!(batch.len(), x_shape[0]);
                            assert!(batch.windows(2).all(|w| w[0] <= w[1]), "{c}: sorted");
                            let b = usize::try_from(batch.iter().max().unwrap() + 1).unwrap();
                            let b = case.forward.batch_size.unwrap_or(b);
                            let mut counts = vec![0usize; b];
                            for &g in batch {
                                counts[g as usize] += 1;
                            }
                            let nmax = case
                                .forward
                                .max_num_nodes
                                .unwrap_or(*counts.iter().max().unwrap());
                            (b, nmax)
                        }
                        None => (1, x_shape[0]),
                    }
                };
                assert_eq!(*x_shape.last().unwrap(), a.in_channels, "{c}");
                let k = a.num_clusters;
                assert_eq!(case.expected("S").unwrap().shape(), &[b, n, k][..], "{c}");
                assert_eq!(
                    case.expected("out").unwrap().shape(),
                    &[b, k, a.out_channels][..],
                    "{c}"
                );
                assert_eq!(case.expected("kl_loss").unwrap().shape(), &[1][..]);
                assert_eq!(case.loss_weights("S").unwrap().shape(), &[b, n, k][..]);
                assert_eq!(
                    case.loss_weights("out").unwrap().shape(),
                    &[b, k, a.out_channels][..]
                );
                assert_eq!(case.lossw.len(), 2);
                if let Some(m) = &case.mask {
                    assert_eq!(m.shape, vec![b, n]);
                }
            }
        }
        let got: BTreeSet<String> = case.expect.keys().cloned().collect();
        assert_eq!(got, want, "{c}");
        let got32: BTreeSet<String> = case.pyg32.keys().cloned().collect();
        assert_eq!(got32, want, "{c}");
        assert_eq!(case.expected("loss").unwrap().shape(), &[1][..]);
        assert_eq!(
            case.expected("grad.input.x").unwrap().shape(),
            &x_shape[..],
            "{c}"
        );
        for (name, shape) in &params {
            assert_eq!(
                case.expected(&format!("grad.{name}")).unwrap().shape(),
                &shape[..]
            );
        }
    }
}

#[test]
fn specific_cases() {
    let cases = cases();
    let get = |n: &str| cases.iter().find(|c| c.name == n).unwrap();

    let c = get("eq_unsorted_empty_sets");
    assert_eq!(c.forward.dim_size, Some(7));
    let ix = c.index.as_ref().unwrap();
    assert!(ix.windows(2).any(|w| w[0] > w[1]), "unsorted");
    assert_eq!(ix.iter().max(), Some(&4));
    let CaseArgs::Equilibrium(a) = &c.args else {
        panic!()
    };
    assert_eq!((a.in_channels, a.out_channels, a.grad_iter), (4, 3, 4));
    assert_eq!(a.num_layers, vec![8, 6]);
    assert!((a.lamb - 0.3).abs() < 1e-12);

    let c = get("eq_no_hidden");
    let CaseArgs::Equilibrium(a) = &c.args else {
        panic!()
    };
    assert!(a.num_layers.is_empty());

    let c = get("eq_deep_custom_optim");
    let lr = c.params.get("optimizer._lr").unwrap();
    assert_eq!(lr.shape(), &[1][..]);
    assert!((lr.data()[0] + 0.7).abs() < 1e-6);

    let c = get("eq_iter0_padded");
    assert!(c.index.is_none());
    assert_eq!(c.forward.dim_size, Some(3));
    assert!(
        c.expect
            .iter()
            .filter(|(k, _)| k.starts_with("grad.") && *k != "grad.input.x")
            .all(|(_, t)| t.data().iter().all(|&v| v == 0.0))
    );

    let c = get("mp_padding_empty_graphs");
    assert_eq!(c.forward.max_num_nodes, Some(9));
    assert_eq!(c.forward.batch_size, Some(5));
    assert!(c.note.as_deref().unwrap().contains("NaN"));
    let CaseArgs::MemPooling(a) = &c.args else {
        panic!()
    };
    assert_eq!((a.heads, a.num_clusters, a.tau), (2, 3, 0.5));

    let c = get("mp_dense_mask");
    let m = c.mask.as_ref().unwrap();
    assert_eq!(m.shape, vec![4, 6]);
    assert!(
        m.values[18..24].iter().all(|v| !v),
        "graph 3 has no valid node"
    );
    assert_eq!(m.values.iter().filter(|v| **v).count(), 4 + 6 + 1);
    assert!(c.note.is_some());

    let c = get("mp_single_graph");
    assert!(c.batch.is_none() && c.mask.is_none());
    assert!(get("mp_wide").note.is_none());
}

/// The error measure on real data: PyG's own float32 run is within the README's 7.3e-6
/// of the float64 answer, and every expectation is at distance 0 from itself.
#[test]
fn pyg32_is_within_the_documented_distance_of_expect() {
    let mut overall: f64 = 0.0;
    for case in cases() {
        let results: Vec<(&str, &[f32])> = case
            .pyg32
            .iter()
            .map(|(n, t)| (n.as_str(), t.data()))
            .collect();
        let worst = case.worst(&results).unwrap().unwrap();
        assert!(worst.error <= 7.3e-6, "{}: {worst:?}", case.name);
        overall = overall.max(worst.error);
        for (n, t) in &case.expect {
            assert_eq!(case.compare(n, t.data()).unwrap(), (0.0, 0));
        }
        let (e, _) = relative_error(case.pyg32["loss"].data(), case.expect["loss"].data()).unwrap();
        assert!(e <= 7.3e-6);
    }
    assert!(overall > 0.0, "the float32 run is not bit-identical");
}

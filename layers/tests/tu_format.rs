//! The TU Dortmund reader of the `graph_classification` example, on small samples
//! written here in the format's text files.

#[path = "../examples/common/tu.rs"]
mod tu;

use std::fs;
use std::path::{Path, PathBuf};

/// A fresh directory under the target's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tu_format_{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn write(dir: &Path, file: &str, text: &str) {
    fs::write(dir.join(file), text).expect("writing a sample file");
}

/// Two graphs: graph 1 a triangle (nodes 1–3), graph 2 a path of two nodes (4–5);
/// graph labels −1 and 1 as in some TU sets.
fn sample(dir: &Path, name: &str) {
    write(
        dir,
        &format!("{name}_A.txt"),
        "1, 2\n2, 1\n2, 3\n3, 2\n1, 3\n3, 1\n4, 5\n5, 4\n",
    );
    write(
        dir,
        &format!("{name}_graph_indicator.txt"),
        "1\n1\n1\n2\n2\n",
    );
    write(dir, &format!("{name}_graph_labels.txt"), "1\n-1\n");
}

#[test]
fn reads_attributes_edges_and_labels() {
    let dir = scratch("attrs");
    sample(&dir, "TINY");
    write(
        &dir,
        "TINY_node_attributes.txt",
        "0.5, 1.0\n1.5, 2.0\n2.5, 3.0\n-1.0, 0.0\n4.0, 1e-3\n",
    );
    // Node labels are ignored when attributes exist (PROTEINS_full as PyG's example uses it).
    write(&dir, "TINY_node_labels.txt", "0\n1\n2\n0\n1\n");
    let ds = tu::read_tu(&dir).expect("a valid sample");
    assert_eq!(ds.name, "TINY");
    assert_eq!(ds.num_features, 2);
    assert_eq!(ds.num_classes, 2);
    assert_eq!(ds.graphs.len(), 2);
    let (g1, g2) = (&ds.graphs[0], &ds.graphs[1]);
    assert_eq!(g1.nodes, 3);
    assert_eq!(g1.x, vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
    assert_eq!(
        g1.edges,
        vec![(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0)]
    );
    // Labels 1 and −1 become classes 1 and 0 (increasing order).
    assert_eq!(g1.label, 1);
    assert_eq!(g2.label, 0);
    assert_eq!(g2.nodes, 2);
    assert_eq!(g2.x, vec![-1.0, 0.0, 4.0, 1e-3]);
    assert_eq!(g2.edges, vec![(0, 1), (1, 0)]);
}

#[test]
fn falls_back_to_one_hot_node_labels_then_to_ones_and_finds_raw() {
    let dir = scratch("labels");
    let raw = dir.join("raw");
    fs::create_dir_all(&raw).expect("raw/");
    sample(&raw, "LAB");
    write(&raw, "LAB_node_labels.txt", "3\n7\n3\n7\n9\n");
    // The dataset is found in raw/, where PyG keeps the files.
    let ds = tu::read_tu(&dir).expect("a valid sample");
    assert_eq!(ds.num_features, 3);
    assert_eq!(ds.graphs[0].x, vec![1., 0., 0., 0., 1., 0., 1., 0., 0.]);
    assert_eq!(ds.graphs[1].x, vec![0., 1., 0., 0., 0., 1.]);

    let bare = scratch("bare");
    sample(&bare, "BARE");
    let ds = tu::read_tu(&bare).expect("a valid sample");
    assert_eq!(ds.num_features, 1);
    assert_eq!(ds.graphs[0].x, vec![1.0; 3]);
}

#[test]
fn errors_name_the_file_and_line() {
    let dir = scratch("cross");
    sample(&dir, "BAD");
    // Node 3 (graph 1) to node 4 (graph 2).
    write(&dir, "BAD_A.txt", "1, 2\n3, 4\n");
    let e = tu::read_tu(&dir).expect_err("an edge between graphs");
    assert!(e.file.ends_with("BAD_A.txt") && e.line == 2, "{e}");
    assert!(e.to_string().contains("between graph 1 and graph 2"), "{e}");

    write(&dir, "BAD_A.txt", "1, 2\n2, 6\n");
    let e = tu::read_tu(&dir).expect_err("a node id out of range");
    assert!(e.line == 2 && e.what.contains("node id 6"), "{e}");

    write(&dir, "BAD_A.txt", "1, 2\n");
    write(
        &dir,
        "BAD_node_attributes.txt",
        "1, 2\n1, 2\n1\n1, 2\n1, 2\n",
    );
    let e = tu::read_tu(&dir).expect_err("a short attribute row");
    assert!(
        e.file.ends_with("BAD_node_attributes.txt") && e.line == 3,
        "{e}"
    );

    write(
        &dir,
        "BAD_node_attributes.txt",
        "1, 2\n1, x\n1, 2\n1, 2\n1, 2\n",
    );
    let e = tu::read_tu(&dir).expect_err("a non-number");
    assert!(e.line == 2 && e.what.contains("\"x\""), "{e}");

    fs::remove_file(dir.join("BAD_node_attributes.txt")).expect("remove");
    write(&dir, "BAD_graph_indicator.txt", "1\n1\n1\n3\n3\n");
    let e = tu::read_tu(&dir).expect_err("a graph id beyond the labels");
    assert!(e.file.ends_with("BAD_graph_indicator.txt"), "{e}");

    let empty = scratch("empty");
    let e = tu::read_tu(&empty).expect_err("no dataset");
    assert!(e.what.contains("graph_indicator"), "{e}");
}

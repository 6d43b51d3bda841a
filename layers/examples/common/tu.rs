//! Graph-classification data: the in-memory form the `graph_classification` example
//! trains on, and a reader for the TU Dortmund text format
//! (<https://chrsmrrs.github.io/datasets/docs/format/>), the format of PyG's
//! `TUDataset` raw files.
//!
//! A dataset `NAME` is a directory holding (the names are what PyG downloads):
//! - `NAME_A.txt`: one edge per line, `row, col`, 1-based node ids over the whole
//!   dataset (undirected graphs list both directions);
//! - `NAME_graph_indicator.txt`: line `i` is the 1-based graph id of node `i`;
//! - `NAME_graph_labels.txt`: line `g` is the label of graph `g` (any integers; they
//!   are mapped to classes `0..C` in increasing order);
//! - `NAME_node_attributes.txt` (optional): line `i` holds node `i`'s comma-separated
//!   real attributes;
//! - `NAME_node_labels.txt` (optional): line `i` holds node `i`'s integer label.
//!
//! Node features are the attributes when the file exists (PyG's example for
//! `PROTEINS_full` keeps exactly these: it loads with `use_node_attr=True` and then
//! drops the three trailing one-hot node-label columns), else the one-hot node labels,
//! else a constant 1 per node.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// One graph: node features, directed edges (both directions for undirected graphs),
/// and its class.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// Node features, row-major `[nodes, num_features]`.
    pub x: Vec<f32>,
    /// Number of nodes.
    pub nodes: usize,
    /// Edges `(source, target)` with node ids local to the graph.
    pub edges: Vec<(usize, usize)>,
    /// The class, in `0..num_classes`.
    pub label: usize,
}

/// A set of graphs with a common feature size.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// A name for messages.
    pub name: String,
    /// The graphs, in file order.
    pub graphs: Vec<Graph>,
    /// Features per node.
    pub num_features: usize,
    /// Number of classes.
    pub num_classes: usize,
}

/// Why a TU dataset could not be read: the file, the line (1-based, 0 for the file as a
/// whole) and what is wrong.
#[derive(Debug)]
pub struct TuError {
    /// The file concerned.
    pub file: PathBuf,
    /// 1-based line number, 0 when the error is about the whole file.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for TuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
        } else {
            write!(f, "{}: {}", self.file.display(), self.what)
        }
    }
}

impl std::error::Error for TuError {}

fn err(file: &Path, line: usize, what: impl Into<String>) -> TuError {
    TuError {
        file: file.to_path_buf(),
        line,
        what: what.into(),
    }
}

/// The non-empty lines of a file, with their 1-based numbers.
fn lines(path: &Path) -> Result<Vec<(usize, String)>, TuError> {
    let text = fs::read_to_string(path).map_err(|e| err(path, 0, e.to_string()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// Comma- (or whitespace-) separated fields of a line.
fn fields(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn parse_ints(path: &Path, n: usize, line: &str, expect: usize) -> Result<Vec<i64>, TuError> {
    let v: Vec<i64> = fields(line)
        .map(|s| {
            s.parse::<i64>()
                .map_err(|e| err(path, n, format!("{s:?} is not an integer ({e})")))
        })
        .collect::<Result<_, _>>()?;
    if v.len() != expect {
        return Err(err(
            path,
            n,
            format!("expected {expect} integer(s), found {}", v.len()),
        ));
    }
    Ok(v)
}

/// Finds the dataset's name (`NAME` of `NAME_graph_indicator.txt`) in `dir` or in its
/// `raw/` subdirectory (where PyG keeps the files).
fn locate(dir: &Path) -> Result<(PathBuf, String), TuError> {
    for d in [dir.to_path_buf(), dir.join("raw")] {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix("_graph_indicator.txt").map(String::from))
            .collect();
        names.sort();
        match names.len() {
            0 => continue,
            1 => return Ok((d, names.remove(0))),
            _ => {
                return Err(err(
                    &d,
                    0,
                    format!(
                        "holds several datasets ({}); pass one directory per dataset",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    Err(err(
        dir,
        0,
        "no NAME_graph_indicator.txt here or in raw/ (is this a TU dataset directory?)",
    ))
}

/// Reads a TU-format dataset from `dir` (or `dir/raw`).
///
/// # Errors
/// A [`TuError`] naming the file and line for a missing file, a malformed line, a node
/// or graph id out of range, an edge between two graphs, a graph without nodes, or
/// attribute rows of different lengths.
pub fn read_tu(dir: &Path) -> Result<Dataset, TuError> {
    let (dir, name) = locate(dir)?;
    let file = |suffix: &str| dir.join(format!("{name}_{suffix}.txt"));

    // Nodes → graphs.
    let ind_path = file("graph_indicator");
    let mut graph_of = Vec::new();
    for (n, l) in lines(&ind_path)? {
        let g = parse_ints(&ind_path, n, &l, 1)?[0];
        if g < 1 {
            return Err(err(&ind_path, n, format!("graph id {g} (ids start at 1)")));
        }
        graph_of.push((g - 1) as usize);
    }
    let num_nodes = graph_of.len();

    // Graph labels → classes.
    let lab_path = file("graph_labels");
    let raw_labels: Vec<(usize, i64)> = lines(&lab_path)?
        .into_iter()
        .map(|(n, l)| parse_ints(&lab_path, n, &l, 1).map(|v| (n, v[0])))
        .collect::<Result<_, _>>()?;
    let num_graphs = raw_labels.len();
    if num_graphs == 0 {
        return Err(err(&lab_path, 0, "no graphs"));
    }
    if let Some((i, &g)) = graph_of.iter().enumerate().find(|(_, g)| **g >= num_graphs) {
        return Err(err(
            &ind_path,
            i + 1,
            format!(
                "graph id {} but the labels file lists {num_graphs} graphs",
                g + 1
            ),
        ));
    }
    let classes: BTreeMap<i64, usize> = {
        let mut m = BTreeMap::new();
        for &(_, l) in &raw_labels {
            m.insert(l, 0);
        }
        for (i, v) in m.values_mut().enumerate() {
            *v = i;
        }
        m
    };

    // Local node ids.
    let mut local = vec![0usize; num_nodes];
    let mut sizes = vec![0usize; num_graphs];
    for (i, &g) in graph_of.iter().enumerate() {
        local[i] = sizes[g];
        sizes[g] += 1;
    }
    if let Some(g) = sizes.iter().position(|&s| s == 0) {
        return Err(err(&ind_path, 0, format!("graph {} has no nodes", g + 1)));
    }

    // Features.
    let attr_path = file("node_attributes");
    let nlab_path = file("node_labels");
    let (features, num_features): (Vec<f32>, usize) = if attr_path.exists() {
        let rows = lines(&attr_path)?;
        if rows.len() != num_nodes {
            return Err(err(
                &attr_path,
                0,
                format!("{} rows for {num_nodes} nodes", rows.len()),
            ));
        }
        let mut width = None;
        let mut data = Vec::new();
        for (n, l) in rows {
            let before = data.len();
            for s in fields(&l) {
                let v: f32 = s
                    .parse()
                    .map_err(|e| err(&attr_path, n, format!("{s:?} is not a number ({e})")))?;
                data.push(v);
            }
            let w = data.len() - before;
            match width {
                None => width = Some(w),
                Some(expected) if expected != w => {
                    return Err(err(
                        &attr_path,
                        n,
                        format!("{w} attributes where earlier rows have {expected}"),
                    ));
                }
                _ => {}
            }
        }
        (data, width.unwrap_or(0))
    } else if nlab_path.exists() {
        let rows = lines(&nlab_path)?;
        if rows.len() != num_nodes {
            return Err(err(
                &nlab_path,
                0,
                format!("{} rows for {num_nodes} nodes", rows.len()),
            ));
        }
        let labels: Vec<i64> = rows
            .iter()
            .map(|(n, l)| parse_ints(&nlab_path, *n, l, 1).map(|v| v[0]))
            .collect::<Result<_, _>>()?;
        let mut kinds: Vec<i64> = labels.clone();
        kinds.sort_unstable();
        kinds.dedup();
        let w = kinds.len();
        let mut data = vec![0.0f32; num_nodes * w];
        for (i, l) in labels.iter().enumerate() {
            let k = kinds.binary_search(l).unwrap_or(0);
            data[i * w + k] = 1.0;
        }
        (data, w)
    } else {
        (vec![1.0; num_nodes], 1)
    };

    let mut graphs: Vec<Graph> = raw_labels
        .iter()
        .zip(&sizes)
        .map(|(&(_, l), &n)| Graph {
            x: Vec::with_capacity(n * num_features),
            nodes: n,
            edges: Vec::new(),
            label: classes[&l],
        })
        .collect();
    for (i, &g) in graph_of.iter().enumerate() {
        graphs[g]
            .x
            .extend_from_slice(&features[i * num_features..(i + 1) * num_features]);
    }

    // Edges.
    let a_path = file("A");
    for (n, l) in lines(&a_path)? {
        let e = parse_ints(&a_path, n, &l, 2)?;
        let mut ends = [0usize; 2];
        for (k, &v) in e.iter().enumerate() {
            if v < 1 || v as usize > num_nodes {
                return Err(err(
                    &a_path,
                    n,
                    format!("node id {v} outside 1..={num_nodes}"),
                ));
            }
            ends[k] = (v - 1) as usize;
        }
        let (gs, gt) = (graph_of[ends[0]], graph_of[ends[1]]);
        if gs != gt {
            return Err(err(
                &a_path,
                n,
                format!(
                    "edge between graph {} and graph {} (edges must stay inside a graph)",
                    gs + 1,
                    gt + 1
                ),
            ));
        }
        graphs[gs].edges.push((local[ends[0]], local[ends[1]]));
    }

    Ok(Dataset {
        name,
        graphs,
        num_features,
        num_classes: classes.len(),
    })
}

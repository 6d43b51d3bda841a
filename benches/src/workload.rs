//! The reference workloads of `benches/workloads.json` (a copy of the shared
//! definition that the PyG side reads too) and the rules that turn them into sizes.
//!
//! - EquilibriumAggregation: element `i` of `num_elements` belongs to set
//!   `(i · num_sets) / num_elements` (sorted, near-equal sets).
//! - MemPooling graph sizes: `cycle:[a,b,…]` exactly these sizes in order;
//!   `range:B:lo..hi` — `B` graphs, graph `g` has `lo + (g · 7919) mod (hi − lo + 1)`
//!   nodes; `skew:B:small:big:count` — `B` graphs of `small` nodes except graphs
//!   `0, B/count, 2B/count, …` (`count` of them) which have `big` nodes.

use serde_json::Value as Json;

/// The workload file as shipped in this crate (`benches/workloads.json`).
pub const WORKLOADS_JSON: &str = include_str!("../workloads.json");

/// What one timed call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Forward only (the layer's inference path).
    Infer,
    /// Forward + backward of `loss = Σ outputs · R` (+ `kl_loss(S)` for MemPooling) to
    /// every parameter.
    Train,
}

impl Mode {
    /// Both modes, in report order.
    pub const ALL: [Mode; 2] = [Mode::Infer, Mode::Train];

    /// `"infer"` or `"train"`, as in the JSON output and the PyG script.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Infer => "infer",
            Mode::Train => "train",
        }
    }
}

/// One `EquilibriumAggregation` workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EqSpec {
    /// Workload name (`eq_small`, …).
    pub name: String,
    /// `in_channels`.
    pub in_channels: usize,
    /// `out_channels`.
    pub out_channels: usize,
    /// Hidden sizes of the potential (`num_layers`).
    pub num_layers: Vec<usize>,
    /// Inner optimisation steps.
    pub grad_iter: usize,
    /// `N`, the number of elements.
    pub num_elements: usize,
    /// `S`, the number of sets (`dim_size`).
    pub num_sets: usize,
}

impl EqSpec {
    /// The set of each element by the workload rule: `(i · S) / N`, sorted.
    pub fn index(&self) -> Vec<i64> {
        let (n, s) = (self.num_elements as u128, self.num_sets as u128);
        (0..n).map(|i| (i * s / n) as i64).collect()
    }

    /// The same layer on about `fraction` of the elements and sets (at least one of
    /// each), for probing memory and time before the full run.
    pub fn scaled(&self, fraction: f64) -> EqSpec {
        let f = fraction.clamp(0.0, 1.0);
        let n = ((self.num_elements as f64 * f).ceil() as usize).max(1);
        let s = ((self.num_sets as f64 * f).round() as usize).clamp(1, n);
        EqSpec {
            num_elements: n,
            num_sets: s,
            ..self.clone()
        }
    }
}

/// One `MemPooling` workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpSpec {
    /// Workload name (`mp_proteins`, …).
    pub name: String,
    /// `in_channels` (`F`).
    pub in_channels: usize,
    /// `out_channels` (`F'`).
    pub out_channels: usize,
    /// `heads` (`H`).
    pub heads: usize,
    /// `num_clusters` (`K`).
    pub num_clusters: usize,
    /// The rule as written in the file.
    pub rule: String,
    /// Nodes of each graph, by the rule.
    pub graph_sizes: Vec<usize>,
}

impl MpSpec {
    /// Total number of nodes `N`.
    pub fn num_nodes(&self) -> usize {
        self.graph_sizes.iter().sum()
    }

    /// The largest graph, `N_max` (PyG pads to it).
    pub fn max_nodes(&self) -> usize {
        self.graph_sizes.iter().copied().max().unwrap_or(0)
    }

    /// PyG's `batch` vector: graph `g` repeated `graph_sizes[g]` times.
    pub fn batch(&self) -> Vec<i64> {
        self.graph_sizes
            .iter()
            .enumerate()
            .flat_map(|(g, &k)| std::iter::repeat_n(g as i64, k))
            .collect()
    }

    /// The first `ceil(B · fraction)` graphs (at least one), for probing memory and time.
    /// For `skew` rules the prefix keeps about the same share of big graphs.
    pub fn scaled(&self, fraction: f64) -> MpSpec {
        let f = fraction.clamp(0.0, 1.0);
        let b = self.graph_sizes.len();
        let keep = ((b as f64 * f).ceil() as usize).clamp(1.min(b), b);
        MpSpec {
            graph_sizes: self.graph_sizes[..keep].to_vec(),
            ..self.clone()
        }
    }
}

/// Every workload of a workload file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workloads {
    /// `EquilibriumAggregation` workloads, in file order.
    pub equilibrium: Vec<EqSpec>,
    /// `MemPooling` workloads, in file order.
    pub mempool: Vec<MpSpec>,
}

/// The JSON type of `v`, for error messages.
fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A whole number ≥ 0 that fits `usize`.
fn as_usize(v: &Json) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn field<'a>(w: &'a Json, key: &str, ctx: &str) -> Result<&'a Json, String> {
    w.get(key)
        .ok_or_else(|| format!("{ctx}: missing key {key:?}"))
}

fn count(w: &Json, key: &str, ctx: &str) -> Result<usize, String> {
    let v = field(w, key, ctx)?;
    as_usize(v).ok_or_else(|| format!("{ctx}: {key:?} must be a whole number ≥ 0, got {v}"))
}

fn positive(w: &Json, key: &str, ctx: &str) -> Result<usize, String> {
    match count(w, key, ctx)? {
        0 => Err(format!("{ctx}: {key:?} must be ≥ 1")),
        v => Ok(v),
    }
}

fn text(w: &Json, key: &str, ctx: &str) -> Result<String, String> {
    let v = field(w, key, ctx)?;
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{ctx}: {key:?} must be a string, got {}", kind(v)))
}

fn list<'a>(w: &'a Json, key: &str, ctx: &str) -> Result<&'a [Json], String> {
    let v = field(w, key, ctx)?;
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{ctx}: {key:?} must be an array, got {}", kind(v)))
}

fn num(s: &str, rule: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("graph_sizes {rule:?}: {s:?} is not a whole number"))
}

/// Graph sizes from a rule (`cycle:[…]`, `range:B:lo..hi`, `skew:B:small:big:count`).
///
/// # Errors
/// A message naming the rule, for an unknown rule or malformed numbers, `lo > hi`, or
/// `count` of 0 or larger than `B`.
pub fn graph_sizes(rule: &str) -> Result<Vec<usize>, String> {
    if let Some(rest) = rule.strip_prefix("cycle:") {
        let inner = rest
            .trim()
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(|| format!("graph_sizes {rule:?}: expected cycle:[a,b,...]"))?;
        return inner.split(',').map(|s| num(s, rule)).collect();
    }
    if let Some(rest) = rule.strip_prefix("range:") {
        let (b, range) = rest
            .split_once(':')
            .ok_or_else(|| format!("graph_sizes {rule:?}: expected range:B:lo..hi"))?;
        let (lo, hi) = range
            .split_once("..")
            .ok_or_else(|| format!("graph_sizes {rule:?}: expected range:B:lo..hi"))?;
        let (b, lo, hi) = (num(b, rule)?, num(lo, rule)?, num(hi, rule)?);
        if lo > hi {
            return Err(format!("graph_sizes {rule:?}: lo > hi"));
        }
        let span = hi - lo + 1;
        return Ok((0..b).map(|g| lo + (g * 7919) % span).collect());
    }
    if let Some(rest) = rule.strip_prefix("skew:") {
        let parts: Vec<&str> = rest.split(':').collect();
        let [b, small, big, cnt] = parts[..] else {
            return Err(format!(
                "graph_sizes {rule:?}: expected skew:B:small:big:count"
            ));
        };
        let (b, small, big, cnt) = (
            num(b, rule)?,
            num(small, rule)?,
            num(big, rule)?,
            num(cnt, rule)?,
        );
        if cnt == 0 || cnt > b {
            return Err(format!("graph_sizes {rule:?}: count must be in 1..=B"));
        }
        let mut sizes = vec![small; b];
        for k in 0..cnt {
            sizes[k * b / cnt] = big;
        }
        return Ok(sizes);
    }
    Err(format!(
        "graph_sizes {rule:?}: unknown rule (cycle:, range:, skew:)"
    ))
}

impl Workloads {
    /// The workloads shipped with this crate ([`WORKLOADS_JSON`]).
    ///
    /// # Errors
    /// See [`Workloads::parse`] (the shipped file is tested to parse).
    pub fn shipped() -> Result<Workloads, String> {
        Workloads::parse(WORKLOADS_JSON)
    }

    /// Parses a workload file.
    ///
    /// # Errors
    /// A message for invalid JSON, a missing or mistyped key, a bad graph-size rule,
    /// zero sizes, or a duplicate workload name.
    pub fn parse(source: &str) -> Result<Workloads, String> {
        let root = serde_json::from_str::<Json>(source)
            .map_err(|e| format!("workloads: invalid JSON: {e}"))?;
        let mut equilibrium = Vec::new();
        for w in list(&root, "equilibrium", "workloads")? {
            let name = text(w, "name", "equilibrium workload")?;
            let ctx = name.as_str();
            let num_layers = list(w, "num_layers", ctx)?
                .iter()
                .map(|h| match as_usize(h) {
                    Some(v) if v > 0 => Ok(v),
                    _ => Err(format!(
                        "{ctx}: num_layers entries must be whole numbers ≥ 1"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            equilibrium.push(EqSpec {
                in_channels: positive(w, "in_channels", ctx)?,
                out_channels: positive(w, "out_channels", ctx)?,
                num_layers,
                grad_iter: count(w, "grad_iter", ctx)?,
                num_elements: positive(w, "num_elements", ctx)?,
                num_sets: positive(w, "num_sets", ctx)?,
                name,
            });
        }
        let mut mempool = Vec::new();
        for w in list(&root, "mempool", "workloads")? {
            let name = text(w, "name", "mempool workload")?;
            let ctx = name.as_str();
            let rule = text(w, "graph_sizes", ctx)?;
            let graph_sizes = graph_sizes(&rule)?;
            if graph_sizes.is_empty() {
                return Err(format!("{ctx}: no graphs"));
            }
            mempool.push(MpSpec {
                in_channels: positive(w, "in_channels", ctx)?,
                out_channels: positive(w, "out_channels", ctx)?,
                heads: positive(w, "heads", ctx)?,
                num_clusters: positive(w, "num_clusters", ctx)?,
                rule,
                graph_sizes,
                name,
            });
        }
        let all = Workloads {
            equilibrium,
            mempool,
        };
        let names = all.names();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("workloads: duplicate name {n:?}"));
            }
        }
        Ok(all)
    }

    /// Every workload name, equilibrium first, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.equilibrium
            .iter()
            .map(|w| w.name.as_str())
            .chain(self.mempool.iter().map(|w| w.name.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_parses_with_the_expected_sizes() {
        let w = Workloads::shipped().unwrap();
        assert_eq!(
            w.names(),
            [
                "eq_median",
                "eq_small",
                "eq_medium",
                "eq_large",
                "mp_proteins",
                "mp_medium",
                "mp_large",
                "mp_skewed"
            ]
        );
        let large = &w.equilibrium[3];
        assert_eq!((large.num_elements, large.num_sets), (200_000, 10_000));
        assert_eq!(large.num_layers, [128, 128]);
        let idx = large.index();
        assert_eq!(idx[0], 0);
        assert_eq!(idx[199_999], 9_999);
        assert!(idx.windows(2).all(|p| p[0] <= p[1]));
        // Every set holds exactly N / S = 20 elements here.
        assert_eq!(idx.iter().filter(|&&s| s == 1234).count(), 20);
        let proteins = &w.mempool[0];
        assert_eq!(proteins.graph_sizes.len(), 20);
        assert_eq!(proteins.graph_sizes[..3], [42, 27, 10]);
        assert_eq!(proteins.max_nodes(), 120);
        let skewed = &w.mempool[3];
        assert_eq!(skewed.graph_sizes.len(), 256);
        assert_eq!(skewed.num_nodes(), 252 * 10 + 4 * 2000);
        for g in [0, 64, 128, 192] {
            assert_eq!(skewed.graph_sizes[g], 2000);
        }
        let medium = &w.mempool[1];
        assert_eq!(medium.graph_sizes.len(), 128);
        assert_eq!(medium.graph_sizes[0], 20);
        assert_eq!(medium.graph_sizes[1], 20 + 7919 % 61);
        assert!(medium.graph_sizes.iter().all(|&k| (20..=80).contains(&k)));
        assert_eq!(medium.batch().len(), medium.num_nodes());
    }

    #[test]
    fn the_shipped_copy_is_the_shared_definition() {
        // The shared file is the source; when it is present (in the project's
        // environment) the copy must not drift from it.
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/bench/workloads.json");
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert_eq!(text, WORKLOADS_JSON);
        }
    }

    #[test]
    fn bad_rules_and_files_are_errors() {
        for bad in [
            "cycle:1,2",
            "cycle:[1,x]",
            "range:4:9..3",
            "range:4",
            "skew:8:1:2:0",
            "skew:8:1:2:9",
            "skew:8:1:2",
            "grid:3",
        ] {
            assert!(graph_sizes(bad).is_err(), "{bad}");
        }
        assert_eq!(graph_sizes("range:3:5..5").unwrap(), [5, 5, 5]);
        assert_eq!(graph_sizes("skew:4:1:9:2").unwrap(), [9, 1, 9, 1]);
        assert!(Workloads::parse("{}").is_err());
        assert!(Workloads::parse(r#"{"equilibrium": [], "mempool": []}"#).is_ok());
        let dup = r#"{"equilibrium": [], "mempool": [
            {"name": "a", "in_channels": 1, "out_channels": 1, "heads": 1, "num_clusters": 1, "graph_sizes": "cycle:[1]"},
            {"name": "a", "in_channels": 1, "out_channels": 1, "heads": 1, "num_clusters": 1, "graph_sizes": "cycle:[1]"}]}"#;
        assert!(Workloads::parse(dup).unwrap_err().contains("duplicate"));
        let zero = r#"{"equilibrium": [{"name": "e", "in_channels": 0, "out_channels": 1,
            "num_layers": [], "grad_iter": 1, "num_elements": 1, "num_sets": 1}], "mempool": []}"#;
        assert!(Workloads::parse(zero).is_err());
    }

    #[test]
    fn scaling_keeps_the_shape_of_the_workload() {
        let w = Workloads::shipped().unwrap();
        let eq = w.equilibrium[3].scaled(0.1);
        assert_eq!((eq.num_elements, eq.num_sets), (20_000, 1_000));
        assert_eq!(w.equilibrium[0].scaled(0.001).num_sets, 1);
        let mp = w.mempool[3].scaled(0.5);
        assert_eq!(mp.graph_sizes.len(), 128);
        assert_eq!(mp.graph_sizes.iter().filter(|&&k| k == 2000).count(), 2);
        assert_eq!(w.mempool[0].scaled(1.0), w.mempool[0]);
    }
}

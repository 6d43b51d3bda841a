#!/usr/bin/env python3
"""PyG time / readout time, workload by workload.

Runs PyG's EquilibriumAggregation and MemPooling on the workloads of
benches/workloads.json (the file the Rust side reads too), in both modes and at the
same thread counts (torch.set_num_threads), then reads the JSON written by
`cargo run --release -p readout-benches --bin report -- --json FILE` and prints the
ratio table. A ratio above 1 means readout is faster.

    python benches/pyg/compare.py --readout readout.json [--threads 1,2]
        [--only NAME,...] [--save-pyg pyg.json]

Both sides must run on the same machine in one session: timings on shared hardware
drift by tens of percent from one hour to the next.

Without torch, previously measured PyG timings can be compared instead:
    --pyg-json FILE   a file written by --save-pyg
    --pyg-md FILE     the table of ../shared/bench/pyg_reference.md (measured
                      elsewhere: the table says so in its title)
and `--self-test` checks the reading and the ratio table on made-up numbers.
"""

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WORKLOADS = os.path.join(HERE, "..", "workloads.json")
MODES = ("infer", "train")


# --- workloads: the same rules as benches/src/workload.rs -------------------------

def graph_sizes(rule):
    """Graph sizes of a MemPooling workload rule (cycle:, range:, skew:)."""
    if rule.startswith("cycle:"):
        return [int(v) for v in json.loads(rule[len("cycle:"):])]
    m = re.fullmatch(r"range:(\d+):(\d+)\.\.(\d+)", rule)
    if m:
        b, lo, hi = map(int, m.groups())
        if lo > hi:
            raise ValueError(f"graph_sizes {rule!r}: lo > hi")
        return [lo + (g * 7919) % (hi - lo + 1) for g in range(b)]
    m = re.fullmatch(r"skew:(\d+):(\d+):(\d+):(\d+)", rule)
    if m:
        b, small, big, count = map(int, m.groups())
        if not 1 <= count <= b:
            raise ValueError(f"graph_sizes {rule!r}: count must be in 1..=B")
        sizes = [small] * b
        for k in range(count):
            sizes[k * b // count] = big
        return sizes
    raise ValueError(f"graph_sizes {rule!r}: unknown rule")


def eq_index(n, s):
    """Set of each element: (i * num_sets) // num_elements."""
    return [(i * s) // n for i in range(n)]


def load_workloads(path):
    with open(path) as f:
        w = json.load(f)
    return w["equilibrium"], w["mempool"]


# --- PyG side -----------------------------------------------------------------------

def time_call(fn, budget_s=3.0, min_runs=3, max_runs=50):
    """Warm-up, then timed calls until the budget is spent: (median s, min s, runs)."""
    fn()
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < min_runs or (time.perf_counter() < end and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), len(times)


def measure_pyg(workloads_path, threads, only, budget_s):
    """Times PyG on every workload x mode x thread count; returns result dicts."""
    import torch
    from torch_geometric.nn import MemPooling
    from torch_geometric.nn.aggr import EquilibriumAggregation

    eq, mp = load_workloads(workloads_path)
    results = []
    for t in threads:
        torch.set_num_threads(t)
        torch.manual_seed(0)
        for w in eq:
            if only and w["name"] not in only:
                continue
            layer = EquilibriumAggregation(w["in_channels"], w["out_channels"],
                                           w["num_layers"], grad_iter=w["grad_iter"])
            n, s = w["num_elements"], w["num_sets"]
            x = torch.randn(n, w["in_channels"])
            index = torch.tensor(eq_index(n, s), dtype=torch.long)
            r = torch.randn(s, w["out_channels"])

            def infer():
                with torch.no_grad():
                    return layer(x, index, dim_size=s)

            def train():
                layer.zero_grad()
                (layer(x, index, dim_size=s) * r).sum().backward()

            for mode, fn in (("infer", infer), ("train", train)):
                med, lo, runs = time_call(fn, budget_s)
                results.append(dict(workload=w["name"], mode=mode, threads=t,
                                    median_ms=med * 1e3, min_ms=lo * 1e3, runs=runs))
                print(f"pyg {w['name']:12s} {mode:5s} {t} thr {med * 1e3:10.3f} ms ({runs} runs)",
                      flush=True)
        for w in mp:
            if only and w["name"] not in only:
                continue
            layer = MemPooling(w["in_channels"], w["out_channels"], heads=w["heads"],
                               num_clusters=w["num_clusters"])
            sizes = graph_sizes(w["graph_sizes"])
            batch = torch.cat([torch.full((k,), g, dtype=torch.long)
                               for g, k in enumerate(sizes)])
            x = torch.randn(batch.numel(), w["in_channels"])
            with torch.no_grad():
                out, s_mat = layer(x, batch)
            r1, r2 = torch.randn(out.shape), torch.randn(s_mat.shape)

            def infer():
                with torch.no_grad():
                    return layer(x, batch)

            def train():
                layer.zero_grad()
                o, s_ = layer(x, batch)
                loss = (o * r1).sum() + (s_ * r2).sum() + MemPooling.kl_loss(s_)
                loss.backward()

            for mode, fn in (("infer", infer), ("train", train)):
                med, lo, runs = time_call(fn, budget_s)
                results.append(dict(workload=w["name"], mode=mode, threads=t,
                                    median_ms=med * 1e3, min_ms=lo * 1e3, runs=runs))
                print(f"pyg {w['name']:12s} {mode:5s} {t} thr {med * 1e3:10.3f} ms ({runs} runs)",
                      flush=True)
    meta = dict(source="measured by compare.py",
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                host=platform.node(), cpu=platform.processor() or platform.machine(),
                torch=torch.__version__, load_average=_loadavg())
    return results, meta


def _loadavg():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


# --- reading timings ----------------------------------------------------------------

def key(r):
    return (r["workload"], r["mode"], int(r["threads"]))


def read_readout(path):
    """Layer entries of the report tool's JSON: {(workload, mode, threads): median_ms}."""
    with open(path) as f:
        doc = json.load(f)
    out = {}
    for r in doc["results"]:
        if "workload" in r:
            out[key(r)] = float(r["median_ms"])
    return out


def read_pyg_json(path):
    """A file written by --save-pyg: (timings, meta)."""
    with open(path) as f:
        doc = json.load(f)
    return {key(r): float(r["median_ms"]) for r in doc["results"]}, doc.get("meta", {})


def _ms(cell):
    cell = cell.strip()
    return float(cell) if cell else None


def read_pyg_md(path):
    """The table of pyg_reference.md: | workload | mode | 1 thread ms | 2 threads ms | ..."""
    timings = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 4 or cells[1] not in MODES:
                continue
            for t, cell in ((1, cells[2]), (2, cells[3])):
                v = _ms(cell)
                if v is not None:
                    timings[(cells[0], cells[1], t)] = v
    meta = dict(source=f"{os.path.basename(path)}: PyG measured elsewhere (reference file), "
                       "not side by side")
    return timings, meta


# --- the table ----------------------------------------------------------------------

def ratio_rows(pyg, readout):
    """(workload, mode, threads, pyg_ms, readout_ms, ratio) for every key of either."""
    rows = []
    order = sorted(set(pyg) | set(readout),
                   key=lambda k: (list(dict.fromkeys(w for w, _, _ in list(pyg) + list(readout))).index(k[0]),
                                  MODES.index(k[1]) if k[1] in MODES else 9, k[2]))
    for k in order:
        p, r = pyg.get(k), readout.get(k)
        ratio = p / r if p is not None and r is not None and r > 0 else None
        rows.append((*k, p, r, ratio))
    return rows


def fmt(v, digits=3):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def render(rows, pyg_meta, readout_path):
    lines = [f"PyG timings: {pyg_meta.get('source', 'unknown source')}"
             + "".join(f"; {k} {v}" for k, v in pyg_meta.items() if k != "source"),
             f"readout timings: {readout_path}",
             "ratio = PyG median / readout median (> 1: readout faster); "
             "— = not measured on that side (skipped or filtered)",
             "",
             "| workload | mode | threads | PyG ms | readout ms | PyG / readout |",
             "| --- | --- | --- | --- | --- | --- |"]
    for w, m, t, p, r, ratio in rows:
        lines.append(f"| {w} | {m} | {t} | {fmt(p)} | {fmt(r)} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}×'} |")
    return "\n".join(lines)


# --- self-test ----------------------------------------------------------------------

def self_test():
    import tempfile
    assert graph_sizes("cycle:[3,1]") == [3, 1]
    assert graph_sizes("range:3:20..80")[:2] == [20, 20 + 7919 % 61]
    assert graph_sizes("skew:4:1:9:2") == [9, 1, 9, 1]
    assert eq_index(5, 2) == [0, 0, 0, 1, 1]
    eq, mp = load_workloads(DEFAULT_WORKLOADS)
    sk = [w for w in mp if w["name"] == "mp_skewed"][0]
    assert sum(graph_sizes(sk["graph_sizes"])) == 252 * 10 + 4 * 2000
    with tempfile.TemporaryDirectory() as d:
        readout = {"results": [
            {"workload": "eq_small", "mode": "infer", "threads": 1, "median_ms": 2.0,
             "min_ms": 1.9, "runs": 5, "peak_bytes": 100, "gflop": 0.03},
            {"workload": "eq_small", "mode": "train", "threads": 1, "median_ms": 40.0,
             "min_ms": 39.0, "runs": 3, "peak_bytes": 100, "gflop": 0.1},
            {"kernel": "gemm", "shape": "512x512x512", "threads": 1, "median_ms": 3.0,
             "gflops": 89.0},
        ]}
        pyg = {"meta": {"source": "fake numbers for the self-test"}, "results": [
            {"workload": "eq_small", "mode": "infer", "threads": 1, "median_ms": 6.0},
            {"workload": "eq_small", "mode": "train", "threads": 1, "median_ms": 10.0},
            {"workload": "mp_large", "mode": "infer", "threads": 2, "median_ms": 400.0},
        ]}
        rp, pp = os.path.join(d, "r.json"), os.path.join(d, "p.json")
        with open(rp, "w") as f:
            json.dump(readout, f)
        with open(pp, "w") as f:
            json.dump(pyg, f)
        r = read_readout(rp)
        assert r == {("eq_small", "infer", 1): 2.0, ("eq_small", "train", 1): 40.0}, r
        p, meta = read_pyg_json(pp)
        rows = ratio_rows(p, r)
        assert rows[0] == ("eq_small", "infer", 1, 6.0, 2.0, 3.0), rows
        assert rows[1][5] == 0.25
        assert rows[2] == ("mp_large", "infer", 2, 400.0, None, None)
        text = render(rows, meta, rp)
        assert "| eq_small | infer | 1 | 6 | 2 | 3.00× |" in text, text
        assert "| mp_large | infer | 2 | 400 | — | — |" in text, text
        assert "fake numbers" in text
        md = os.path.join(d, "ref.md")
        with open(md, "w") as f:
            f.write("| workload | mode | PyG 1 thread (ms) | PyG 2 threads (ms) | peak |\n"
                    "| --- | --- | --- | --- | --- |\n"
                    "| eq_small | infer | 5.66 | 6.63 |  |\n"
                    "| eq_large | train | 4.31e+04 | 3.03e+04 | 6883 |\n")
        t, meta = read_pyg_md(md)
        assert t == {("eq_small", "infer", 1): 5.66, ("eq_small", "infer", 2): 6.63,
                     ("eq_large", "train", 1): 43100.0, ("eq_large", "train", 2): 30300.0}, t
        assert "measured elsewhere" in meta["source"]
    ref = os.path.join(HERE, "..", "..", "..", "shared", "bench", "pyg_reference.md")
    if os.path.exists(ref):
        t, _ = read_pyg_md(ref)
        assert len(t) == 32, len(t)
    print("compare.py self-test: ok")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readout", help="JSON written by the report tool's --json")
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per entry")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--pyg-json", help="read PyG timings saved by --save-pyg instead of running torch")
    src.add_argument("--pyg-md", help="read the table of pyg_reference.md (measured elsewhere)")
    ap.add_argument("--save-pyg", help="write the PyG timings measured now to this file")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args(argv)
    if a.self_test:
        self_test()
        return 0
    threads = [int(t) for t in a.threads.split(",")]
    only = set(a.only.split(",")) if a.only else None
    if a.pyg_json:
        pyg, meta = read_pyg_json(a.pyg_json)
    elif a.pyg_md:
        pyg, meta = read_pyg_md(a.pyg_md)
    else:
        results, meta = measure_pyg(a.workloads, threads, only, a.budget)
        if a.save_pyg:
            with open(a.save_pyg, "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
        pyg = {key(r): r["median_ms"] for r in results}
    pyg = {k: v for k, v in pyg.items()
           if k[2] in threads and (only is None or k[0] in only)}
    if not a.readout:
        print("\n".join(f"{w} {m} {t} thr: {v:.3f} ms" for (w, m, t), v in pyg.items()))
        return 0
    readout = {k: v for k, v in read_readout(a.readout).items()
               if k[2] in threads and (only is None or k[0] in only)}
    print(render(ratio_rows(pyg, readout), meta, a.readout))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export parity cases from your own PyG model, for readout's parity tool.

Given a model that contains ``EquilibriumAggregation`` and/or ``MemPooling`` layers
(anywhere inside it) and example inputs, this runs one forward call of the model,
records every call of those layers with forward hooks (the layer's inputs, keyword
arguments and outputs), and writes one case file per layer call in the format of
``layers/tests/data/README.md``. Then, in the repository::

    cargo run --release -p readout-layers --example parity -- cases/

says whether readout computes what PyG computes for your layers, with your weights,
on your inputs.

By default the cases are *forward-only*: the layer's parameters (``param.*``), its
inputs (``input.*``), its outputs recomputed in float64 from the same float32
parameters and inputs (``expect.*``: the exact answer the parity tool compares with)
and as your model computed them in float32 (``pyg32.*``). With ``gradients=True``
(``--gradients``) each case also holds seeded loss weights (``lossw.*``), the loss and
the float64 gradient of the loss with respect to every parameter and ``input.x``
(``expect.loss``, ``expect.grad.*``), for checking training as well.

As a library::

    from export_case import export_cases
    paths = export_cases(model, (x, batch), "cases/")            # forward-only
    paths = export_cases(model, (x, batch), "cases/", gradients=True, kl_weight=0.5)

From the command line, with a Python file defining a function that returns
``(model, inputs)`` (``inputs`` a tuple of positional arguments or a dict of keyword
arguments)::

    python layers/python/export_case.py my_model.py:make cases/ [--layers mem1,pool]
        [--gradients] [--kl-weight W] [--seed S]

Needs torch, torch_geometric and safetensors (the versions readout was checked
against: torch 2.15, torch-geometric 2.8.1).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch_geometric.nn import MemPooling
from torch_geometric.nn.aggr import EquilibriumAggregation

LAYERS = (EquilibriumAggregation, MemPooling)

EQ_LOSS = "sum(out * lossw.out)"
MP_LOSS = "sum(out * lossw.out) + sum(S * lossw.S) + kl_weight * kl_loss(S)"


def find_layers(model, names=None):
    """The (name, module) pairs of the layers to record: every EquilibriumAggregation
    and MemPooling in ``model.named_modules()``, or the ones named in ``names``."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, LAYERS)}
    if names is None:
        if not found:
            raise ValueError("the model holds no EquilibriumAggregation or MemPooling layer")
        return list(found.items())
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules:
            raise ValueError(f"no module named {name!r} in the model")
        if not isinstance(modules[name], LAYERS):
            kind = type(modules[name]).__name__
            raise ValueError(f"module {name!r} is a {kind}, not EquilibriumAggregation or MemPooling")
        out.append((name, modules[name]))
    return out


def equilibrium_args(layer):
    """EquilibriumAggregation's constructor arguments, read back from its modules."""
    res_trans = layer.potential.res_trans
    out_channels = layer.output_dim
    return {
        "in_channels": res_trans[0].in_features - out_channels,
        "out_channels": out_channels,
        "num_layers": [lin.out_features for lin in res_trans[:-1]],
        "grad_iter": layer.grad_iter,
        "lamb": float(layer.initial_lamb),
    }


def mem_pooling_args(layer):
    return {
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "heads": layer.heads,
        "num_clusters": layer.num_clusters,
        "tau": float(layer.tau),
    }


class Call:
    """One recorded call of a layer: its keyword arguments (normalised) and outputs."""

    def __init__(self, name, layer, kwargs, outputs):
        self.name, self.layer, self.kwargs, self.outputs = name, layer, kwargs, outputs


def _normalise(layer, args, kwargs):
    """The call's arguments by parameter name, as the layer's ``forward`` binds them."""
    bound = inspect.signature(layer.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def record_calls(model, inputs, layers):
    """Runs ``model`` once on ``inputs`` and returns every call of ``layers``."""
    calls = []
    handles = []
    for name, layer in layers:
        def hook(module, args, kwargs, output, name=name):
            kw = _normalise(module, args, kwargs)
            detached = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in kw.items()}
            outs = output if isinstance(output, tuple) else (output,)
            calls.append(Call(name, module, detached, tuple(o.detach().clone() for o in outs)))
        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    try:
        if isinstance(inputs, dict):
            model(**inputs)
        else:
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def _inputs_of(call):
    """The case's ``input.*`` tensors and ``forward`` metadata for one call."""
    kw = call.kwargs
    x = kw["x"]
    if isinstance(call.layer, EquilibriumAggregation):
        if kw.get("ptr") is not None:
            ptr = kw["ptr"]
            counts = ptr[1:] - ptr[:-1]
            index = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        else:
            index = kw.get("index")
        if x.dim() != 2 or kw.get("dim", -2) not in (-2, 0):
            raise ValueError(f"{call.name}: only 2-D inputs aggregated along dim -2 are supported")
        tensors = {"input.x": x}
        if index is not None:
            tensors["input.index"] = index.to(torch.int64)
        forward = {"dim_size": kw.get("dim_size")}
        return tensors, forward
    tensors = {"input.x": x}
    if kw.get("batch") is not None:
        tensors["input.batch"] = kw["batch"].to(torch.int64)
    if kw.get("mask") is not None:
        tensors["input.mask"] = kw["mask"].to(torch.bool)
    forward = {"max_num_nodes": kw.get("max_num_nodes"), "batch_size": kw.get("batch_size")}
    return tensors, forward


def _run_double(call, inputs, lossw, kl_weight):
    """The layer's results in float64 from its float32 parameters and inputs, and, when
    ``lossw`` is given, the loss and its gradients."""
    layer = copy.deepcopy(call.layer).double()
    if isinstance(layer, EquilibriumAggregation):
        # PyG starts the inner optimisation from float32 zeros whatever the layer's
        # dtype, which would round the first inner gradient to float32.
        def init_output(dim_size, layer=layer):
            return torch.zeros(dim_size, layer.output_dim, dtype=torch.float64, requires_grad=True)
        layer.init_output = init_output
    x = inputs["input.x"].double().requires_grad_(lossw is not None)
    kw = {k: v for k, v in call.kwargs.items() if k != "x"}
    kw = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in kw.items()}
    results = {}
    with torch.enable_grad():
        if isinstance(layer, EquilibriumAggregation):
            out = layer(x, **kw)
            results["out"] = out
            loss = (out * lossw["out"].double()).sum() if lossw is not None else None
        else:
            out, s = layer(x, **kw)
            results["out"], results["S"] = out, s
            kl = MemPooling.kl_loss(s)
            if torch.isfinite(kl):
                results["kl_loss"] = kl.reshape(1)
            loss = None
            if lossw is not None:
                loss = (out * lossw["out"].double()).sum() + (s * lossw["S"].double()).sum()
                if kl_weight != 0:
                    if not torch.isfinite(kl):
                        raise ValueError(
                            f"{call.name}: kl_loss is not finite for this batch (a graph "
                            "without nodes); export it with kl_weight=0")
                    loss = loss + kl_weight * kl
        if loss is not None:
            results["loss"] = loss.reshape(1)
            params = dict(layer.named_parameters())
            wrt = list(params.values()) + [x]
            grads = torch.autograd.grad(loss, wrt, allow_unused=True)
            for (key, p), g in zip(params.items(), grads):
                results[f"grad.{key}"] = torch.zeros_like(p) if g is None else g
            results["grad.input.x"] = torch.zeros_like(x) if grads[-1] is None else grads[-1]
    return {k: v.detach().to(torch.float64).contiguous() for k, v in results.items()}


def case_tensors(call, gradients=False, kl_weight=0.0, generator=None):
    """The tensors and ``__metadata__`` of the case file for one recorded call."""
    layer = call.layer
    inputs, forward = _inputs_of(call)
    tensors = {f"param.{k}": v.detach().to(torch.float32).clone() for k, v in layer.state_dict().items()}
    tensors.update(inputs)
    is_eq = isinstance(layer, EquilibriumAggregation)
    meta = {
        "layer": "EquilibriumAggregation" if is_eq else "MemPooling",
        "args": json.dumps(equilibrium_args(layer) if is_eq else mem_pooling_args(layer)),
        "forward": json.dumps(forward),
    }
    # What the model computed, in float32.
    names = ["out"] if is_eq else ["out", "S"]
    for name, value in zip(names, call.outputs):
        tensors[f"pyg32.{name}"] = value.to(torch.float32)
    lossw = None
    if gradients:
        lossw = {name: torch.randn(value.shape, generator=generator) for name, value in zip(names, call.outputs)}
        for name, w in lossw.items():
            tensors[f"lossw.{name}"] = w
        meta["kl_weight"] = json.dumps(0.0 if is_eq else float(kl_weight))
        meta["loss"] = EQ_LOSS if is_eq else MP_LOSS
    for name, value in _run_double(call, inputs, lossw, 0.0 if is_eq else kl_weight).items():
        tensors[f"expect.{name}"] = value
    return {k: v.contiguous() for k, v in tensors.items()}, meta


def export_cases(model, inputs, out_dir, layers=None, gradients=False, kl_weight=0.0, seed=0, prefix=""):
    """Records one forward call of ``model`` on ``inputs`` and writes a case file per
    call of each EquilibriumAggregation / MemPooling layer into ``out_dir``.

    ``layers``: names of the layers to record (default: every one found by
    ``named_modules()``). ``gradients``: also write seeded loss weights, the loss and
    float64 gradients. ``kl_weight``: the weight of ``kl_loss(S)`` in MemPooling's loss
    (gradients only). Files are named ``<prefix><layer name>.safetensors`` (dots become
    ``_``; a layer called more than once gets ``_call<i>``). Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = find_layers(model, layers)
    calls = record_calls(model, inputs, chosen)
    generator = torch.Generator().manual_seed(seed)
    counts = {}
    for call in calls:
        counts[call.name] = counts.get(call.name, 0) + 1
    seen = {}
    paths = []
    for call in calls:
        i = seen.get(call.name, 0)
        seen[call.name] = i + 1
        stem = prefix + (call.name.replace(".", "_") or "model")
        if counts[call.name] > 1:
            stem += f"_call{i}"
        tensors, meta = case_tensors(call, gradients, kl_weight, generator)
        path = out_dir / f"{stem}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        paths.append(path)
    missing = [name for name, _ in chosen if name not in counts]
    if missing:
        raise ValueError(f"layer(s) {missing} were not called by the model's forward")
    return paths


def _load_factory(spec):
    file, _, func = spec.partition(":")
    if not func:
        raise SystemExit(f"{spec!r}: expected FILE.py:FUNCTION")
    module_spec = importlib.util.spec_from_file_location(Path(file).stem, file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, func)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("factory", help="FILE.py:FUNCTION returning (model, inputs)")
    p.add_argument("out_dir", help="directory for the case files")
    p.add_argument("--layers", help="comma-separated module names (default: all found)")
    p.add_argument("--gradients", action="store_true", help="add loss weights, loss and float64 gradients")
    p.add_argument("--kl-weight", type=float, default=0.0, help="weight of kl_loss(S) in MemPooling's loss")
    p.add_argument("--seed", type=int, default=0, help="seed of the loss weights")
    p.add_argument("--prefix", default="", help="prefix of the file names")
    a = p.parse_args(argv)
    model, inputs = _load_factory(a.factory)()
    layers = a.layers.split(",") if a.layers else None
    for path in export_cases(model, inputs, a.out_dir, layers, a.gradients, a.kl_weight, a.seed, a.prefix):
        print(path)


if __name__ == "__main__":
    sys.exit(main())

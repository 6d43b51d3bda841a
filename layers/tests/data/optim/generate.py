"""Records torch.optim trajectories for readout's optimiser tests (layers/tests/optim_torch.rs).

    ~/pyg/bin/python layers/tests/data/optim/generate.py layers/tests/data/optim/trajectories.safetensors

Two float32 parameters, `a` [3, 4] and `b` [5], start from seeded values; at every step
each trainable parameter's gradient is set to a seeded tensor (stored, so the Rust side
feeds the same one), optionally clipped with clip_grad_norm_, then optimizer.step() and
scheduler.step() run, as in a training loop. Every scenario stores:

    <scenario>.init.<p>        F32  initial values
    <scenario>.grad.<t>.<p>    F32  the gradient given at step t (absent while p is frozen)
    <scenario>.after.<t>.<p>   F32  p after step t
    <scenario>.lr.<t>          F64  [1] the learning rate after step t's scheduler step
    <scenario>.norm.<t>        F32  [1] clip_grad_norm_'s total norm (clipping scenarios)

and its definition as JSON in __metadata__[<scenario>]. torch's single-tensor code path
(foreach=False) is used: readout follows it operation for operation.
"""

import json
import sys

import torch
from safetensors.torch import save_file

STEPS = 12
SHAPES = {"a": (3, 4), "b": (5,)}

# name -> (optimizer, kwargs, scheduler or None, clip (max_norm, norm_type) or None,
#          steps during which `b` is frozen)
SCENARIOS = {
    "adam": ("Adam", {"lr": 0.01}, None, None, []),
    "adam_l2": ("Adam", {"lr": 0.01, "weight_decay": 0.1}, None, None, []),
    "adam_amsgrad": ("Adam", {"lr": 0.01, "weight_decay": 0.01, "amsgrad": True}, None, None, []),
    "adamw": ("AdamW", {"lr": 0.01, "weight_decay": 0.05}, None, None, []),
    "adamw_amsgrad": ("AdamW", {"lr": 0.02, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True}, None, None, []),
    "sgd": ("SGD", {"lr": 0.1}, None, None, []),
    "sgd_momentum_dampening": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}, None, None, []),
    "sgd_nesterov": ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.02}, None, None, []),
    "step_lr": ("Adam", {"lr": 0.02}, ("StepLR", {"step_size": 3, "gamma": 0.5}), None, []),
    "exponential_lr": ("SGD", {"lr": 0.1, "momentum": 0.5}, ("ExponentialLR", {"gamma": 0.9}), None, []),
    "cosine_lr": ("Adam", {"lr": 0.03}, ("CosineAnnealingLR", {"T_max": 4, "eta_min": 0.001}), None, []),
    "clip_l2": ("Adam", {"lr": 0.01}, None, (0.5, 2.0), []),
    "clip_inf": ("SGD", {"lr": 0.1, "momentum": 0.9}, None, (0.3, float("inf")), []),
    "freeze": ("Adam", {"lr": 0.01, "weight_decay": 0.01}, None, (1.0, 2.0), [0, 1, 2, 3, 4, 8]),
}


def run(name, spec, gen):
    opt_name, kwargs, sched, clip, frozen = spec
    params = {k: torch.nn.Parameter(torch.randn(s, generator=gen)) for k, s in SHAPES.items()}
    out = {f"{name}.init.{k}": p.detach().clone() for k, p in params.items()}
    opt = getattr(torch.optim, opt_name)(list(params.values()), foreach=False, **kwargs)
    scheduler = getattr(torch.optim.lr_scheduler, sched[0])(opt, **sched[1]) if sched else None
    for t in range(STEPS):
        opt.zero_grad(set_to_none=True)
        for k, p in params.items():
            g = torch.randn(SHAPES[k], generator=gen) * 0.5
            if k == "b" and t in frozen:
                p.requires_grad_(False)
                continue
            p.requires_grad_(True)
            p.grad = g
            out[f"{name}.grad.{t}.{k}"] = g.clone()
        if clip is not None:
            trainable = [p for p in params.values() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(trainable, clip[0], norm_type=clip[1], foreach=False)
            out[f"{name}.norm.{t}"] = norm.reshape(1).float()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        for k, p in params.items():
            out[f"{name}.after.{t}.{k}"] = p.detach().clone()
        out[f"{name}.lr.{t}"] = torch.tensor([opt.param_groups[0]["lr"]], dtype=torch.float64)
    return out


def main(path):
    gen = torch.Generator().manual_seed(20261201)
    tensors, meta = {}, {}
    for name, spec in SCENARIOS.items():
        tensors.update(run(name, spec, gen))
        opt_name, kwargs, sched, clip, frozen = spec
        meta[name] = json.dumps(
            {"optimizer": opt_name, "kwargs": kwargs, "scheduler": sched,
             "clip": None if clip is None else [clip[0], str(clip[1])], "frozen_b": frozen,
             "steps": STEPS, "torch": torch.__version__}
        )
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)


if __name__ == "__main__":
    main(sys.argv[1])

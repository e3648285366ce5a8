"""Golden vectors for the optimizers, the schedules and gradient clipping: tests/golden/optim.npz.

Made with torch (CPU, ``foreach=False``: the per-tensor loop torch takes on CPU anyway) and transformers.

**Optimizer trajectories.** Five parameters of different shapes (``weight`` (4, 3), ``bias`` (3,), ``late`` (5,),
``sparse`` (2, 2), ``gain`` (1,)) get one gradient sequence of ``STEPS`` steps per dtype (float64, float32):
``late`` has no gradient (``p.grad = None``: torch neither updates it nor counts a step) on the first
``LATE`` steps; ``sparse`` has a gradient of exact zeros on the steps in ``ZERO_STEPS`` (torch updates it and
counts the step); ``bias`` gradients are small (x0.01) and ``gain`` gradients large (x100). Each case in
``CASES`` runs one ``torch.optim`` optimizer over that sequence (the learning rate of step t is ``lr[t]``,
set in the param group before the step) and stores the parameters after every step and the final
per-parameter ``step`` counters.

Keys: ``opt_cases`` (case names), ``opt_params`` (parameter names), ``has_grad_{p}`` (STEPS,) bool,
``{dtype}_init_{p}``, ``{dtype}_grad_{p}`` (STEPS, *shape); per case ``opt{i}_config`` (JSON: dtype, class,
kwargs, ``no_decay`` = the names put in a second param group with ``weight_decay=0``), ``opt{i}_lr`` (STEPS,),
``opt{i}_traj_{p}`` (STEPS, *shape) = the parameter after each step, torch's state after each step:
``opt{i}_momentum_buffer_{p}`` (SGD) or ``opt{i}_exp_avg_{p}``, ``opt{i}_exp_avg_sq_{p}`` (Adam, AdamW), NaN
while torch holds none, and ``opt{i}_step`` (STEPS, n_params) = ``state[p]["step"]`` in ``opt_params`` order
(-1 while torch keeps no step, and always for SGD).

**Schedules.** ``sched{i}_config`` (JSON: transformers function and its arguments, ``lr_max``, ``n_steps``),
``sched{i}_lr`` (n_steps,) = the optimizer's ``param_groups[0]["lr"]`` at steps 0..n_steps-1 of a
``LambdaLR`` loop (``optimizer.step(); scheduler.step()``), ``sched{i}_multiplier`` = the lambda itself.

**Clipping.** ``clip{i}_names``, ``clip{i}_grad_{k}``, ``clip{i}_max_norm``, ``clip{i}_norm`` (what
``clip_grad_norm_`` returns, in the gradients' dtype), ``clip{i}_clipped_{k}``. Large cases (too big to store)
are ``big{i}_n`` elements all equal to ``big{i}_value`` (float32), with ``big{i}_max_norm``, ``big{i}_norm`` and
``big{i}_clipped`` (the value every element has after clipping).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

STEPS = 24
LATE = 2  # "late" gets its first gradient on step 3 (1-based): a bias switched on at step 3
ZERO_STEPS = (0, 3, 4, 8, 14)  # 0-based steps on which "sparse" has an all-zero gradient
SHAPES = {"weight": (4, 3), "bias": (3,), "late": (5,), "sparse": (2, 2), "gain": (1,)}
SCALES = {"weight": 1.0, "bias": 0.01, "late": 1.0, "sparse": 1.0, "gain": 100.0}

CASES = [  # (name, torch.optim class, kwargs, no_decay names, lr schedule or None)
    ("sgd", "SGD", {"lr": 0.1}, (), None),
    ("sgd_wd", "SGD", {"lr": 0.1, "weight_decay": 0.05}, (), None),
    ("sgd_momentum", "SGD", {"lr": 0.05, "momentum": 0.9}, (), None),
    ("sgd_momentum_wd", "SGD", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.01}, (), None),
    ("sgd_nesterov_wd", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, (), None),
    ("adam", "Adam", {"lr": 0.1}, (), None),
    ("adam_l2", "Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, (), None),
    ("adamw", "AdamW", {"lr": 0.1}, (), None),
    ("adamw_groups_schedule", "AdamW", {"lr": 0.05, "betas": (0.9, 0.95), "weight_decay": 0.5}, ("bias",),
     "cosine"),
]

SCHEDULES = [  # (transformers function, kwargs, lr_max, n_steps)
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 10, "num_training_steps": 100}, 3e-4, 106),
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 2, "num_training_steps": 6}, 1e-2, 9),
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 0, "num_training_steps": 10}, 1.0, 13),
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 3, "num_training_steps": 13}, 0.1, 16),
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 7, "num_training_steps": 7}, 0.5, 10),
    ("get_cosine_schedule_with_warmup", {"num_warmup_steps": 0, "num_training_steps": 1}, 2e-3, 3),
    ("get_cosine_with_min_lr_schedule_with_warmup",
     {"num_warmup_steps": 10, "num_training_steps": 100, "min_lr": 3e-5}, 3e-4, 106),
    ("get_cosine_with_min_lr_schedule_with_warmup",
     {"num_warmup_steps": 3, "num_training_steps": 13, "min_lr": 0.01}, 0.1, 16),
    ("get_linear_schedule_with_warmup", {"num_warmup_steps": 10, "num_training_steps": 100}, 3e-4, 106),
    ("get_linear_schedule_with_warmup", {"num_warmup_steps": 0, "num_training_steps": 10}, 1.0, 13),
    ("get_linear_schedule_with_warmup", {"num_warmup_steps": 3, "num_training_steps": 13}, 0.1, 16),
    ("get_linear_schedule_with_warmup", {"num_warmup_steps": 5, "num_training_steps": 5}, 0.5, 8),
    ("get_constant_schedule_with_warmup", {"num_warmup_steps": 0}, 0.1, 5),
    ("get_constant_schedule_with_warmup", {"num_warmup_steps": 4}, 0.1, 8),
    ("get_constant_schedule_with_warmup", {"num_warmup_steps": 10}, 3e-4, 14),
]

BIG = [  # (n, value, max_norm): 10^7 x 0.1 has norm 316.2278; float32 accumulation gives 316.35
    (10_000_000, 0.1, 316.3),  # just above the true norm: no clipping (a float32 sum would clip)
    (10_000_000, 0.1, 1.0),
]


def _gradients(dtype: str, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    init = {p: rng.standard_normal(s).astype(dtype) for p, s in SHAPES.items()}
    grads = {p: (rng.standard_normal((STEPS, *s)) * SCALES[p]).astype(dtype) for p, s in SHAPES.items()}
    grads["sparse"][list(ZERO_STEPS)] = 0
    has = {p: np.ones(STEPS, bool) for p in SHAPES}
    has["late"][:LATE] = False
    grads["late"][:LATE] = 0  # stored as zeros, never given to the optimizer (has_grad is False)
    return init, grads, has


def _cosine_lr(base: float) -> np.ndarray:
    import math

    return np.array([base * 0.5 * (1 + math.cos(math.pi * t / STEPS)) for t in range(STEPS)])


def _trajectory(cls_name, kwargs, no_decay, lr, init, grads, has):
    import torch

    params = {p: torch.nn.Parameter(torch.from_numpy(v.copy())) for p, v in init.items()}
    decay = [params[p] for p in SHAPES if p not in no_decay]
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": [params[p] for p in no_decay], "weight_decay": 0.0})
    opt = getattr(torch.optim, cls_name)(groups, foreach=False, **kwargs)
    keys = {"SGD": ("momentum_buffer",), "Adam": ("exp_avg", "exp_avg_sq"), "AdamW": ("exp_avg", "exp_avg_sq")}
    out = {f"traj_{p}": [] for p in SHAPES}
    out.update({f"{k}_{p}": [] for k in keys[cls_name] for p in SHAPES})
    out["step"] = []
    for t in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = float(lr[t])
        for p, param in params.items():
            param.grad = torch.from_numpy(grads[p][t].copy()) if has[p][t] else None
        opt.step()
        for p, param in params.items():
            out[f"traj_{p}"].append(param.detach().numpy().copy())
            state = opt.state[param]
            for k in keys[cls_name]:  # NaN where torch holds no such state (yet)
                value = state.get(k)
                out[f"{k}_{p}"].append(np.full(SHAPES[p], np.nan, init[p].dtype) if value is None
                                       else value.numpy().copy())
        out["step"].append([int(opt.state[params[p]]["step"]) if "step" in opt.state[params[p]] else -1
                            for p in SHAPES])
    return {k: np.array(v, dtype=np.int64) if k == "step" else np.stack(v) for k, v in out.items()}


def _optimizers(data: dict) -> None:
    rng = np.random.default_rng(20250309)
    data["opt_cases"] = np.array([c[0] for c in CASES])
    data["opt_params"] = np.array(list(SHAPES))
    per_dtype = {}
    for dtype in ("float64", "float32"):
        init, grads, has = per_dtype[dtype] = _gradients(dtype, rng)
        for p in SHAPES:
            data[f"{dtype}_init_{p}"] = init[p]
            data[f"{dtype}_grad_{p}"] = grads[p]
            data[f"has_grad_{p}"] = has[p]
    i = 0
    for dtype in ("float64", "float32"):
        init, grads, has = per_dtype[dtype]
        for name, cls_name, kwargs, no_decay, schedule in CASES:
            lr = _cosine_lr(kwargs["lr"]) if schedule == "cosine" else np.full(STEPS, kwargs["lr"])
            arrays = _trajectory(cls_name, kwargs, no_decay, lr, init, grads, has)
            config = {"name": name, "dtype": dtype, "class": cls_name, "kwargs": kwargs, "no_decay": list(no_decay)}
            data[f"opt{i}_config"] = np.array(json.dumps(config))
            data[f"opt{i}_lr"] = lr
            data.update({f"opt{i}_{k}": v for k, v in arrays.items()})
            i += 1
    data["n_opt"] = np.array(i)


def _schedules(data: dict) -> None:
    import torch
    import transformers

    for i, (fn_name, kwargs, lr_max, n_steps) in enumerate(SCHEDULES):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr_max)
        sched = getattr(transformers, fn_name)(opt, **kwargs)
        lrs, mult = [], []
        for s in range(n_steps):
            lrs.append(opt.param_groups[0]["lr"])
            mult.append(sched.lr_lambdas[0](s))
            opt.step()
            sched.step()
        config = {"function": fn_name, "kwargs": kwargs, "lr_max": lr_max, "n_steps": n_steps}
        data[f"sched{i}_config"] = np.array(json.dumps(config))
        data[f"sched{i}_lr"] = np.array(lrs, dtype=np.float64)
        data[f"sched{i}_multiplier"] = np.array(mult, dtype=np.float64)
    data["n_sched"] = np.array(len(SCHEDULES))


def _clip_cases(rng: np.random.Generator) -> list[tuple[dict, float]]:
    f32, f64 = np.float32, np.float64
    random = lambda dtype, scale: {"w": (rng.standard_normal((6, 5)) * scale).astype(dtype),
                                   "b": (rng.standard_normal(5) * scale).astype(dtype),
                                   "e": (rng.standard_normal((3, 2, 2)) * scale).astype(dtype)}
    return [
        (random(f32, 1.0), 1.0),                                          # clipped
        (random(f32, 0.1), 10.0),                                         # below the threshold: untouched
        ({"a": np.array([3.0, 0.0], f32), "b": np.array([[4.0]], f32)}, 5.0),  # norm exactly max_norm
        (random(f64, 1.0), 0.5),                                          # float64, clipped
        ({"a": np.array([3.0, 0.0], f64), "b": np.array([[4.0]], f64)}, 5.0),  # float64, exactly at it
        (random(f64, 1e-3), 1e-3),                                        # float64, norm near max_norm
        ({"a": np.array([1.0, np.inf], f32), "b": np.array([2.0], f32)}, 1.0),  # an inf: norm inf
        ({"a": np.array([1.0, np.nan], f32), "b": np.array([2.0], f32)}, 1.0),  # a NaN: norm NaN
    ]


def _clipping(data: dict) -> None:
    import torch

    rng = np.random.default_rng(20250310)
    cases = _clip_cases(rng)
    for i, (grads, max_norm) in enumerate(cases):
        params = []
        for g in grads.values():
            p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
            p.grad = torch.from_numpy(g.copy())
            params.append(p)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        data[f"clip{i}_names"] = np.array(list(grads))
        data[f"clip{i}_max_norm"] = np.array(max_norm, dtype=np.float64)
        data[f"clip{i}_norm"] = norm.numpy()
        for (k, g), p in zip(grads.items(), params):
            data[f"clip{i}_grad_{k}"] = g
            data[f"clip{i}_clipped_{k}"] = p.grad.numpy().copy()
    data["n_clip"] = np.array(len(cases))
    for i, (n, value, max_norm) in enumerate(BIG):
        p = torch.nn.Parameter(torch.zeros(n))
        p.grad = torch.full((n,), value, dtype=torch.float32)
        norm = torch.nn.utils.clip_grad_norm_([p], max_norm, foreach=False)
        assert bool((p.grad == p.grad[0]).all())
        data.update({f"big{i}_n": np.array(n), f"big{i}_value": np.array(value, np.float32),
                     f"big{i}_max_norm": np.array(max_norm, np.float64), f"big{i}_norm": norm.numpy(),
                     f"big{i}_clipped": p.grad[0].numpy().copy()})
    data["n_big"] = np.array(len(BIG))


def make(out_dir: Path) -> list[Path]:
    from golden._meta import meta

    data: dict[str, np.ndarray] = {}
    _optimizers(data)
    _schedules(data)
    _clipping(data)
    path = Path(out_dir) / "optim.npz"
    np.savez_compressed(path, **data, **meta("tools/golden/optim.py"))
    return [path]

"""Adapter files that PEFT itself can load: ``adapter_model.safetensors`` + ``adapter_config.json``.

The layout is PEFT's ``save_pretrained``: tensors named ``base_model.model.<module>.lora_A.weight`` (r, in)
and ``base_model.model.<module>.lora_B.weight`` (out, r), written with safetensors' NumPy API (metadata
``{"format": "pt"}`` as PEFT writes), and a JSON config with PEFT's keys (``peft_type: "LORA"``, ``r``,
``lora_alpha``, ``target_modules``, ``lora_dropout``, ``use_rslora``, ``bias: "none"``, ...). So
``peft.PeftModel.from_pretrained(torch_twin, path)`` works on a PyTorch model with the same module names
(``tests/lora/test_peft_interop.py``). Only the adapter is stored: a few kB instead of the whole model.

:func:`load_adapter` checks everything (config, names, shapes, dtypes) before it changes the model: a
mismatched adapter raises ValueError and leaves the model as it was. A round trip is bit-exact.

Departures: teaching initializations (``"zero_A"``, ...) are written into ``init_lora_weights`` as they are
(PEFT only uses that key at creation time, not when loading); ``"all-linear"`` is written as the list of
the wrapped modules' last names (PEFT resolves it the same way). safetensors is an optional dependency
(extras ``adapters`` / ``test``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from minilora.nn.module import Module
from minilora.peft.config import LoraConfig
from minilora.peft.inject import find_targets, inject_lora, lora_modules

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PREFIX = "base_model.model."
PEFT_VERSION = "0.21.2"  # the PEFT release whose format this follows


def _safetensors_numpy():
    try:
        from safetensors import numpy as st_numpy
    except ImportError as err:
        raise ImportError(
            "saving and loading adapters needs the safetensors package, which is not installed; "
            "install it with: pip install 'minilora[adapters]' (or pip install safetensors)"
        ) from err
    return st_numpy


def adapter_config_dict(config: LoraConfig, targets: list[str]) -> dict:
    """The ``adapter_config.json`` content for ``config`` (PEFT 0.21.2's keys; unused features off)."""
    tm = config.target_modules
    if tm == "all-linear":
        tm = sorted({name.rsplit(".", 1)[-1] for name in targets})
    elif not isinstance(tm, str):
        tm = list(tm)
    return {
        "peft_type": "LORA",
        "task_type": None,
        "peft_version": PEFT_VERSION,
        "base_model_name_or_path": None,
        "revision": None,
        "inference_mode": True,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": tm,
        "exclude_modules": None,
        "init_lora_weights": config.init_lora_weights,
        "use_rslora": config.use_rslora,
        "bias": "none",
        "lora_bias": False,
        "fan_in_fan_out": False,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "loftq_config": {},
        "layer_replication": None,
    }


def save_adapter(model: Module, path: str | os.PathLike) -> Path:
    """Write the LoRA weights and config of ``model`` to the directory ``path`` (created); return it."""
    layers = lora_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers: inject_lora(model, config) first")
    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoraConfig):
        raise ValueError("model has LoRA layers but no model.lora_config; create them with inject_lora()")
    if any(layer.merged for layer in layers.values()):
        raise ValueError("model has merged LoRA layers; unmerge them before saving the adapter")
    st_numpy = _safetensors_numpy()
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(layer.A)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(layer.B)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    st_numpy.save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    text = json.dumps(adapter_config_dict(config, list(layers)), indent=2, sort_keys=True)
    (path / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
    return path


def read_adapter(path: str | os.PathLike) -> tuple[LoraConfig, dict[str, np.ndarray]]:
    """Read an adapter directory: its :class:`LoraConfig` and tensors keyed ``<module>.lora_A.weight``."""
    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise ValueError(f"adapter directory {str(path)!r} has no {name}")
    raw = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    if raw.get("peft_type") != "LORA":
        raise ValueError(f"adapter peft_type must be 'LORA', got {raw.get('peft_type')!r}")
    for key, allowed in (("bias", "none"), ("use_dora", False), ("rank_pattern", {}), ("alpha_pattern", {})):
        if raw.get(key, allowed) not in (allowed, None):
            raise ValueError(f"adapter {key}={raw[key]!r} is not supported; minilora needs {allowed!r}")
    tm = raw.get("target_modules")
    config = LoraConfig(
        r=raw.get("r"),
        lora_alpha=raw.get("lora_alpha"),
        lora_dropout=raw.get("lora_dropout", 0.0),
        target_modules=tm if isinstance(tm, str) else tuple(tm or ()),
        init_lora_weights=raw.get("init_lora_weights", True),
        use_rslora=raw.get("use_rslora", False),
    )
    tensors = _safetensors_numpy().load_file(str(path / WEIGHTS_NAME))
    bad = sorted(k for k in tensors if not k.startswith(PREFIX))
    if bad:
        raise ValueError(f"adapter tensor names must start with {PREFIX!r}, got {bad}")
    return config, {k[len(PREFIX) :]: v for k, v in tensors.items()}


def load_adapter(model: Module, path: str | os.PathLike, seed: int = 0) -> Module:
    """Load an adapter saved by :func:`save_adapter` (or PEFT) into ``model``; return ``model``.

    A model without LoRA layers gets them injected (as ``inject_lora(model, config)``) and filled in; a
    model with LoRA layers must have exactly the adapter's layers, rank and scaling. Names, shapes and
    dtypes are all checked first: on any mismatch a ValueError explains it and the model is unchanged.
    """
    config, tensors = read_adapter(path)
    existing = lora_modules(model)
    if existing:
        names = list(existing)
        for name, layer in existing.items():
            if (layer.r, layer.scaling) != (config.r, config.scaling):
                raise ValueError(
                    f"adapter has r={config.r}, scaling={config.scaling:g} but {name} has "
                    f"r={layer.r}, scaling={layer.scaling:g}"
                )
            if layer.merged:
                raise ValueError(f"{name} is merged; unmerge before loading an adapter")
        shapes = {n: (layer.A.shape, layer.B.shape) for n, layer in existing.items()}
        dtypes = {n: layer.A.dtype for n, layer in existing.items()}
    else:
        names = find_targets(model, config)
        shapes, dtypes = {}, {}
        for name in names:
            w = model.get_submodule(name).params["weight"]
            shapes[name] = ((config.r, w.shape[1]), (w.shape[0], config.r))
            dtypes[name] = w.dtype
    expected = {f"{n}.lora_{ab}.weight" for n in names for ab in "AB"}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(
            f"adapter does not match the model's LoRA targets: missing {missing}, unexpected {unexpected}"
        )
    for n in names:
        for ab, shape in zip("AB", shapes[n]):
            t = tensors[f"{n}.lora_{ab}.weight"]
            if t.shape != shape:
                raise ValueError(
                    f"adapter tensor {n}.lora_{ab}.weight has shape {t.shape}, the model needs {shape}"
                )
            if t.dtype != dtypes[n]:
                raise ValueError(
                    f"adapter tensor {n}.lora_{ab}.weight has dtype {t.dtype}, the model uses {dtypes[n]}"
                )
    if not existing:  # zeros: no random draws, and no PiSSA rewrite of the base weights
        inject_lora(model, dataclasses.replace(config, init_lora_weights="zeros"), seed=seed)
    for name, layer in lora_modules(model).items():
        layer.A[...] = tensors[f"{name}.lora_A.weight"]
        layer.B[...] = tensors[f"{name}.lora_B.weight"]
    model.lora_config = config
    return model

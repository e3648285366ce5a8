"""Bottleneck-adapter files: minilora's documented layout, with AdapterHub's configuration keys.

PEFT has no bottleneck adapters, so there is no PEFT layout to follow. A directory holds:

* ``adapter_config.json``, shaped like the one AdapterHub's ``save_adapter`` writes::

      {"config": {"architecture": "bottleneck", "mh_adapter": true, "output_adapter": true,
                  "reduction_factor": 16, "non_linearity": "swish", "original_ln_before": false,
                  "original_ln_after": true, "residual_before_ln": true, "adapter_residual_before_ln": false,
                  "ln_before": false, "ln_after": false, "init_weights": "bert", "scaling": 1.0,
                  "leave_out": [], "is_parallel": false, "use_gating": false, "phm_layer": false},
       "config_class": "DoubleSeqBnConfig", "hidden_size": 64, "num_layers": 2,
       "model_type": "minilora-gpt", "name": "adapter", "version": "minilora-0.1.0"}

  (the keys AdapterHub has and minilora fixes are written with the only value minilora supports);
* ``adapter.safetensors``: the adapter weights under the model's own parameter names,
  ``blocks.{i}.attention_adapters.adapter_down.0.weight`` (m, d), ``...adapter_down.0.bias`` (m,),
  ``...adapter_up.weight`` (d, m), ``...adapter_up.bias`` (d,), and the same for ``output_adapters``.
  AdapterHub names the same tensors ``transformer.h.{i}.attention_adapters.adapters.{name}.adapter_down.0.weight``
  for GPT-2.

:func:`load_adapters` computes every name and shape the config implies and checks the file against them (and
the dtypes) before it changes the model; a round trip is bit-exact.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import numpy as np

from minilora import __version__, backend
from minilora.nn.gpt import GPT
from minilora.peft.adapter_io import _safetensors_numpy
from minilora.peft.adapters import adapter_blocks, apply
from minilora.peft.adapters_config import BnConfig, DoubleSeqBnConfig, SeqBnConfig
from minilora.peft.prompt_io import write_files

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"
CONFIG_CLASSES = {cls.__name__: cls for cls in (BnConfig, DoubleSeqBnConfig, SeqBnConfig)}
#: AdapterHub's keys whose value minilora fixes (the sequential adapter with the block's residual)
FIXED = {"original_ln_after": True, "residual_before_ln": True, "adapter_residual_before_ln": False,
         "ln_before": False, "ln_after": False, "is_parallel": False, "use_gating": False, "phm_layer": False}


def adapters_config_dict(model: GPT) -> dict:
    """``adapter_config.json`` for a model with adapters (see the module docstring)."""
    config = getattr(model, "adapter_config", None)
    if not isinstance(config, BnConfig) or not adapter_blocks(model):
        raise ValueError(f"{type(model).__name__} has no bottleneck adapters: minilora.peft.adapters.apply(model, "
                         "config) first")
    cfg = {f.name: getattr(config, f.name) for f in fields(config)}
    cfg["leave_out"] = list(cfg["leave_out"])
    return {"config": {"architecture": config.architecture, **cfg, **FIXED}, "config_class": type(config).__name__,
            "hidden_size": model.config.n_embd, "num_layers": model.config.n_layer, "model_type": "minilora-gpt",
            "name": "adapter", "version": f"minilora-{__version__}"}


def adapter_tensors(model: GPT) -> dict[str, np.ndarray]:
    """The adapter weights by parameter name (live arrays)."""
    return {k: v for k, v in model.params.items() if "_adapters." in k}


def adapters_files(model: GPT) -> dict[str, bytes]:
    """The files :func:`save_adapters` writes, by name, as bytes."""
    text = json.dumps(adapters_config_dict(model), indent=2, sort_keys=True) + "\n"
    tensors = {k: np.ascontiguousarray(backend.to_numpy(v)) for k, v in adapter_tensors(model).items()}
    # one metadata key: safetensors writes metadata from an unordered map, so two keys come out in either order
    return {WEIGHTS_NAME: _safetensors_numpy().save(tensors, metadata={"format": "np"}),
            CONFIG_NAME: text.encode("utf-8")}


def adapters_nbytes(model: GPT) -> int:
    """Bytes on disk of the saved adapter (both files)."""
    return sum(len(b) for b in adapters_files(model).values())


def save_adapters(model: GPT, path: str | os.PathLike) -> Path:
    """Write the adapters of ``model`` to the directory ``path`` (created); return ``path``."""
    return write_files(path, adapters_files(model))


def read_adapters(path: str | os.PathLike) -> tuple[BnConfig, dict, dict[str, np.ndarray]]:
    """``(config, raw_json, tensors)`` of an adapter directory written by :func:`save_adapters`."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise ValueError(f"adapter directory {str(path)!r} has no {CONFIG_NAME}")
    raw = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    if "peft_type" in raw:
        raise ValueError(f"{path / CONFIG_NAME} is a PEFT adapter (peft_type={raw['peft_type']!r}), not a bottleneck "
                         "adapter: use minilora.peft.load_prompt_adapter or load_adapter")
    cfg = raw.get("config")
    if not isinstance(cfg, dict) or cfg.get("architecture") != "bottleneck":
        raise ValueError(f"{path / CONFIG_NAME}: config.architecture must be 'bottleneck', got "
                         f"{cfg.get('architecture') if isinstance(cfg, dict) else cfg!r}")
    if raw.get("config_class") not in CONFIG_CLASSES:
        raise ValueError(f"{path / CONFIG_NAME}: config_class must be one of {sorted(CONFIG_CLASSES)}, "
                         f"got {raw.get('config_class')!r}")
    unsupported = {k: cfg[k] for k, v in FIXED.items() if k in cfg and cfg[k] != v}
    if unsupported:
        raise ValueError(f"{path / CONFIG_NAME}: {unsupported} is not supported; minilora needs "
                         f"{ {k: FIXED[k] for k in unsupported} }")
    names = {f.name for f in fields(BnConfig)}
    config = CONFIG_CLASSES[raw["config_class"]](**{k: v for k, v in cfg.items() if k in names})
    if not (path / WEIGHTS_NAME).is_file():
        raise ValueError(f"adapter directory {str(path)!r} has no {WEIGHTS_NAME}")
    return config, raw, _safetensors_numpy().load_file(str(path / WEIGHTS_NAME))


def expected_shapes(config: BnConfig, hidden_size: int, n_layer: int) -> dict[str, tuple[int, ...]]:
    """Every adapter tensor ``config`` puts into a model of that size, with its shape."""
    d, out = hidden_size, {}
    for i in range(n_layer):
        if i in config.leave_out:
            continue
        m = config.bottleneck_size(i, d)
        for where, on in (("attention_adapters", config.mh_adapter), ("output_adapters", config.output_adapter)):
            if on:
                p = f"blocks.{i}.{where}."
                out |= {p + "adapter_down.0.weight": (m, d), p + "adapter_down.0.bias": (m,),
                        p + "adapter_up.weight": (d, m), p + "adapter_up.bias": (d,)}
    return out


def load_adapters(model: GPT, path: str | os.PathLike) -> GPT:
    """Load the adapters saved at ``path`` into ``model`` (added if it has none); returns ``model``.

    A model that already has adapters must have the file's config. Names, shapes and dtypes are checked
    first: on a mismatch a ValueError names the file and the model is unchanged.
    """
    path = Path(path)
    config, raw, tensors = read_adapters(path)
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a minilora GPT, got {type(model).__name__}")
    c = model.config
    if (raw.get("hidden_size"), raw.get("num_layers")) != (c.n_embd, c.n_layer):
        raise ValueError(f"{path / CONFIG_NAME}: hidden_size={raw.get('hidden_size')}, num_layers="
                         f"{raw.get('num_layers')}; the model has n_embd={c.n_embd}, n_layer={c.n_layer}")
    existing = adapter_blocks(model)
    if existing and getattr(model, "adapter_config", None) != config:
        raise ValueError(f"model already has adapters with {getattr(model, 'adapter_config', None)!r}; the file has "
                         f"{config!r}: unload_adapters(model) first")
    shapes = expected_shapes(config, c.n_embd, c.n_layer)
    missing, unexpected = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
    if missing or unexpected:
        raise ValueError(f"{path / WEIGHTS_NAME} does not match its config: missing {missing}, unexpected {unexpected}")
    for k, shape in shapes.items():
        if tensors[k].shape != shape or tensors[k].dtype != model.dtype:
            raise ValueError(f"{path / WEIGHTS_NAME}: {k} is {tensors[k].dtype}{list(tensors[k].shape)}, the model "
                             f"needs {model.dtype}{list(shape)}")
    if not existing:
        apply(model, config)
    params, xp = model.params, backend.xp()
    for k, v in tensors.items():
        params[k][...] = xp.asarray(v)
    return model


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "adapter_tensors", "adapters_config_dict", "adapters_files",
           "adapters_nbytes", "expected_shapes", "load_adapters", "read_adapters", "save_adapters"]

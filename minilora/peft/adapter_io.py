"""Adapter files that PEFT itself can load: ``adapter_model.safetensors`` + ``adapter_config.json``.

The layout is PEFT's ``save_pretrained``: tensors named ``base_model.model.<module>.lora_A.weight`` (r, in)
and ``base_model.model.<module>.lora_B.weight`` (out, r), plus ``base_model.model.<name>`` for the parameters
of ``modules_to_save``, written with safetensors' NumPy API (metadata ``{"format": "pt"}`` as PEFT writes),
and a JSON config with PEFT's keys (``peft_type: "LORA"``, ``r``, ``lora_alpha``, ``target_modules``,
``lora_dropout``, ``use_rslora``, ``bias: "none"``, ...). So ``peft.PeftModel.from_pretrained(torch_twin,
path)`` works on a PyTorch model with the same module names (``tests/lora/test_peft_interop.py``). Only the
adapter is stored: a few kB instead of the whole model.

``init_lora_weights`` is a creation-time key: PEFT creates the layers with it, then loads the file's weights
over them. So:

* minilora's teaching inits are written as a value PEFT accepts (``"random"`` → ``false``, PEFT's name for
  the same draws; ``"zero_A"``, ``"zeros"`` → ``true``) and the teaching name is kept in the safetensors
  metadata (``"minilora.init_lora_weights"``), which PEFT ignores (an unknown key in adapter_config.json
  would make PEFT warn that the file comes from a newer PEFT);
* PiSSA and OLoRA adapt a *residual* base W − s·B0A0. By default :func:`save_adapter` converts such an
  adapter to a plain LoRA relative to the original W, as PEFT's ``save_pretrained(...,
  path_initial_model_for_weight_conversion=...)`` does: ``A' = [A; A0]`` (2r, in), ``B' = [B, −B0]``
  (out, 2r), ``r' = 2r``, ``lora_alpha' = 2·lora_alpha`` (``√2·lora_alpha`` with rsLoRA: same scaling),
  ``init_lora_weights = true``, so that ``W + s·B'A' = (W − s·B0A0) + s·BA`` loads onto the original base
  in minilora, in PEFT, anywhere. ``convert_pissa_to_lora=False`` writes PEFT's unconverted layout instead
  (``init_lora_weights: "pissa"``, the r-rank A, B), which PEFT and :func:`load_adapter` load by
  rebuilding the residual from the base weight's SVD (or QR) before loading A, B;
* :func:`load_adapter` accepts every value PEFT writes (``false``, ``"eva"``, ``"pissa_niter_16"``,
  ``"loftq"``, ...), see :func:`minilora.peft.config.load_time_init`.

:func:`load_adapter` checks everything (config, names, shapes, dtypes) before it changes the model: a
mismatched adapter raises ValueError and leaves the model as it was. Float tensors of another dtype are cast
to the model's (with a warning): PEFT keeps adapters in float32 on a float16 base
(``autocast_adapter_dtype=True``); minilora keeps one dtype per layer, so a float16 model gets float16
adapters. A round trip of a plain LoRA is bit-exact; of a converted PiSSA/OLoRA, exact up to float32
rounding of the base weight.

Departures: ``"all-linear"`` is written as the list of the wrapped modules' last names (PEFT resolves it the
same way). safetensors is an optional dependency (extras ``adapters`` / ``test``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.nn.module import Module
from minilora.peft.config import RESIDUAL_INITS, TEACHING_INITS, LoraConfig, load_time_init
from minilora.peft.inject import find_targets, inject_lora, layer_shape, lora_modules
from minilora.peft.mapping import register_adapter_io
from minilora.peft.modules_to_save import find_modules_to_save, modules_to_save_params

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PREFIX = "base_model.model."
PEFT_VERSION = "0.21.2"  # the PEFT release whose format this follows
#: safetensors metadata key holding a teaching init's name (PEFT ignores metadata)
META_INIT = "minilora.init_lora_weights"
#: PEFT's note when a quantized PiSSA base is converted (peft/tuners/lora/model.py, subtract_mutated_init)
QUANT_CONVERSION_WARNING = (
    "Note that Quant(W_res) + AB != Quant(W) + \\Delta(AB); the converted LoRA, when combined with W or Quant(W), "
    "may introduce a certain gap in the fine-tuned model."
)


def _safetensors_numpy():
    try:
        from safetensors import numpy as st_numpy
    except ImportError as err:
        raise ImportError(
            "saving and loading adapters needs the safetensors package, which is not installed; "
            "it is a dependency of minilora: pip install safetensors"
        ) from err
    return st_numpy


def adapter_config_dict(config: LoraConfig, targets: list[str]) -> dict:
    """The ``adapter_config.json`` content for ``config`` (PEFT 0.21.2's keys; unused features off).

    ``init_lora_weights`` is written as PEFT accepts it (a teaching init as :data:`TEACHING_INITS` says).
    """
    tm = config.target_modules
    if tm == "all-linear":
        tm = sorted({name.rsplit(".", 1)[-1] for name in targets})
    elif not isinstance(tm, str):
        tm = list(tm)
    init = config.init_lora_weights
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
        "init_lora_weights": TEACHING_INITS.get(init, init) if isinstance(init, str) else init,
        "use_rslora": config.use_rslora,
        "bias": "none",
        "lora_bias": False,
        "fan_in_fan_out": False,
        "use_dora": False,
        "modules_to_save": None if config.modules_to_save is None else list(config.modules_to_save),
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "loftq_config": {},
        "layer_replication": None,
    }


def converted_config(config: LoraConfig) -> LoraConfig:
    """The config of a PiSSA/OLoRA adapter converted to plain LoRA: rank 2r, the same scaling, init True.

    >>> c = converted_config(LoraConfig(r=4, lora_alpha=8, init_lora_weights="pissa"))
    >>> c.r, c.lora_alpha, c.init_lora_weights, c.scaling
    (8, 16, True, 2.0)
    """
    alpha = config.lora_alpha * math.sqrt(2) if config.use_rslora else config.lora_alpha * 2  # as PEFT
    return dataclasses.replace(config, r=2 * config.r, lora_alpha=alpha, init_lora_weights=True)


def adapter_tensors(model: Module, convert_pissa_to_lora: bool = True) -> tuple[LoraConfig, dict[str, np.ndarray]]:
    """The config to write and the tensors (host NumPy arrays, PEFT's names) of the adapter of ``model``.

    PiSSA/OLoRA layers are converted to plain LoRA relative to the original base weight unless
    ``convert_pissa_to_lora=False`` (see the module docstring).
    """
    layers = lora_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers: inject_lora(model, config) first")
    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoraConfig):
        raise ValueError("model has LoRA layers but no model.lora_config; create them with inject_lora()")
    if any(layer.merged for layer in layers.values()):
        raise ValueError("model has merged LoRA layers; unmerge them before saving the adapter")
    convert = convert_pissa_to_lora and config.init_lora_weights in RESIDUAL_INITS
    if convert:
        too_small = {n: min(lay.in_features, lay.out_features) for n, lay in layers.items()
                     if 2 * lay.r > min(lay.in_features, lay.out_features)}
        if too_small:
            raise ValueError(
                f"converting the {config.init_lora_weights} adapter to plain LoRA needs rank 2r = "
                f"{2 * config.r} <= min(in, out), which fails for {too_small}; save it with "
                "convert_pissa_to_lora=False (PEFT's unconverted layout, which rebuilds the residual on load)")
        if any("weight" not in lay.params for lay in layers.values()):  # a 4-bit (QLoRA) residual base
            warnings.warn(QUANT_CONVERSION_WARNING, UserWarning, stacklevel=3)
    xp = backend.xp()
    tensors = {}
    for name, layer in layers.items():
        A, B = layer.A, layer.B
        if convert:
            A0, B0 = layer.residual_init
            A, B = xp.concatenate([A, A0.astype(A.dtype)], axis=0), xp.concatenate([B, -B0.astype(B.dtype)], axis=1)
        tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(backend.to_numpy(A))
        tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(backend.to_numpy(B))
    for name, value in modules_to_save_params(model).items():
        tensors[f"{PREFIX}{name}"] = np.ascontiguousarray(backend.to_numpy(value))
    return (converted_config(config) if convert else config), tensors


def adapter_files(model: Module, convert_pissa_to_lora: bool = True) -> dict[str, bytes]:
    """The two files of the adapter of ``model`` as bytes, ``{file name: content}`` (nothing is written)."""
    config, tensors = adapter_tensors(model, convert_pissa_to_lora)
    metadata = {"format": "pt"}
    if config.init_lora_weights in TEACHING_INITS:
        metadata[META_INIT] = config.init_lora_weights
    text = json.dumps(adapter_config_dict(config, list(lora_modules(model))), indent=2, sort_keys=True)
    return {
        WEIGHTS_NAME: _safetensors_numpy().save(tensors, metadata=metadata),
        CONFIG_NAME: (text + "\n").encode("utf-8"),
    }


def adapter_nbytes(model: Module, convert_pissa_to_lora: bool = True) -> int:
    """Bytes :func:`save_adapter` would write for ``model`` (measured on the serialized files, in memory)."""
    return sum(len(content) for content in adapter_files(model, convert_pissa_to_lora).values())


def save_adapter(model: Module, path: str | os.PathLike, convert_pissa_to_lora: bool = True) -> Path:
    """Write the LoRA adapter of ``model`` to the directory ``path`` (created); return it.

    Parameters
    ----------
    model : Module
        A model with LoRA (or QLoRA) layers, not merged.
    path : directory
        Gets ``adapter_config.json`` and ``adapter_model.safetensors``.
    convert_pissa_to_lora : bool
        For a PiSSA/OLoRA adapter: write it as a rank-2r plain LoRA relative to the original base weight
        (default, PEFT's ``path_initial_model_for_weight_conversion``), or, when False, as PEFT's unconverted
        PiSSA/OLoRA file, whose loading rebuilds the residual from the base weight.
    """
    files = adapter_files(model, convert_pissa_to_lora)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_bytes(content)
    return path


def read_adapter(path: str | os.PathLike) -> tuple[LoraConfig, dict[str, np.ndarray]]:
    """Read an adapter directory: its :class:`LoraConfig` and tensors keyed ``<module>.lora_A.weight``.

    The config's ``init_lora_weights`` is the one :func:`load_adapter` creates the layers with: a teaching
    name from the metadata, or :func:`~minilora.peft.config.load_time_init` of the file's value.
    """
    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise ValueError(f"adapter directory {str(path)!r} has no {name}")
    raw = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    if raw.get("peft_type") != "LORA":
        raise ValueError(f"adapter peft_type must be 'LORA', got {raw.get('peft_type')!r}")
    for key, allowed in (("bias", "none"), ("use_dora", False), ("rank_pattern", {}), ("alpha_pattern", {}),
                         ("lora_bias", False), ("fan_in_fan_out", False), ("layers_to_transform", None)):
        if raw.get(key, allowed) not in (allowed, None):
            raise ValueError(f"adapter {key}={raw[key]!r} is not supported; minilora needs {allowed!r}")
    _safetensors_numpy()  # a clear ImportError when safetensors is missing
    from safetensors import safe_open

    with safe_open(str(path / WEIGHTS_NAME), framework="np") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    init = raw.get("init_lora_weights", True)
    teaching = metadata.get(META_INIT)
    if teaching in TEACHING_INITS and TEACHING_INITS[teaching] == init:
        init = teaching
    else:
        init = load_time_init(init, where=f"adapter {str(path)!r}")
    tm = raw.get("target_modules")
    config = LoraConfig(
        r=raw.get("r"),
        lora_alpha=raw.get("lora_alpha"),
        lora_dropout=raw.get("lora_dropout", 0.0),
        target_modules=tm if isinstance(tm, str) else tuple(tm or ()),
        init_lora_weights=init,
        use_rslora=raw.get("use_rslora", False),
        modules_to_save=raw.get("modules_to_save") or None,
    )
    bad = sorted(k for k in tensors if not k.startswith(PREFIX))
    if bad:
        raise ValueError(f"adapter tensor names must start with {PREFIX!r}, got {bad}")
    return config, {k[len(PREFIX) :]: v for k, v in tensors.items()}


def _residual_kind(init: bool | str) -> str | None:
    return init if init in RESIDUAL_INITS else None


def load_adapter(model: Module, path: str | os.PathLike, seed: int = 0) -> Module:
    """Load an adapter saved by :func:`save_adapter` (or PEFT) into ``model``; return ``model``.

    A model without LoRA layers gets them injected (as ``inject_lora(model, config)``; a PiSSA/OLoRA file
    rebuilds its residual base from the model's weights, as PEFT does) and filled in; a model with LoRA
    layers must have exactly the adapter's layers, rank, scaling and kind of base (plain or residual). Names,
    shapes and dtypes are all checked first: on any mismatch a ValueError explains it and the model is
    unchanged. Float tensors of another dtype than the model's are cast to it, with a warning.
    """
    config, tensors = read_adapter(path)
    existing = lora_modules(model)
    saved: list[str]
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
            kind = _residual_kind(layer.init_lora_weights)
            if kind != _residual_kind(config.init_lora_weights):
                raise ValueError(
                    f"adapter {str(path)!r} has init_lora_weights={config.init_lora_weights!r} but {name} was "
                    f"created with {layer.init_lora_weights!r}: a PiSSA/OLoRA adapter is relative to its own "
                    "residual base weight, so it only loads into a layer of the same kind (or a model without LoRA)")
        shapes = {n: (layer.A.shape, layer.B.shape) for n, layer in existing.items()}
        dtypes = {n: layer.A.dtype for n, layer in existing.items()}
        saved_params = modules_to_save_params(model)
    else:
        names = find_targets(model, config)
        shapes, dtypes = {}, {}
        for name in names:
            layer = model.get_submodule(name)
            shape = layer_shape(layer)  # (out, in), of a float or a 4-bit Linear
            if config.r > min(shape):
                raise ValueError(f"adapter r={config.r} exceeds min(in, out) = {min(shape)} of {name} {shape}")
            shapes[name] = ((config.r, shape[1]), (shape[0], config.r))
            w = layer.params.get("weight")  # a 4-bit layer's adapter takes its original weight's dtype
            dtypes[name] = np.dtype(layer.qweight.quant_state.dtype) if w is None else w.dtype
        saved = find_modules_to_save(model, config.modules_to_save, targets=names) if config.modules_to_save else []
        prefixes = tuple(n + "." for n in saved)
        saved_params = {k: v for k, v in model.params.items() if k.startswith(prefixes)}
    expected = {f"{n}.lora_{ab}.weight": (shapes[n][i], dtypes[n]) for n in names for i, ab in enumerate("AB")}
    expected.update({k: (v.shape, v.dtype) for k, v in saved_params.items()})
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"adapter does not match the model's LoRA targets: missing {missing}, unexpected {unexpected}"
        )
    ready, cast = {}, []
    for key, (shape, dtype) in expected.items():
        t = tensors[key]
        if t.shape != shape:
            raise ValueError(f"adapter tensor {key} has shape {t.shape}, the model needs {shape}")
        if t.dtype.kind != "f":
            raise ValueError(f"adapter tensor {key} has dtype {t.dtype}; it must be a float array (model: {dtype})")
        if t.dtype != dtype:
            with np.errstate(over="ignore"):
                c = t.astype(dtype)
            if not np.array_equal(np.isfinite(c), np.isfinite(t)):
                raise ValueError(f"adapter tensor {key} ({t.dtype}) overflows the model's dtype {dtype}")
            cast.append(f"{t.dtype}->{dtype}")
            t = c
        ready[key] = t
    if cast:
        kinds = ", ".join(sorted(set(cast)))
        warnings.warn(
            f"adapter {str(path)!r}: {len(cast)} tensors cast to the model's dtype ({kinds}); PEFT keeps float32 "
            "adapters on a float16 base (autocast_adapter_dtype=True), minilora one dtype per layer",
            UserWarning, stacklevel=2)
    if not existing:  # zeros: no random draws; PiSSA/OLoRA rebuild their residual base
        init = config.init_lora_weights if _residual_kind(config.init_lora_weights) else "zeros"
        inject_lora(model, dataclasses.replace(config, init_lora_weights=init), seed=seed)
    xp = backend.xp()
    for name, layer in lora_modules(model).items():
        layer.A[...] = xp.asarray(ready[f"{name}.lora_A.weight"])
        layer.B[...] = xp.asarray(ready[f"{name}.lora_B.weight"])
    params = model.params
    for key in saved_params:
        params[key][...] = xp.asarray(ready[key])
    model.lora_config = config
    return model


register_adapter_io(LoraConfig, save_adapter, load_adapter)  # QLoRA too: its adapter is a LoRA adapter file

"""One entry point for every PEFT method, its adapter files, and PEFT's parameter counts.

:func:`get_peft_model` dispatches on the type of the config, as PEFT's ``get_peft_model`` does: each method
module registers ``(config class, function that applies it)`` with :func:`register_peft_method` (LoRA:
``LoraConfig`` → :func:`~minilora.peft.inject.inject_lora`), and its adapter files with
:func:`register_adapter_io`. Departure from PEFT: there is no ``PeftModel`` wrapper class of its own; each
method returns what it builds (LoRA changes the model in place and binds PEFT's ``PeftModel`` methods onto it:
``print_trainable_parameters``, ``get_nb_trainable_parameters``, ``merge_and_unload``, ``unload``,
``disable_adapter``; a prompt method returns a wrapper around it). The model a method returns carries its
config as ``peft_config`` (PEFT's attribute; prompt methods), ``lora_config`` (LoRA) or ``adapter_config``
(bottleneck adapters).

QLoRA is two steps, as in PEFT (where transformers loads the base in 4 bits and
``prepare_model_for_kbit_training`` freezes it before ``get_peft_model``)::

    model = quantize_base(load_base_model(), QuantizationConfig())        # minilora.peft.linear4bit
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))

and :func:`~minilora.peft.inject.inject_lora` puts a :class:`~minilora.peft.qlora.QLoRALinear` on each targeted
4-bit layer (:func:`~minilora.peft.qlora.prepare_qlora` is the same two steps in one call).

Adapter files of every method go through one pair: :func:`save_adapter` dispatches on the config the model
carries, :func:`load_adapter` on the ``peft_type`` in the directory's ``adapter_config.json`` (PEFT's key;
AdapterHub's layout names its ``config.architecture`` instead);
:func:`adapter_nbytes` is the size of what :func:`save_adapter` writes.

:func:`count_parameters` is PEFT's ``get_nb_trainable_parameters``. A layer may hold frozen parameters
outside its ``params`` dict (a 4-bit weight is packed codes plus statistics, not a float array): such a layer
implements the hook ``num_extra_params() -> int``, the number of *elements* those parameters have, and the
count adds it to the total (PEFT counts a bitsandbytes ``Params4bit`` by its elements, twice its packed
bytes). The engine knows nothing of this: ``Module.num_params`` counts ``params`` only. The frozen originals
PEFT keeps beside each ``modules_to_save`` copy are counted too, as PEFT counts them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from minilora.nn.module import Module

#: config class → function ``(model, config, seed) -> model`` that applies the method (filled by the methods)
PEFT_METHODS: dict[type, Callable[..., Module]] = {}
#: config class → ``(save(model, path, **kw) -> Path, load(model, path, **kw) -> model)`` of its adapter files
ADAPTER_IO: dict[type, tuple[Callable[..., Path], Callable[..., Module]]] = {}
#: the file :func:`load_adapter` reads ``peft_type`` from (PEFT's name)
CONFIG_NAME = "adapter_config.json"


def register_peft_method(config_cls: type, apply: Callable[..., Module]) -> None:
    """Make :func:`get_peft_model` apply ``apply(model, config, seed=seed)`` for configs of ``config_cls``."""
    if not isinstance(config_cls, type):
        raise TypeError(f"config_cls must be a class, got {config_cls!r}")
    if not callable(apply):
        raise TypeError(f"apply must be a function (model, config, seed) -> model, got {apply!r}")
    PEFT_METHODS[config_cls] = apply


def adapter_kind_of(config_cls: type) -> str | None:
    """What names ``config_cls``'s method in ``adapter_config.json``: PEFT's ``peft_type`` (``"LORA"``,
    ``"PROMPT_TUNING"``, ...) or AdapterHub's ``architecture`` (``"bottleneck"``); None if it has neither."""
    for attr in ("peft_type", "architecture"):
        kind = getattr(config_cls, attr, None)
        if isinstance(kind, str) and kind:
            return kind
    return None


def register_adapter_io(config_cls: type, save: Callable[..., Path], load: Callable[..., Module]) -> None:
    """Make :func:`save_adapter` / :func:`load_adapter` use ``save`` / ``load`` for the method of ``config_cls``.

    The class attribute ``config_cls.peft_type`` (PEFT's methods) or ``config_cls.architecture`` (AdapterHub's)
    is what :func:`load_adapter` finds in ``adapter_config.json`` (:func:`adapter_kind`); two methods cannot
    share one.
    """
    kind = adapter_kind_of(config_cls) if isinstance(config_cls, type) else None
    if kind is None:
        raise TypeError(f"config_cls must be a class with a peft_type (or architecture) string, got {config_cls!r}")
    if not (callable(save) and callable(load)):
        raise TypeError(f"save and load must be functions (model, path), got {save!r}, {load!r}")
    taken = [c for c in ADAPTER_IO if adapter_kind_of(c) == kind and c is not config_cls]
    if taken:
        raise ValueError(f"peft_type {kind!r} is already registered by {taken[0].__name__}")
    ADAPTER_IO[config_cls] = (save, load)


def _lookup(table: dict[type, Any], config: Any) -> Any:
    return next((table[c] for c in type(config).__mro__ if c in table), None)


def get_peft_model(model: Module, config: Any, seed: int = 0) -> Module:
    """Apply the PEFT method that ``config`` describes to ``model`` and return the adapted model.

    Parameters
    ----------
    model : Module
        A GPT, an MLP or any module tree; for QLoRA, a model :func:`~minilora.peft.linear4bit.quantize_base`
        has stored in 4 bits.
    config : LoraConfig (or another registered config)
        Which method, with its hyper-parameters.
    seed : int
        Seeds the method's initialization.

    Returns
    -------
    Module
        ``model`` itself, changed in place (LoRA, QLoRA), or the method's wrapper around it.
    """
    apply = _lookup(PEFT_METHODS, config)
    if apply is None:
        names = sorted(c.__name__ for c in PEFT_METHODS)
        raise TypeError(f"config must be one of {names}, got {type(config).__name__}")
    return apply(model, config, seed=seed)


def peft_config_of(model: Module) -> Any:
    """The config of the PEFT method ``model`` carries (``peft_config``; LoRA: ``lora_config``; bottleneck
    adapters: ``adapter_config``), or None."""
    for attr in ("peft_config", "lora_config", "adapter_config"):
        config = getattr(model, attr, None)
        if config is not None and _lookup(PEFT_METHODS, config) is not None:
            return config
    return None


def save_adapter(model: Module, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write the adapter of whichever PEFT method ``model`` carries to the directory ``path``; return it.

    Dispatches on the model's config (:func:`peft_config_of`) to the method's writer (LoRA and QLoRA:
    :func:`minilora.peft.adapter_io.save_adapter`, PEFT's layout); ``kwargs`` go to it. A model without a PEFT
    method (full fine-tuning) has no adapter: save the whole model (``GPT.save``).
    """
    config = peft_config_of(model)
    if config is None:
        raise ValueError(f"{type(model).__name__} carries no PEFT method (no LoRA layers, no prompt, no adapter "
                         "modules: apply one with get_peft_model); a fully fine-tuned model has no adapter: save "
                         "the whole model with GPT.save")
    io = _lookup(ADAPTER_IO, config)
    if io is None:
        raise ValueError(f"{type(config).__name__} has no adapter files registered (register_adapter_io)")
    return io[0](model, path, **kwargs)


def adapter_kind(path: str | os.PathLike) -> str:
    """The method of the adapter in directory ``path``: the ``peft_type`` of its ``adapter_config.json`` (PEFT's
    layout), or ``config.architecture`` (AdapterHub's layout, ``"bottleneck"``); a ValueError names the file
    when it has neither."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise ValueError(f"adapter directory {str(path)!r} has no {CONFIG_NAME}")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(file)!r} is not valid JSON: {err}") from err
    raw = raw if isinstance(raw, dict) else {}
    inner = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    kind = raw.get("peft_type", inner.get("architecture"))
    if not isinstance(kind, str):
        raise ValueError(f"{str(file)!r} has no peft_type string (nor an AdapterHub config.architecture), "
                         f"got {kind!r}")
    return kind


def load_adapter(model: Module, path: str | os.PathLike, **kwargs: Any) -> Module:
    """Load the adapter in directory ``path`` onto ``model`` with its method's reader; return the adapted model.

    The method is :func:`adapter_kind` of the directory (``peft_type`` ``"LORA"``, ``"PROMPT_TUNING"``, ...,
    or AdapterHub's ``"bottleneck"``); ``kwargs`` go to the reader (LoRA:
    :func:`minilora.peft.adapter_io.load_adapter`). For a QLoRA adapter, quantize the base first
    (:func:`~minilora.peft.linear4bit.quantize_base`), as the adapter was trained on it. Each reader checks the
    file against the model before it changes anything.
    """
    kind = adapter_kind(path)
    for cls, (_, load) in ADAPTER_IO.items():
        if adapter_kind_of(cls) == kind:
            return load(model, path, **kwargs)
    known = sorted(adapter_kind_of(c) for c in ADAPTER_IO)
    raise ValueError(f"adapter {str(path)!r} has peft_type {kind!r}; minilora reads {known}")


def adapter_nbytes(model: Module, **kwargs: Any) -> int:
    """Bytes on disk of what :func:`save_adapter` writes for ``model`` (written to a temporary directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_adapter(model, Path(tmp) / "adapter", **kwargs)
        return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def trainable_parameters(model: Module) -> dict[str, np.ndarray]:
    """The trainable parameters of ``model`` by dotted name (live arrays)."""
    params = model.params
    return {name: params[name] for name in model.trainable_names()}


def num_extra_params(model: Module) -> int:
    """Elements of the frozen parameters ``model`` stores outside ``params``: every layer's
    ``num_extra_params()`` hook (4-bit weights) plus the originals kept beside ``modules_to_save``."""
    hooks = sum(int(m.num_extra_params()) for _, m in model.named_modules() if hasattr(m, "num_extra_params"))
    originals = getattr(model, "modules_to_save_originals", {})
    return hooks + sum(int(v.size) for v in originals.values())


def count_parameters(model: Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (PEFT's ``get_nb_trainable_parameters``).

    Every parameter counts by its elements, a 4-bit weight too (PEFT's count), so LoRA and QLoRA with the
    same adapter on the same model report the same numbers.
    """
    return model.num_params(trainable_only=True), model.num_params() + num_extra_params(model)


def print_trainable_parameters(model: Module) -> str:
    """Print and return PEFT's line ``trainable params: … || all params: … || trainable%: …``."""
    trainable, total = count_parameters(model)
    pct = 100 * trainable / total
    line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"
    print(line)
    return line


__all__ = ["ADAPTER_IO", "PEFT_METHODS", "adapter_kind", "adapter_kind_of", "adapter_nbytes", "count_parameters",
           "get_peft_model", "load_adapter", "num_extra_params", "peft_config_of", "print_trainable_parameters",
           "register_adapter_io", "register_peft_method", "save_adapter", "trainable_parameters"]

"""One entry point for every PEFT method, and PEFT's parameter counts.

:func:`get_peft_model` dispatches on the type of the config, as PEFT's ``get_peft_model`` does: each method
module registers ``(config class, function that applies it)`` with :func:`register_peft_method` (LoRA:
``LoraConfig`` → :func:`~minilora.peft.inject.inject_lora`). Departure from PEFT: there is no ``PeftModel``
wrapper; the model is changed in place and returned, with PEFT's ``PeftModel`` methods bound onto it by the
method (for LoRA: ``print_trainable_parameters``, ``get_nb_trainable_parameters``, ``merge_and_unload``,
``unload``, ``disable_adapter``).

:func:`count_parameters` is PEFT's ``get_nb_trainable_parameters``. A layer may hold frozen parameters
outside its ``params`` dict (a 4-bit weight is packed codes plus statistics, not a float array): such a layer
implements the hook ``num_extra_params() -> int``, the number of *elements* those parameters have, and the
count adds it to the total (PEFT counts a bitsandbytes ``Params4bit`` by its elements, twice its packed
bytes). The engine knows nothing of this: ``Module.num_params`` counts ``params`` only. The frozen originals
PEFT keeps beside each ``modules_to_save`` copy are counted too, as PEFT counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minilora.nn.module import Module

#: config class → function ``(model, config, seed) -> model`` that applies the method (filled by the methods)
PEFT_METHODS: dict[type, Callable[..., Module]] = {}


def register_peft_method(config_cls: type, apply: Callable[..., Module]) -> None:
    """Make :func:`get_peft_model` apply ``apply(model, config, seed=seed)`` for configs of ``config_cls``."""
    if not isinstance(config_cls, type):
        raise TypeError(f"config_cls must be a class, got {config_cls!r}")
    PEFT_METHODS[config_cls] = apply


def get_peft_model(model: Module, config: Any, seed: int = 0) -> Module:
    """Apply the PEFT method that ``config`` describes to ``model`` (in place) and return ``model``.

    Parameters
    ----------
    model : Module
        A GPT, an MLP or any module tree.
    config : LoraConfig (or another registered config)
        Which method, with its hyper-parameters.
    seed : int
        Seeds the method's initialization.
    """
    for cls in type(config).__mro__:
        if cls in PEFT_METHODS:
            return PEFT_METHODS[cls](model, config, seed=seed)
    names = sorted(c.__name__ for c in PEFT_METHODS)
    raise TypeError(f"config must be one of {names}, got {type(config).__name__}")


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


__all__ = ["PEFT_METHODS", "count_parameters", "get_peft_model", "num_extra_params", "print_trainable_parameters",
           "register_peft_method", "trainable_parameters"]

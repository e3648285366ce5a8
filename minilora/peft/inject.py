"""Put LoRA into a model and take it out again: PEFT's ``get_peft_model`` / ``merge_and_unload`` / ``unload``.

:func:`inject_lora` (what :func:`~minilora.peft.mapping.get_peft_model` does for a ``LoraConfig``) walks the
model's dotted module names (``blocks.0.attn.q_proj``), wraps every :class:`~minilora.nn.modules.Linear`
whose name matches ``LoraConfig.target_modules`` (PEFT's matching rules, see :mod:`minilora.peft.config`) in
a :class:`~minilora.peft.lora.LoRALinear`, makes the ``modules_to_save`` trainable
(:mod:`minilora.peft.modules_to_save`) and freezes every other parameter, so that only ``*.lora_A.weight`` /
``*.lora_B.weight`` (and the saved modules) remain trainable. It works on any
:class:`~minilora.nn.module.Module` tree (the GPT, the MLP of the small experiments).

Departure from PEFT: the model is changed in place and returned (no ``PeftModel`` wrapper); the config is
kept as ``model.lora_config``, and PEFT's ``PeftModel`` methods are bound onto the model, so that
``model.print_trainable_parameters()``, ``model.get_nb_trainable_parameters()``,
``model.merge_and_unload()``, ``model.unload()`` and ``with model.disable_adapter(): ...`` work as in PEFT
(they are the functions of this module; unloading removes them again). After :func:`merge_and_unload` or
:func:`unload` the base parameters stay frozen, as in PEFT; call ``model.unfreeze()`` to train them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

import numpy as np

from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.peft.config import LoraConfig
from minilora.peft.lora import LoRALinear
from minilora.peft.mapping import (
    count_parameters,
    print_trainable_parameters,
    register_peft_method,
    trainable_parameters,
)
from minilora.peft.modules_to_save import drop_originals, find_modules_to_save, original_values, setup_modules_to_save


def lora_modules(model: Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by dotted name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def find_targets(model: Module, config: LoraConfig) -> list[str]:
    """Dotted names of the Linears that ``config`` would wrap; raises ValueError when there are none.

    Linears inside an existing LoRA layer (its ``lora_A``/``lora_B``) are never targets.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"config must be a LoraConfig, got {type(config).__name__}")
    inside = tuple(name + "." for name in lora_modules(model))
    linears = [
        name
        for name, m in model.named_modules()
        if isinstance(m, Linear) and name and not name.startswith(inside)
    ]
    targets = [name for name in linears if config.matches(name)]
    if not targets:
        raise ValueError(
            f"target_modules={config.target_modules!r} matches no Linear of {type(model).__name__}; "
            f"its Linears are {linears}"
        )
    return targets


def check_ranks(model: Module, config: LoraConfig, targets: list[str]) -> None:
    """ValueError unless ``config.r ≤ min(in, out)`` for every target (checked before anything changes)."""
    for name in targets:
        out_f, in_f = model.get_submodule(name).params["weight"].shape
        if config.r > min(in_f, out_f):
            raise ValueError(
                f"r={config.r} exceeds min(in, out) = {min(in_f, out_f)} of {name} ({out_f}, {in_f})"
            )


def plan_injection(model: Module, config: LoraConfig) -> tuple[list[str], list[str]]:
    """``(targets, modules_to_save)`` for ``config`` on a model without LoRA, every check done, nothing changed."""
    if lora_modules(model):
        raise ValueError(
            f"model already has LoRA layers {list(lora_modules(model))}; "
            "merge_and_unload(model) or unload(model) first, or load_adapter() into it"
        )
    targets = find_targets(model, config)
    check_ranks(model, config, targets)
    saved = find_modules_to_save(model, config.modules_to_save, targets=targets) if config.modules_to_save else []
    return targets, saved


def inject_lora(model: Module, config: LoraConfig | None = None, seed: int = 0) -> Module:
    """Wrap the target Linears of ``model`` in LoRALinear (in place), freeze the rest, return ``model``.

    Parameters
    ----------
    model : Module
        A GPT, an MLP or any module tree without LoRA layers yet.
    config : LoraConfig
        Rank, scaling, targets, initialization, modules to save (default ``LoraConfig()``: r = 8 on q_proj
        and v_proj).
    seed : int
        Each wrapped layer gets its own generator spawned from ``seed`` (init and dropout).
    """
    config = LoraConfig() if config is None else config
    targets, saved = plan_injection(model, config)
    model.freeze()
    streams = np.random.SeedSequence(seed).spawn(len(targets))
    for name, ss in zip(targets, streams):
        layer = LoRALinear(
            model.get_submodule(name),
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            init_lora_weights=config.init_lora_weights,
            use_rslora=config.use_rslora,
            seed=np.random.default_rng(ss),
        )
        model.set_submodule(name, layer)
    finish_injection(model, config, saved)
    return model


def finish_injection(model: Module, config: LoraConfig, modules_to_save: list[str]) -> None:
    """After the layers are wrapped: train the ``modules_to_save``, keep the config, bind PEFT's methods."""
    if modules_to_save:
        setup_modules_to_save(model, modules_to_save)
    model.lora_config = config
    for name, fn in PEFT_MODEL_METHODS.items():
        setattr(model, name, MethodType(fn, model))


def _forget_lora(model: Module) -> None:
    drop_originals(model)
    for name in ("lora_config", *PEFT_MODEL_METHODS):
        if name in vars(model):
            delattr(model, name)


def merge_lora(model: Module) -> Module:
    """Merge every LoRA layer of ``model`` (inference without the side path); see :meth:`LoRALinear.merge`."""
    for layer in lora_modules(model).values():
        layer.merge()
    return model


def unmerge_lora(model: Module) -> Module:
    """Undo :func:`merge_lora`."""
    for layer in lora_modules(model).values():
        layer.unmerge()
    return model


def _unload(model: Module, merge: bool) -> Module:
    layers = lora_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers to {'merge' if merge else 'unload'}")
    for name, layer in layers.items():
        if layer.disable_adapters:
            raise ValueError(f"{name}'s adapter is disabled (inside disable_adapter()); leave that block first")
    for name, layer in layers.items():
        model.set_submodule(name, layer.unwrap(merge=merge))
    _forget_lora(model)
    return model


def merge_and_unload(model: Module) -> Module:
    """Fold each LoRA update into its base weight and put the plain Linear back; returns ``model``.

    The result has the original parameter names and shapes (``blocks.0.attn.q_proj.weight``) and
    computes what the LoRA model computed, up to float32 rounding of ``W0 + s·BA``. ``modules_to_save`` keep
    their trained values (as PEFT).
    """
    return _unload(model, merge=True)


def unload(model: Module) -> Module:
    """Remove every LoRA layer without merging: the model computes what its base did (PEFT's ``unload``).

    A merged layer is unmerged first; a PiSSA/OLoRA layer gets ``s·B0A0`` added back into its residual, so
    its weight is the original again up to float32 rounding (where PEFT leaves the residual). The
    ``modules_to_save`` keep their trained values, as in PEFT.
    """
    return _unload(model, merge=False)


@contextmanager
def disable_adapter(model: Module) -> Iterator[Module]:
    """Context manager: inside it ``model`` computes its base model's outputs; after it, the adapted ones.

    Every LoRA layer is switched off (:meth:`LoRALinear.enable_adapters`) and the ``modules_to_save`` hold
    their original values; on exit both come back exactly (no arithmetic touches the weights). Inside, the
    LoRA layers are inference-only (``backward`` refuses). Merged layers must be unmerged first.
    """
    layers = lora_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers to disable")
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise ValueError(f"LoRA layers {merged} are merged; unmerge_lora(model) before disable_adapter()")
    if any(layer.disable_adapters for layer in layers.values()):
        raise ValueError("the adapter is already disabled (disable_adapter() blocks do not nest)")
    with original_values(model):
        for layer in layers.values():
            layer.enable_adapters(False)
        try:
            yield model
        finally:
            for layer in layers.values():
                layer.enable_adapters(True)


#: PEFT's ``PeftModel`` methods that :func:`inject_lora` binds onto the model it returns
PEFT_MODEL_METHODS = {
    "print_trainable_parameters": print_trainable_parameters,
    "get_nb_trainable_parameters": count_parameters,
    "merge_and_unload": merge_and_unload,
    "unload": unload,
    "disable_adapter": disable_adapter,
}

register_peft_method(LoraConfig, inject_lora)

__all__ = ["count_parameters", "disable_adapter", "find_targets", "inject_lora", "lora_modules", "merge_and_unload",
           "merge_lora", "print_trainable_parameters", "trainable_parameters", "unload", "unmerge_lora"]

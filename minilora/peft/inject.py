"""Put LoRA into a model and take it out again: PEFT's ``get_peft_model`` / ``merge_and_unload``.

:func:`inject_lora` walks the model's dotted module names (``blocks.0.attn.q_proj``), wraps every
:class:`~minilora.nn.modules.Linear` whose name matches ``LoraConfig.target_modules`` (PEFT's matching
rules, see :mod:`minilora.peft.config`) in a :class:`~minilora.peft.lora.LoRALinear`, and freezes every
other parameter, so that only ``*.lora_A.weight`` / ``*.lora_B.weight`` remain trainable. It works on any
:class:`~minilora.nn.module.Module` tree (the GPT, the MLP of the small experiments).

Departure from PEFT: the model is changed in place and returned (no ``PeftModel`` wrapper); the config
is kept as ``model.lora_config``. After :func:`merge_and_unload` the base parameters stay frozen, as in
PEFT; call ``model.unfreeze()`` to train them.
"""

from __future__ import annotations

import numpy as np

from minilora.nn.module import Module
from minilora.nn.modules import Linear
from minilora.peft.config import LoraConfig
from minilora.peft.lora import LoRALinear


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


def inject_lora(model: Module, config: LoraConfig | None = None, seed: int = 0) -> Module:
    """Wrap the target Linears of ``model`` in LoRALinear (in place), freeze the rest, return ``model``.

    Parameters
    ----------
    model : Module
        A GPT, an MLP or any module tree without LoRA layers yet.
    config : LoraConfig
        Rank, scaling, targets, initialization (default ``LoraConfig()``: r = 8 on q_proj and v_proj).
    seed : int
        Each wrapped layer gets its own generator spawned from ``seed`` (init and dropout).
    """
    config = LoraConfig() if config is None else config
    if lora_modules(model):
        raise ValueError(
            f"model already has LoRA layers {list(lora_modules(model))}; "
            "merge_and_unload(model) first or load_adapter() into it"
        )
    targets = find_targets(model, config)
    for name in targets:  # check every rank before changing anything
        out_f, in_f = model.get_submodule(name).params["weight"].shape
        if config.r > min(in_f, out_f):
            raise ValueError(
                f"r={config.r} exceeds min(in, out) = {min(in_f, out_f)} of {name} ({out_f}, {in_f})"
            )
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
    model.lora_config = config
    return model


def trainable_parameters(model: Module) -> dict[str, np.ndarray]:
    """The trainable parameters of ``model`` by dotted name (live arrays)."""
    params = model.params
    return {name: params[name] for name in model.trainable_names()}


def count_parameters(model: Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (PEFT's ``get_nb_trainable_parameters``)."""
    return model.num_params(trainable_only=True), model.num_params()


def print_trainable_parameters(model: Module) -> str:
    """Print and return PEFT's line ``trainable params: … || all params: … || trainable%: …``."""
    trainable, total = count_parameters(model)
    pct = 100 * trainable / total
    line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"
    print(line)
    return line


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


def merge_and_unload(model: Module) -> Module:
    """Fold each LoRA update into its base weight and put the plain Linear back; returns ``model``.

    The result has the original parameter names and shapes (``blocks.0.attn.q_proj.weight``) and
    computes what the LoRA model computed, up to float32 rounding of ``W0 + s·BA``.
    """
    layers = lora_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers to merge")
    for name, layer in layers.items():
        model.set_submodule(name, layer.unwrap())
    if "lora_config" in vars(model):
        del model.lora_config
    return model

"""PEFT's ``modules_to_save``: whole modules trained beside an adapter and saved in the adapter file.

PEFT wraps each such module in a ``ModulesToSaveWrapper`` holding the frozen ``original_module`` and a
trainable copy; the adapter file stores the copy's tensors under the module's own names
(``base_model.model.lm_head.weight``), ``merge_and_unload``/``unload`` keep the trained copy and
``disable_adapter`` computes with the original. minilora does the same without a wrapper: the module's own
parameters become trainable in place (so the engine's code that reads ``lm_head`` or ``wte`` directly is
untouched and the parameter names stay ``lm_head.weight``), and a frozen copy of their starting values is kept
in ``model.modules_to_save_originals`` (``{parameter name: array}``), which :func:`original_values` swaps in
for a ``disable_adapter`` block and :func:`~minilora.peft.mapping.count_parameters` counts, as PEFT counts
``original_module``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from minilora.nn.module import Module


def find_modules_to_save(model: Module, keys: Sequence[str], skip: Sequence[str] = (),
                         targets: Sequence[str] = ()) -> list[str]:
    """Dotted names of the modules matched by ``keys`` (PEFT: ``name.endswith(key)``), outermost only.

    Modules inside ``skip`` (e.g. existing LoRA layers) are never matched; matching a LoRA target, or a module
    containing one, raises ValueError (a module cannot be both adapted and trained in full). No match at all
    raises ValueError listing the model's modules.
    """
    inside = tuple(name + "." for name in skip)
    found: list[str] = []
    for name, _ in model.named_modules():
        if not name or name.startswith(inside) or any(name.startswith(f + ".") for f in found):
            continue
        if any(name.endswith(key) for key in keys):
            clash = [t for t in targets if t == name or t.startswith(name + ".")]
            if clash:
                raise ValueError(f"modules_to_save={tuple(keys)!r} matches {name!r}, which holds the LoRA "
                                 f"target(s) {clash}: a module cannot be both adapted and trained in full")
            found.append(name)
    if not found:
        names = [n for n, _ in model.named_modules() if n and not n.startswith(inside)]
        raise ValueError(f"modules_to_save={tuple(keys)!r} matches no module of {type(model).__name__}; "
                         f"its modules are {names}")
    return found


def setup_modules_to_save(model: Module, names: Sequence[str]) -> list[str]:
    """Make the parameters of the modules ``names`` trainable and keep frozen copies of their values.

    Returns the parameter names, in ``model.params`` order; records the copies in
    ``model.modules_to_save_originals``.
    """
    prefixes = tuple(n + "." for n in names)
    params = [k for k in model.params if k.startswith(prefixes)]
    model.unfreeze(params)
    current = model.params
    model.modules_to_save_originals = {k: current[k].copy() for k in params}
    return params


def modules_to_save_params(model: Module) -> dict[str, np.ndarray]:
    """The live (trained) parameters of the ``modules_to_save`` of ``model``, by name (empty when none)."""
    params = model.params
    return {k: params[k] for k in getattr(model, "modules_to_save_originals", {})}


@contextmanager
def original_values(model: Module) -> Iterator[None]:
    """Inside the block, the ``modules_to_save`` hold their original values; after it, the trained ones again
    (bit for bit: the values are copied out and back, no arithmetic)."""
    live = modules_to_save_params(model)
    trained = {k: v.copy() for k, v in live.items()}
    for k, v in live.items():
        v[...] = model.modules_to_save_originals[k]
    try:
        yield
    finally:
        for k, v in live.items():
            v[...] = trained[k]


def drop_originals(model: Module) -> None:
    """Forget the original copies (``merge_and_unload``/``unload`` keep the trained modules, as PEFT)."""
    if "modules_to_save_originals" in vars(model):
        del model.modules_to_save_originals

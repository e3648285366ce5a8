"""The module protocol: parameters, gradients, a frozen mark, and children addressed by dotted names.

Every layer and model in minilora is a :class:`Module`. The protocol (stable; PEFT wrappers rely on it):

``params``
    ``dict[str, ndarray]`` built on every access from the module's own parameters and, with a dotted
    prefix, its children's (``blocks.0.attn.q_proj.weight``). The arrays are the live parameters:
    optimizers update them **in place** (``p -= lr * g``), never rebind them.
``grads``
    ``dict[str, ndarray]``, same names, for the *trainable* parameters that hold a gradient. Backward
    **accumulates** into them (``+=``), so several backward passes add up (gradient accumulation);
    :meth:`zero_grad` zeroes them (reusing the buffers). Frozen parameters never appear.
``forward(x) -> y`` / ``backward(dout) -> dx``
    Defined by each subclass; forward keeps in ``self.cache`` only what backward needs. The modules a GPT
    block is made of (blocks, attention, LayerNorm, the linear layers and their LoRA / 4-bit replacements)
    also take ``backward(dout, need_dx=False)``: it accumulates the same trainable gradients but skips the
    input gradient and returns None (:meth:`minilora.nn.gpt.GPT.backward`, when nothing below needs it).
``trainable`` mark
    :meth:`is_trainable`, :meth:`freeze`, :meth:`unfreeze`, :meth:`trainable_names`. A frozen parameter
    gets no gradient computed (layers check :meth:`needs_grad` and skip the weight-gradient matmul) and
    no optimizer state.
children
    Assigning a :class:`Module` to an attribute registers it as a child under that attribute's name.
    :meth:`named_modules` yields ``(dotted_name, module)`` pairs (the root is ``""``),
    :meth:`get_submodule` / :meth:`set_submodule` address a child by dotted name, so a wrapper
    (``LoRALinear``) can replace ``blocks.0.attn.q_proj`` and its parameters then appear as
    ``blocks.0.attn.q_proj.lora_A.weight`` in the parent's ``params``.
``training`` flag
    :meth:`train` / :meth:`eval` set it on the whole tree (dropout reads it).
``to(dtype)``
    Casts every parameter (``"float64"`` for gradient checks) and drops gradients and caches.
caches
    A cache holds arrays that belong to it: no module keeps another module's work buffer, and a forward
    allocates what it returns, so a second forward before the backward leaves the first one's cache
    intact (``tests/nn/test_caches.py``), and the arrays a model keeps are its parameters, gradients and
    caches, nothing else (what :mod:`minilora.peft.memory` counts).

Departure from PyTorch: no autograd graph. Each module's ``backward`` is written by hand and must be
called in reverse order of the forwards (a model's ``backward`` does that for its children).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from minilora import backend


class Module:
    """Base class: own parameters in ``_params``, children in ``_modules``, the protocol above."""

    def __init__(self) -> None:
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_grads", {})
        object.__setattr__(self, "_trainable", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "cache", None)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        modules = self.__dict__.get("_modules")
        if isinstance(value, Module):
            if modules is None:
                raise TypeError(f"call Module.__init__() before assigning submodule {name!r}")
            modules[name] = value
        elif modules is not None and name in modules:
            del modules[name]
        object.__setattr__(self, name, value)

    def add_param(self, name: str, value: np.ndarray, trainable: bool = True) -> np.ndarray:
        """Register an own parameter (a plain name, no dots) and return it."""
        if "." in name:
            raise ValueError(f"own parameter name must not contain '.', got {name!r}")
        self._params[name] = value
        self._trainable[name] = bool(trainable)
        return value

    # ------------------------------------------------------------------ the tree
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield ``(dotted_name, module)`` for self (named ``prefix``, ``""`` at the root) and all below."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> Iterator[tuple[str, Module]]:
        """Direct children as ``(name, module)``."""
        return iter(list(self._modules.items()))

    def get_submodule(self, name: str) -> Module:
        """The module at dotted ``name`` (``""`` is self)."""
        mod: Module = self
        for part in filter(None, name.split(".")):
            if part not in mod._modules:
                raise ValueError(f"no submodule {name!r}: {part!r} is not a child of {type(mod).__name__} "
                                 f"(children: {list(mod._modules)})")
            mod = mod._modules[part]
        return mod

    def set_submodule(self, name: str, module: Module) -> None:
        """Replace the child at dotted ``name`` by ``module`` (e.g. a Linear by a LoRALinear)."""
        if not isinstance(module, Module):
            raise TypeError(f"module must be a Module, got {type(module).__name__}")
        parent_name, _, leaf = name.rpartition(".")
        parent = self.get_submodule(parent_name)
        if leaf not in parent._modules:
            raise ValueError(f"no submodule {name!r} to replace (children of {parent_name or 'root'!r}: "
                             f"{list(parent._modules)})")
        parent._set_child(leaf, module)

    def _set_child(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    def _walk(self) -> Iterator[tuple[str, Module]]:
        for name, mod in self.named_modules():
            yield (name + "." if name else ""), mod

    # ------------------------------------------------------------------ params / grads
    @property
    def params(self) -> dict[str, np.ndarray]:
        """All parameters, flat, keyed by dotted name (live arrays: update them in place)."""
        return {p + k: v for p, mod in self._walk() for k, v in mod._params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the trainable parameters that hold one, keyed like :attr:`params`."""
        return {p + k: g for p, mod in self._walk() for k, g in mod._grads.items() if mod._trainable[k]}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters, keyed like :attr:`params` (on the model's backend)."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters in place; shapes must match; with ``strict`` the names too.

        The arrays may be host (NumPy) or backend arrays; they are moved to the backend and cast to each
        parameter's dtype.
        """
        params = self.params
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict names do not match: missing {missing}, unexpected {unexpected}")
        xp = backend.xp()
        arrays = {k: xp.asarray(v) for k, v in state.items() if k in params}
        for k, v in arrays.items():  # every shape checked before anything is copied
            if v.shape != params[k].shape:
                raise ValueError(f"state_dict[{k!r}] has shape {v.shape}, "
                                 f"the parameter has {params[k].shape}")
        for k, v in arrays.items():
            params[k][...] = v

    def _locate(self, name: str) -> tuple[Module, str]:
        mod_name, _, leaf = name.rpartition(".")
        mod = self.get_submodule(mod_name)
        if leaf not in mod._params:
            raise ValueError(f"no parameter {name!r}; parameters: {list(self.params)}")
        return mod, leaf

    # ------------------------------------------------------------------ trainable mark
    def is_trainable(self, name: str) -> bool:
        """Whether parameter ``name`` (dotted) is trainable."""
        mod, leaf = self._locate(name)
        return mod._trainable[leaf]

    def needs_grad(self, name: str) -> bool:
        """Whether an own parameter (plain name) is trainable: layers skip its gradient when not."""
        return self._trainable.get(name, False)

    def trainable_names(self) -> list[str]:
        """Dotted names of the trainable parameters, in :attr:`params` order."""
        return [p + k for p, mod in self._walk() for k, t in mod._trainable.items() if t]

    def _set_trainable(self, names: Iterable[str] | None, flag: bool) -> Module:
        if names is None:
            names = list(self.params)
        elif isinstance(names, str):
            names = [names]
        for name in names:
            mod, leaf = self._locate(name)
            mod._trainable[leaf] = flag
            if not flag:
                mod._grads.pop(leaf, None)
        return self

    def freeze(self, names: Iterable[str] | str | None = None) -> Module:
        """Mark the named parameters (all when None) frozen and drop their gradients."""
        return self._set_trainable(names, False)

    def unfreeze(self, names: Iterable[str] | str | None = None) -> Module:
        """Mark the named parameters (all when None) trainable."""
        return self._set_trainable(names, True)

    # ------------------------------------------------------------------ gradients
    def zero_grad(self) -> None:
        """Set the gradient of every trainable parameter to zero (buffers reused); drop frozen ones."""
        xp = backend.xp()
        for _, mod in self.named_modules():
            for k, p in mod._params.items():
                if not mod._trainable[k]:
                    mod._grads.pop(k, None)
                elif k in mod._grads and mod._grads[k].shape == p.shape and mod._grads[k].dtype == p.dtype:
                    mod._grads[k].fill(0)
                else:
                    mod._grads[k] = xp.zeros_like(p)

    def accumulate_grad(self, name: str, g: np.ndarray | None) -> None:
        """Add ``g`` into the gradient of own trainable parameter ``name`` (no-op when frozen or None)."""
        if g is None or not self._trainable.get(name, False):
            return
        buf = self._grads.get(name)
        if buf is None:
            self._grads[name] = backend.xp().array(g, dtype=self._params[name].dtype)
        else:
            buf += g

    # ------------------------------------------------------------------ modes and dtype
    def train(self, mode: bool = True) -> Module:
        """Set the training flag on the whole tree (dropout is active only in training)."""
        for _, mod in self.named_modules():
            object.__setattr__(mod, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype: str | np.dtype) -> Module:
        """Cast every parameter to ``dtype`` in the whole tree; drops gradients and caches."""
        dtype = np.dtype(dtype)
        for _, mod in self.named_modules():
            for k in list(mod._params):
                mod._params[k] = mod._params[k].astype(dtype)
            mod._grads.clear()
            object.__setattr__(mod, "cache", None)
        return self

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first parameter (float32 unless cast)."""
        for v in self.params.values():
            return v.dtype
        return np.dtype("float32")

    def num_params(self, trainable_only: bool = False) -> int:
        names = set(self.trainable_names()) if trainable_only else None
        return int(sum(v.size for k, v in self.params.items() if names is None or k in names))

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules whose children are named ``"0"``, ``"1"``, ... (``blocks.0.attn...``)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def _set_child(self, name: str, module: Module) -> None:
        self._modules[name] = module

    def __getitem__(self, i: int) -> Module:
        return self._modules[str(i % len(self) if i < 0 else i)]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

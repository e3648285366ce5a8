"""Small building blocks the prompt encoders and adapters share: activations and a ``Sequential``.

PEFT builds its prompt encoders from ``torch.nn.Sequential(Linear, ReLU, Linear, ...)`` and AdapterHub its
bottlenecks from ``Sequential(Linear, activation)``; so the trained parameters have names like
``mlp_head.0.weight`` and ``adapter_down.0.weight``. :class:`Sequential` gives minilora the same names
(children ``"0"``, ``"1"``, ...) and runs the children's backward passes in reverse.

Each activation is its formula, forward and backward side by side, with the backward's derivative in
terms of the forward's cache (llm.c's shape):

==========  ================================  ========================================
name        forward                           derivative
==========  ================================  ========================================
relu        ``max(x, 0)``                     ``1[x > 0]``
tanh        ``t = tanh(x)``                   ``1 − t²``
swish       ``x · σ(x)`` (= SiLU)              ``σ(x) (1 + x (1 − σ(x)))``
gelu_new    GELU, tanh approximation          see :func:`minilora.nn.functional.gelu_backward`
==========  ================================  ========================================

``σ(x) = (1 + tanh(x / 2)) / 2`` is the logistic sigmoid written without ``exp`` overflow. The names are
those of ``transformers.activations`` (``"swish"`` and ``"silu"`` are the same function there; so here).
Departure: the exact (erf) ``"gelu"`` is not offered; ``"gelu_new"`` is the tanh approximation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from minilora import backend
from minilora.nn import functional as F
from minilora.nn.module import Module, ModuleList


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` as ``(1 + tanh(x/2)) / 2`` (no overflow for large ``|x|``).

    >>> float(sigmoid(backend.xp().asarray(0.0)))
    0.5
    """
    return 0.5 * (1.0 + backend.xp().tanh(0.5 * x))


def tanh_forward(x: np.ndarray):
    t = backend.xp().tanh(x)
    return t, t


def tanh_backward(dout: np.ndarray, t: np.ndarray) -> np.ndarray:
    return dout * (1.0 - t * t)


def swish_forward(x: np.ndarray):
    s = sigmoid(x)
    return x * s, (x, s)


def swish_backward(dout: np.ndarray, cache) -> np.ndarray:
    x, s = cache
    return dout * s * (1.0 + x * (1.0 - s))


#: name -> (forward(x) -> (y, cache), backward(dout, cache) -> dx)
ACTIVATIONS = {
    "relu": (F.relu_forward, F.relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "swish": (swish_forward, swish_backward),
    "silu": (swish_forward, swish_backward),
    "gelu_new": (F.gelu_forward, F.gelu_backward),
}


class Activation(Module):
    """A parameter-free nonlinearity from :data:`ACTIVATIONS` (``"relu"``, ``"tanh"``, ``"swish"``, ...)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
            raise ValueError(f"non_linearity must be one of {sorted(ACTIVATIONS)}, got {name!r}")
        self.name = name.lower()

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, self.cache = ACTIVATIONS[self.name][0](x)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = ACTIVATIONS[self.name][1](dout, self.cache)
        self.cache = None
        return dx

    def extra_repr(self) -> str:
        return repr(self.name)


class Sequential(ModuleList):
    """Children ``"0"``, ``"1"``, ... applied in order; ``backward`` runs them in reverse (``nn.Sequential``)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__(modules)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for module in self:
            x = module.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for module in reversed(list(self)):
            dout = module.backward(dout)
        return dout


__all__ = ["ACTIVATIONS", "Activation", "Sequential", "sigmoid"]

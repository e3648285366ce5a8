"""Optimizers that update a model's trainable parameters in place: SGD, Adam, AdamW; global-norm clipping.

All three follow PyTorch's ``torch.optim`` update rules exactly (tests check them against updates computed
by hand):

* :class:`SGD` — ``g += wd * p``; with momentum ``buf = mu * buf + g`` (``buf = g`` on the first step,
  dampening 0), Nesterov ``g = g + mu * buf`` else ``g = buf``; ``p -= lr * g``.
* :class:`Adam` (Kingma & Ba 2015, Alg. 1) — ``g += wd * p`` (L2 folded into the gradient);
  ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``.
* :class:`AdamW` (Loshchilov & Hutter 2019, Alg. 2) — decoupled decay ``p *= 1 - lr * wd`` before the
  Adam step, which uses the raw gradient. With Adam + L2 the decay passes through ``1/sqrt(v)`` and is
  weaker on weights with large gradients; with AdamW every weight decays at the same rate.

Only trainable parameters that hold a gradient are updated, and only they get optimizer state
(``state_bytes()`` measures it: 0 for plain SGD, one buffer for SGD with momentum, two for Adam/AdamW —
the memory argument of the blog's training-strategy section). Departure from PyTorch: no parameter
groups; a weight-decay ``exclude`` predicate on names plays their usual role (e.g. no decay on biases).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from minilora.nn.module import Module


def grad_norm(grads: dict[str, np.ndarray]) -> float:
    """Global L2 norm ``sqrt(sum_i ||g_i||^2)`` over all gradients (accumulated in float64)."""
    return float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: the factor is ``max_norm / (norm + 1e-6)``, applied when < 1.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    norm = grad_norm(grads)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return norm


class Optimizer:
    """Base: the model, the learning rate ``lr`` (a schedule may set it each step), per-name state."""

    def __init__(self, model: Module, lr: float, weight_decay: float = 0.0,
                 exclude: Callable[[str], bool] | None = None) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"model must be a minilora Module, got {type(model).__name__}")
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.model, self.lr, self.weight_decay = model, float(lr), float(weight_decay)
        self.exclude = exclude or (lambda name: False)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.t = 0

    def _items(self):
        params, grads = self.model.params, self.model.grads
        for name in self.model.trainable_names():
            if name in grads:
                yield name, params[name], grads[name]

    def _decay(self, name: str) -> float:
        return 0.0 if self.exclude(name) else self.weight_decay

    def step(self) -> None:
        """Update every trainable parameter that holds a gradient, in place."""
        self.t += 1
        for name, p, g in self._items():
            self._update(name, p, g)

    def zero_grad(self) -> None:
        self.model.zero_grad()

    def state_bytes(self) -> int:
        """Bytes of optimizer state held (the arrays in ``state``)."""
        return int(sum(a.nbytes for s in self.state.values() for a in s.values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, weight_decay={self.weight_decay}{self._extra()})"

    def _extra(self) -> str:
        return ""


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay (PyTorch's rule)."""

    def __init__(self, model: Module, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, exclude: Callable[[str], bool] | None = None) -> None:
        super().__init__(model, lr, weight_decay, exclude)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        wd = self._decay(name)
        if wd:
            g = g + p.dtype.type(wd) * p
        if self.momentum:
            s = self.state.get(name)
            if s is None:
                self.state[name] = s = {"momentum_buffer": g.copy()}
            else:
                buf = s["momentum_buffer"]
                buf *= p.dtype.type(self.momentum)
                buf += g
            buf = s["momentum_buffer"]
            g = g + p.dtype.type(self.momentum) * buf if self.nesterov else buf
        p -= p.dtype.type(self.lr) * g

    def _extra(self) -> str:
        return f", momentum={self.momentum}, nesterov={self.nesterov}"


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (PyTorch's ``Adam``)."""

    decoupled = False

    def __init__(self, model: Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 exclude: Callable[[str], bool] | None = None) -> None:
        super().__init__(model, lr, weight_decay, exclude)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        (b1, b2), wd, dt = self.betas, self._decay(name), p.dtype.type
        if wd and self.decoupled:
            p *= dt(1.0 - self.lr * wd)  # AdamW: decay the weight itself, outside the adaptive step
        elif wd:
            g = g + dt(wd) * p  # Adam: L2 penalty folded into the gradient
        s = self.state.get(name)
        if s is None:
            self.state[name] = s = {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m *= dt(b1)
        m += dt(1 - b1) * g
        v *= dt(b2)
        v += dt(1 - b2) * (g * g)
        bc1, bc2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        denom = np.sqrt(v)
        denom *= dt(1.0 / np.sqrt(bc2))
        denom += dt(self.eps)
        p -= dt(self.lr / bc1) * m / denom

    def _extra(self) -> str:
        return f", betas={self.betas}, eps={self.eps}"


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, Alg. 2; PyTorch's ``AdamW``, default 0.01)."""

    decoupled = True

    def __init__(self, model: Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01,
                 exclude: Callable[[str], bool] | None = None) -> None:
        super().__init__(model, lr, betas, eps, weight_decay, exclude)


__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm", "grad_norm"]

"""Optimizers that update a model's trainable parameters in place: SGD, Adam, AdamW; global-norm clipping.

All three follow PyTorch's ``torch.optim`` update rules (``tests/test_optim.py`` replays gradient sequences
through them and compares every step with trajectories torch made, ``tests/golden/optim.npz``):

* :class:`SGD` — ``g += wd * p``; with momentum ``buf = mu * buf + g`` (``buf = g`` on the first step,
  dampening 0), Nesterov ``g = g + mu * buf`` else ``g = buf``; ``p -= lr * g``.
* :class:`Adam` (Kingma & Ba 2015, Alg. 1) — ``g += wd * p`` (L2 folded into the gradient);
  ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``.
* :class:`AdamW` (Loshchilov & Hutter 2019, Alg. 2) — decoupled decay ``p *= 1 - lr * wd`` before the
  Adam step, which uses the raw gradient. With Adam + L2 the decay passes through ``1/sqrt(v)`` and is
  weaker on weights with large gradients; with AdamW every weight decays at the same rate.

The step ``t`` of the bias correction is counted **per parameter**, as torch's ``state[p]["step"]``: it
counts the updates that parameter received. A parameter whose first gradient arrives late (a layer unfrozen
at step 3) starts at ``t = 1`` and moves ``lr * sign(g)`` on its first update, as every parameter does.

Only trainable parameters that hold a gradient are updated (a frozen parameter is torch's ``grad is None``:
no update, no step counted; a gradient of zeros is an update), and only they get optimizer state
(``state_bytes()`` measures it: 0 for plain SGD, one buffer for SGD with momentum, two for Adam/AdamW —
the memory argument of the blog's training-strategy section).

Departures from PyTorch: no parameter groups, a weight-decay ``exclude`` predicate on names plays their
usual role (e.g. no decay on biases); ``state`` and ``state_dict()`` are keyed by parameter name, not by
index; no ``dampening``, ``amsgrad``, ``maximize``, ``foreach``/``fused``; ``eps`` must be > 0 (torch allows
0, which divides 0 by 0 for a parameter whose gradients were all zero). The update arithmetic is the
paper's, one operation per line, so it can differ from torch's fused kernels (``lerp``, ``addcmul``) in the
last bits of each step; the golden test bounds that difference.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from minilora import backend
from minilora.nn.module import Module


def grad_norm(grads: Mapping[str, Any]) -> float:
    """Global L2 norm ``sqrt(sum_i ||g_i||^2)`` over all gradients, accumulated in float64.

    Parameters
    ----------
    grads : name -> gradient array (any shape, float16/32/64).

    Returns
    -------
    float
        The norm. Each gradient is read as float64 (a float64 temporary of its size for narrower dtypes), so
        the result does not drift with the number of elements: ``10^7`` float32 values ``0.1`` give
        316.22777 (a float32 dot product gives 316.35). Departure: torch reduces float32 gradients in
        float32 (it returns 313.77 on that example); minilora's float64 sum errs by at most ``n * 2**-53``
        relative for ``n`` elements.

    Examples
    --------
    >>> import numpy as np
    >>> grad_norm({"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])})
    5.0
    """
    xp = backend.xp()
    total = xp.zeros((), dtype=xp.float64)
    for g in grads.values():
        g64 = g.astype(xp.float64, copy=False)
        total += xp.vdot(g64, g64)
    return float(xp.sqrt(total))


def clip_grad_norm(grads: Mapping[str, Any], max_norm: float, error_if_nonfinite: bool = False) -> float:
    """Scale all gradients in place so their global norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: the factor is ``max_norm / (norm + 1e-6)``, clamped to 1, so the
    gradients are scaled whenever ``norm + 1e-6 > max_norm`` (a norm exactly at ``max_norm`` is scaled by
    ``1 - 1e-6 / max_norm``); a factor of 1 would change nothing and is skipped. A non-finite norm scales
    like torch: ``inf`` gives the factor 0 (every finite gradient becomes 0), ``NaN`` makes every gradient NaN
    — unless ``error_if_nonfinite`` asks for an error instead. The factor is computed in float64 and rounded
    once to each gradient's dtype (torch computes ``max_norm * (1 / (norm + 1e-6))`` in the gradients' dtype:
    clipped float32 gradients may differ from torch's in the last bit).

    Parameters
    ----------
    grads : name -> gradient array, modified in place (each keeps its dtype).
    max_norm : the largest norm allowed (> 0; torch also accepts 0 and negative values).
    error_if_nonfinite : raise ``RuntimeError`` (torch's type) when the norm is ``inf`` or ``NaN``.

    Returns
    -------
    float
        The global norm before clipping (:func:`grad_norm`).

    Examples
    --------
    >>> import numpy as np
    >>> g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    >>> clip_grad_norm(g, 1.0)
    5.0
    >>> round(grad_norm(g), 6)
    1.0
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not max_norm > 0:
        raise ValueError(f"max_norm must be a number > 0, got {max_norm!r}")
    norm = grad_norm(grads)
    if error_if_nonfinite and not math.isfinite(norm):
        bad = [k for k, g in grads.items() if not bool(backend.xp().isfinite(g).all())]
        raise RuntimeError(f"the total gradient norm is {norm}: non-finite values in {bad} "
                           "(error_if_nonfinite=True)")
    coef = float(max_norm) / (norm + 1e-6)
    if coef < 1.0 or math.isnan(coef):
        for g in grads.values():
            g *= g.dtype.type(coef)
    return norm


def _real(value: Any, arg: str) -> float:
    """``value`` as a float, or a ValueError naming ``arg`` when it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{arg} must be a finite real number, got {value!r}")
    return float(value)


def _unit(value: Any, arg: str) -> float:
    """``value`` in [0, 1) (momentum, each beta), else a ValueError naming ``arg``."""
    value = _real(value, arg)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{arg} must be in [0, 1), got {value!r}")
    return value


class Optimizer:
    """Base: the model, the learning rate ``lr`` (a schedule may set it each step), per-name ``state``.

    Subclasses name their hyper-parameters in ``hyperparams`` (shown by ``repr``, saved by
    :meth:`state_dict`) and what they keep per parameter in ``state_keys`` (the arrays: ``state_arrays``).
    """

    hyperparams: tuple[str, ...] = ("lr", "weight_decay")
    state_keys: tuple[str, ...] = ()  # what state[name] may hold
    state_arrays: tuple[str, ...] = ()  # ... of which the arrays (the rest: the step counter)

    def __init__(self, model: Module, lr: float, weight_decay: float = 0.0,
                 exclude: Callable[[str], bool] | None = None) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"model must be a minilora Module, got {type(model).__name__}")
        if exclude is not None and not callable(exclude):
            raise TypeError(f"exclude must be a callable name -> bool or None, got {type(exclude).__name__}")
        self.model = model
        self.lr = self._check_lr(lr)
        self.weight_decay = self._check_weight_decay(weight_decay)
        self.exclude = exclude or (lambda name: False)
        self.state: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _check_lr(lr: Any) -> float:
        lr = _real(lr, "lr")
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        return lr

    @staticmethod
    def _check_weight_decay(weight_decay: Any) -> float:
        weight_decay = _real(weight_decay, "weight_decay")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        return weight_decay

    def _items(self):
        params, grads = self.model.params, self.model.grads
        for name in self.model.trainable_names():
            if name in grads:
                yield name, params[name], grads[name]

    def _decay(self, name: str) -> float:
        return 0.0 if self.exclude(name) else self.weight_decay

    def step(self) -> None:
        """Update every trainable parameter that holds a gradient, in place."""
        for name, p, g in self._items():
            self._update(name, p, g)

    def _update(self, name: str, p: Any, g: Any) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Zero the model's gradients (``model.zero_grad()``)."""
        self.model.zero_grad()

    def state_bytes(self) -> int:
        """Bytes of the optimizer-state arrays held (``exp_avg``, ``momentum_buffer``, ...).

        The per-parameter ``step`` counters are Python ints on the host (torch keeps its ``step`` on the CPU
        too): one number per parameter, not per element, and not counted here.
        """
        return int(sum(v.nbytes for s in self.state.values() for k, v in s.items() if k in self.state_arrays))

    # ------------------------------------------------------------------ save / restore
    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state, as torch's: ``{"state": {name: {...}}, "param_groups": [{...}]}``.

        ``state`` is keyed by parameter name (torch: by index) and holds copies of the arrays and the
        per-parameter ``step``; the one param group holds the hyper-parameters (``exclude`` is not saved).
        """
        state = {name: {k: (v.copy() if k in self.state_arrays else v) for k, v in s.items()}
                 for name, s in self.state.items()}
        return {"state": state, "param_groups": [{h: getattr(self, h) for h in self.hyperparams}]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (from an optimizer of the same class on the same model).

        Everything is checked before anything changes: the hyper-parameters, the parameter names (each must
        be a parameter of the model), the state keys, the array shapes and values (finite) and the steps
        (ints >= 0). Arrays are cast to the parameter's dtype on the current backend; existing state arrays
        are overwritten in place (a paged optimizer's views stay valid). A parameter absent from
        ``state_dict`` starts afresh.
        """
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError("state_dict must be a mapping with the keys 'state' and 'param_groups' "
                             f"(from {type(self).__name__}.state_dict()), got {got}")
        groups = state_dict["param_groups"]
        if len(groups) != 1 or set(groups[0]) != set(self.hyperparams):
            raise ValueError(f"state_dict['param_groups'] must be one group with the keys {list(self.hyperparams)} "
                             f"of {type(self).__name__}, got {[sorted(g) for g in groups]}")
        hyper = self._checked_hyperparams(dict(groups[0]))
        new = {name: self._checked_entry(name, s) for name, s in state_dict["state"].items()}
        for h, value in hyper.items():  # all checked: now change
            setattr(self, h, value)
        for name in list(self.state):
            if name not in new:
                self._fresh(name)
        for name, entry in new.items():
            s = self.state.setdefault(name, {})
            s.pop("step", None)
            for k, v in entry.items():
                if k != "step" and k in s and s[k].shape == v.shape and s[k].dtype == v.dtype:
                    s[k][...] = v  # in place: views of s[k] (a paged buffer) stay valid
                else:
                    s[k] = v

    def _checked_entry(self, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """One parameter's saved state, checked, its arrays converted (a new dict; raises ValueError)."""
        params, xp = self.model.params, backend.xp()
        where = f"state_dict['state'][{name!r}]"
        if name not in params:
            raise ValueError(f"{where}: {name!r} is not a parameter of the model")
        if not set(self.state_arrays) <= set(entry) <= set(self.state_keys):
            raise ValueError(f"{where} has keys {sorted(entry)}; {type(self).__name__} keeps "
                             f"{list(self.state_keys)} (arrays {list(self.state_arrays)} required)")
        out: dict[str, Any] = {}
        for k, v in entry.items():
            if k == "step":
                if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                    raise ValueError(f"{where}['step'] must be an int >= 0, got {v!r}")
                out[k] = int(v)
                continue
            v = xp.array(v, dtype=params[name].dtype)  # a copy: the caller's arrays stay theirs
            if v.shape != params[name].shape:
                raise ValueError(f"{where}[{k!r}] has shape {v.shape}, the parameter has {params[name].shape}")
            if not bool(xp.isfinite(v).all()):
                raise ValueError(f"{where}[{k!r}] holds NaN or inf")
            out[k] = v
        return out

    def _fresh(self, name: str) -> None:
        """Forget parameter ``name``'s state (arrays zeroed in place, step dropped): the next update is a first."""
        s = self.state[name]
        s.pop("step", None)
        for k in self.state_arrays:
            if k in s:
                s[k][...] = 0

    def _checked_hyperparams(self, hyper: dict[str, Any]) -> dict[str, Any]:
        hyper["lr"] = self._check_lr(hyper["lr"])
        hyper["weight_decay"] = self._check_weight_decay(hyper["weight_decay"])
        return hyper

    def __repr__(self) -> str:
        args = ", ".join(f"{h}={getattr(self, h)!r}" for h in self.hyperparams)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay (PyTorch's rule).

    Parameters
    ----------
    model : the Module whose trainable parameters are updated.
    lr : learning rate (>= 0).
    momentum : in [0, 1); 0 keeps no state.
    nesterov : Nesterov momentum (needs ``momentum > 0``).
    weight_decay : L2 coefficient added to the gradient (>= 0).
    exclude : ``name -> bool``; True means no weight decay for that parameter.

    Examples
    --------
    >>> from minilora.nn import Linear
    >>> SGD(Linear(2, 2, seed=0), lr=0.1, momentum=0.9)
    SGD(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0)
    """

    hyperparams = ("lr", "momentum", "nesterov", "weight_decay")
    state_keys = state_arrays = ("momentum_buffer",)

    def __init__(self, model: Module, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, exclude: Callable[[str], bool] | None = None) -> None:
        super().__init__(model, lr, weight_decay, exclude)
        self.momentum, self.nesterov = self._check_momentum(momentum, nesterov)

    @staticmethod
    def _check_momentum(momentum: Any, nesterov: Any) -> tuple[float, bool]:
        momentum = _unit(momentum, "momentum")
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0.0")
        return momentum, nesterov

    def _checked_hyperparams(self, hyper: dict[str, Any]) -> dict[str, Any]:
        hyper = super()._checked_hyperparams(hyper)
        hyper["momentum"], hyper["nesterov"] = self._check_momentum(hyper["momentum"], hyper["nesterov"])
        return hyper

    def _update(self, name: str, p: Any, g: Any) -> None:
        wd, dt = self._decay(name), p.dtype.type
        if wd:
            g = g + dt(wd) * p
        if self.momentum:
            s = self.state.setdefault(name, {})
            if "momentum_buffer" not in s:
                s["momentum_buffer"] = g.copy()  # first step: the buffer is the gradient (dampening 0)
            else:
                buf = s["momentum_buffer"]
                buf *= dt(self.momentum)
                buf += g
            buf = s["momentum_buffer"]
            g = g + dt(self.momentum) * buf if self.nesterov else buf
        p -= dt(self.lr) * g


class Adam(Optimizer):
    """Adam with per-parameter bias correction; ``weight_decay`` is L2 added to the gradient (PyTorch's ``Adam``).

    Parameters
    ----------
    model : the Module whose trainable parameters are updated.
    lr : learning rate (>= 0).
    betas : ``(b1, b2)``, each in [0, 1): decay rates of the first and second moment.
    eps : added to ``sqrt(v_hat)`` (> 0).
    weight_decay : L2 coefficient (>= 0); :class:`AdamW` decouples it instead.
    exclude : ``name -> bool``; True means no weight decay for that parameter.

    ``state[name]`` holds ``step`` (int: the updates this parameter received, torch's ``state[p]["step"]``),
    ``exp_avg`` and ``exp_avg_sq`` (arrays of the parameter's shape and dtype).

    Examples
    --------
    >>> import numpy as np
    >>> from minilora.nn import Linear
    >>> m = Linear(2, 1, seed=0).to("float64")
    >>> opt = Adam(m, lr=0.1)
    >>> opt
    Adam(lr=0.1, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0)
    >>> w0 = m.params["weight"].copy()
    >>> m.zero_grad(); m.grads["weight"][...] = [[0.5, -2.0]]; opt.step()
    >>> (m.params["weight"] - w0).round(9)   # the first update is lr * sign(g), whatever |g|
    array([[-0.1,  0.1]])
    >>> opt.state["weight"]["step"]
    1
    """

    hyperparams = ("lr", "betas", "eps", "weight_decay")
    state_keys = ("step", "exp_avg", "exp_avg_sq")
    state_arrays = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, model: Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 exclude: Callable[[str], bool] | None = None) -> None:
        super().__init__(model, lr, weight_decay, exclude)
        self.betas, self.eps = self._check_betas(betas), self._check_eps(eps)

    @staticmethod
    def _check_betas(betas: Any) -> tuple[float, float]:
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        return _unit(betas[0], "betas[0]"), _unit(betas[1], "betas[1]")

    @staticmethod
    def _check_eps(eps: Any) -> float:
        eps = _real(eps, "eps")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        return eps

    def _checked_hyperparams(self, hyper: dict[str, Any]) -> dict[str, Any]:
        hyper = super()._checked_hyperparams(hyper)
        hyper["betas"], hyper["eps"] = self._check_betas(hyper["betas"]), self._check_eps(hyper["eps"])
        return hyper

    def _update(self, name: str, p: Any, g: Any) -> None:
        xp = backend.xp()
        (b1, b2), wd, dt = self.betas, self._decay(name), p.dtype.type
        if wd and self.decoupled:
            p *= dt(1.0 - self.lr * wd)  # AdamW: decay the weight itself, outside the adaptive step
        elif wd:
            g = g + dt(wd) * p  # Adam: L2 penalty folded into the gradient
        s = self.state.setdefault(name, {})
        if "exp_avg" not in s:
            s["exp_avg"], s["exp_avg_sq"] = xp.zeros_like(p), xp.zeros_like(p)
        s["step"] = t = s.get("step", 0) + 1  # this parameter's own step count, as torch's state[p]["step"]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m *= dt(b1)
        m += dt(1 - b1) * g                   # m = b1 m + (1 - b1) g
        v *= dt(b2)
        v += dt(1 - b2) * g * g               # v = b2 v + (1 - b2) g^2
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        denom = xp.sqrt(v) / dt(bc2**0.5) + dt(self.eps)  # sqrt(v_hat) + eps
        p -= dt(self.lr / bc1) * m / denom    # p -= lr m_hat / (sqrt(v_hat) + eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, Alg. 2; PyTorch's ``AdamW``, default 0.01).

    Parameters are those of :class:`Adam`; ``weight_decay`` multiplies the weight by ``1 - lr * wd`` before
    each update instead of entering the gradient.

    Examples
    --------
    >>> from minilora.nn import Linear
    >>> AdamW(Linear(2, 2, seed=0), lr=3e-4, weight_decay=0.1)
    AdamW(lr=0.0003, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.1)
    """

    decoupled = True

    def __init__(self, model: Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01,
                 exclude: Callable[[str], bool] | None = None) -> None:
        super().__init__(model, lr, betas, eps, weight_decay, exclude)


__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm", "grad_norm"]

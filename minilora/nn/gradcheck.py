"""Finite-difference gradient checks in float64.

Every analytic gradient in minilora is compared with the central difference

.. math::
    \\frac{\\partial L}{\\partial \\theta_i} \\approx
    \\frac{L(\\theta + h e_i) - L(\\theta - h e_i)}{2h},

whose error is O(h^2) (plus round-off of order eps_64 / h). A layer with output ``y`` is turned into a
scalar the llm.c way, ``L = sum(y * dout)`` with a fixed random ``dout``; a model that returns a loss
uses the loss itself.

The reported error for one array is ``max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|, floor)``: the
largest element-wise difference relative to the gradient's own scale, so elements whose true gradient
is ~0 do not blow it up. ``floor = 1e-4`` turns it into an absolute error for gradients that are zero
by symmetry (a key bias in attention: softmax ignores a constant added to every score), where both
sides are round-off. PyTorch's ``gradcheck`` uses an absolute plus relative tolerance instead.
The step is ``h = 1e-5``: truncation (h^2) and round-off (eps_64 / h) are both ~1e-10 there.

Two entry points:

* :func:`check_function` for a ``forward(*inputs) -> (out, cache)`` / ``backward(dout, cache)`` pair;
* :func:`gradcheck` for a :class:`~minilora.nn.module.Module` (every trainable parameter and the
  input), or for a model whose ``forward(x, targets)`` returns ``(out, loss)`` and ``backward()`` takes no
  argument (pass ``targets``).

Both run on any backend (:mod:`minilora.backend`); the errors are computed on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minilora import backend
from minilora.nn.module import Module

FLOOR = 1e-4
H = 1e-5


def rel_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = FLOOR) -> float:
    """``max|a - n| / max(max|a|, max|n|, floor)`` (host work: both are copied to NumPy float64)."""
    a = backend.to_numpy(analytic).astype(np.float64)
    n = backend.to_numpy(numeric).astype(np.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic and numeric gradients differ in shape: {a.shape} vs {n.shape}")
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0))
    return float(np.abs(a - n).max(initial=0.0) / max(scale, floor))


def numeric_grad(f: Callable[[], float], x: np.ndarray, h: float = H) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` with respect to ``x``, perturbed in place."""
    xp = backend.xp()
    g = xp.zeros_like(x, dtype=xp.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    if not xp.shares_memory(flat, x):
        raise ValueError("x must be contiguous so that it can be perturbed in place")
    for i in range(flat.size):  # one coordinate at a time: this is the slow reference, on tiny inputs
        old = float(flat[i])  # a Python copy: on CuPy, flat[i] is a view that the next line would change
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return g


def _random_like(out, seed: int):
    """A fixed float64 upstream gradient shaped like ``out``, drawn on the host, on the current backend."""
    return backend.xp().asarray(np.random.default_rng(seed).standard_normal(out.shape))


def check_function(forward: Callable[..., tuple[Any, Any]], backward: Callable[[Any, Any], Any],
                   inputs: Sequence[Any], wrt: Sequence[int] | None = None, h: float = H,
                   seed: int = 0) -> dict[int, float]:
    """Check ``backward`` of a functional pair against finite differences.

    Parameters
    ----------
    forward : ``forward(*inputs) -> (out, cache)``; ``out`` an array or a scalar loss.
    backward : ``backward(dout, cache)`` returning one gradient or a tuple, in the order of ``wrt``.
    inputs : the forward's positional arguments; arrays to check must be float64.
    wrt : indices of the inputs whose gradients ``backward`` returns (default: every float array).

    Returns
    -------
    dict mapping input index -> relative error (see module docstring).
    """
    inputs = list(inputs)
    if wrt is None:
        wrt = [i for i, a in enumerate(inputs) if backend.is_array(a) and a.dtype.kind == "f"]
    for i in wrt:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"inputs[{i}] must be float64 for a gradient check, got {inputs[i].dtype}")
    out, cache = forward(*inputs)
    scalar = not backend.is_array(out) or out.ndim == 0
    dout = 1.0 if scalar else _random_like(out, seed)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) < len(wrt):
        raise ValueError(f"backward returned {len(grads)} gradients, wrt has {len(wrt)}")
    if scalar:
        loss = lambda: float(forward(*inputs)[0])
    else:
        loss = lambda: float((forward(*inputs)[0] * dout).sum())
    return {i: rel_error(g, numeric_grad(loss, inputs[i], h)) for i, g in zip(wrt, grads)}


def gradcheck(module: Module, x: np.ndarray, targets: np.ndarray | None = None, h: float = H,
              seed: int = 0, check_input: bool = True) -> dict[str, float]:
    """Check every trainable parameter's gradient (and the input's) of a float64 module.

    Parameters
    ----------
    module : a Module in float64 (``module.to("float64")``); dropout should be off (``module.eval()``).
    x : the input; checked too when it is a float array and ``check_input``.
    targets : when given, ``module.forward(x, targets)`` must return ``(out, loss)`` and ``backward()``
        takes no argument (a model with a loss). Otherwise ``L = sum(forward(x) * dout)``.

    Returns
    -------
    dict mapping parameter name (and ``"input"``) -> relative error.
    """
    if module.dtype != np.float64:
        raise TypeError(f"module must be float64 for a gradient check (call .to('float64')), "
                        f"got {module.dtype}")
    if targets is None:
        dout = _random_like(module.forward(x), seed)
        loss = lambda: float((module.forward(x) * dout).sum())
        module.zero_grad()
        module.forward(x)
        dx = module.backward(dout)
    else:
        loss = lambda: float(module.forward(x, targets)[1])
        module.zero_grad()
        module.forward(x, targets)
        dx = module.backward()
    grads = {k: g.copy() for k, g in module.grads.items()}
    params = module.params
    report = {k: rel_error(grads[k], numeric_grad(loss, params[k], h)) for k in module.trainable_names()}
    if check_input and backend.is_array(x) and x.dtype.kind == "f" and dx is not None:
        report["input"] = rel_error(dx, numeric_grad(loss, x, h))
    return report

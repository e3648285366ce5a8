"""Learning-rate schedules as plain functions of the step: cosine with warmup, constant, linear.

The half-cycle cosine ("cosine annealing", Loshchilov & Hutter 2017, SGDR eq. 5 without restarts) after a
linear warmup, as in Hugging Face's ``get_cosine_schedule_with_warmup``::

    lr(s) = lr_max * (s / warmup)                                               s < warmup
    lr(s) = lr_min + (lr_max - lr_min) * 0.5 * (1 + cos(pi * (s - warmup) / (total - warmup)))   s <= total
    lr(s) = lr_min                                                              s > total

so the rate climbs from 0 to ``lr_max`` in ``warmup`` steps and then follows half a cosine period down to
``lr_min`` at step ``total``. Example: ``cosine_with_warmup(55, total=100, warmup=10, lr_max=1.0)`` is 0.5
(half way down). Every function accepts an int or an integer array of steps. The training loop takes
any ``step -> lr`` callable; :func:`make` binds the arguments (``make("cosine", total=..., ...)``).

transformers' schedules are ``LambdaLR`` multipliers of the optimizer's initial rate; these functions return
``lr_max`` times the same multiplier, computed in the same order (``tests/test_schedules.py`` compares them
with the rates transformers' schedulers set, ``tests/golden/optim.npz``). Departure: after ``total`` the
cosine stays at ``lr_min``; transformers' keeps following the cosine, back up towards ``lr_max``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _check(total: int, warmup: int) -> None:
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total!r}")
    if not 0 <= warmup <= total:
        raise ValueError(f"warmup must be in [0, total={total}], got {warmup!r}")


def _out(x: np.ndarray, step) -> float | np.ndarray:
    return float(x) if np.ndim(step) == 0 else x


def _warmup(s: np.ndarray, warmup: int) -> np.ndarray:
    """The warmup multiplier ``s / warmup``, rising from 0 (at step 0) towards 1."""
    return s / max(warmup, 1)


def cosine_with_warmup(step, total: int, warmup: int, lr_max: float, lr_min: float = 0.0):
    """Linear warmup to ``lr_max``, then a half-cycle cosine to ``lr_min`` at ``total`` (see module doc).

    With ``lr_min=0`` this is ``lr_max`` times the multiplier of transformers'
    ``get_cosine_schedule_with_warmup(optimizer, warmup, total)``; with ``lr_min`` that of
    ``get_cosine_with_min_lr_schedule_with_warmup(..., min_lr=lr_min)`` (the warmup still starts at 0).
    Departure: after ``total`` the rate stays at ``lr_min``, where transformers' cosine climbs back up.

    Parameters
    ----------
    step : int or integer array, the step(s) (0-based: the rate of the first update is ``step=0``).
    total, warmup : the step where the cosine reaches ``lr_min``, and the warmup length (0 <= warmup <= total).
    lr_max, lr_min : the peak and the final rate.

    Returns
    -------
    float, or a float64 array of ``step``'s shape.

    Examples
    --------
    >>> [round(cosine_with_warmup(s, total=4, warmup=2, lr_max=1.0), 4) for s in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    _check(total, warmup)
    s = np.asarray(step, dtype=np.float64)
    progress = np.clip((s - warmup) / max(total - warmup, 1), 0.0, 1.0)
    cosine = 0.5 * (1.0 + np.cos(np.pi * progress))  # 1 -> 0 over the decay
    return _out(np.where(s < warmup, lr_max * _warmup(s, warmup), lr_min + (lr_max - lr_min) * cosine), step)


def linear(step, total: int, lr_max: float, warmup: int = 0, lr_min: float = 0.0):
    """Linear warmup, then linear decay from ``lr_max`` to ``lr_min`` at ``total`` (``lr_min`` after it).

    With ``lr_min=0`` this is ``lr_max`` times the multiplier of transformers'
    ``get_linear_schedule_with_warmup(optimizer, warmup, total)``; ``lr_min`` is minilora's extension.

    Examples
    --------
    >>> [linear(s, total=4, lr_max=1.0, warmup=2) for s in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    _check(total, warmup)
    s = np.asarray(step, dtype=np.float64)
    remaining = np.clip((total - s) / max(total - warmup, 1), 0.0, 1.0)  # 1 -> 0 over the decay
    return _out(np.where(s < warmup, lr_max * _warmup(s, warmup), lr_min + (lr_max - lr_min) * remaining), step)


def constant(step, lr: float, warmup: int = 0):
    """``lr`` after an optional linear warmup (transformers' ``get_constant_schedule_with_warmup``).

    Examples
    --------
    >>> [constant(s, 0.1, warmup=2) for s in range(4)]
    [0.0, 0.05, 0.1, 0.1]
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    s = np.asarray(step, dtype=np.float64)
    return _out(np.where(s < warmup, lr * _warmup(s, warmup), lr), step)


SCHEDULES = {"cosine": cosine_with_warmup, "linear": linear, "constant": constant}


def make(name: str, **kwargs) -> Callable[[int], float]:
    """``step -> lr`` with the arguments bound: ``make("cosine", total=1000, warmup=100, lr_max=3e-4)``."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    fn = SCHEDULES[name]
    return lambda step: fn(step, **kwargs)


__all__ = ["cosine_with_warmup", "linear", "constant", "make", "SCHEDULES"]

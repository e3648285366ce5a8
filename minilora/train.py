"""The training loop: micro-batches, gradient accumulation, clipping, a schedule, evaluation, history.

One optimizer step is::

    model.zero_grad()
    for each of grad_accum micro-batches:
        model.forward(x, targets); model.backward(dloss=1 / grad_accum)   # grads add up
    clip_grad_norm(grads, max_grad_norm)                                  # optional
    optimizer.lr = schedule(step); optimizer.step()

With ``grad_accum = k`` and k micro-batches of equal size (equal numbers of counted targets), the update
equals that of one k-times larger batch, because the loss is a mean: the mean of k equal-sized means is the
mean of their union (``tests/test_train.py`` checks it to round-off). With masked targets of different
counts per micro-batch the two differ slightly (as in PyTorch); the docstring of :func:`train` says how.

``data`` is either a fixed ``(x, targets)`` pair (full-batch training) or a callable ``data(i)`` returning
the i-th micro-batch (``i = step * grad_accum + micro``), so a run is deterministic for a deterministic
``data``. The model is any object with ``forward(x, targets) -> (out, loss)`` and ``backward(dloss)``
(:class:`~minilora.nn.gpt.GPT`, :class:`~minilora.nn.mlp.MLPRegressor`, PEFT-wrapped models).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from minilora.optim import Optimizer, clip_grad_norm, grad_norm

Batch = tuple[np.ndarray, np.ndarray]


@dataclass
class History:
    """What happened in a run; every list has one entry per optimizer step (eval lists per evaluation)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_metrics: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def metric(self, name: str) -> np.ndarray:
        """One evaluation metric (from ``eval_fn``) as an array over the evaluations."""
        return np.array([m[name] for m in self.eval_metrics])

    def __repr__(self) -> str:
        last = f", last loss {self.loss[-1]:.4f}" if self.loss else ""
        ev = f", last eval loss {self.eval_loss[-1]:.4f}" if self.eval_loss else ""
        return f"History({len(self.step)} steps{last}{ev}, {self.seconds:.1f} s)"


def _get(data: Batch | Callable[[int], Batch], i: int) -> Batch:
    return data(i) if callable(data) else data


def _tokens(x: np.ndarray) -> int:
    """Positions processed: B*T for token ids, rows for feature matrices (any backend's array)."""
    return int(x.size if np.issubdtype(x.dtype, np.integer) else x.shape[0])


def evaluate(model: Any, data: Batch | Callable[[], Batch]) -> float:
    """Loss on ``data`` in eval mode; leaves gradients untouched and restores the training flag."""
    x, y = data() if callable(data) else data
    was_training = model.training
    model.eval()
    try:
        _, loss = model.forward(x, y)
    finally:
        model.train(was_training)
        if hasattr(model, "loss_cache"):
            model.loss_cache = None
    return float(loss)


def train(model: Any, data: Batch | Callable[[int], Batch], optimizer: Optimizer,
          schedule: Callable[[int], float] | None = None, steps: int = 100, grad_accum: int = 1,
          eval_every: int = 0, eval_data: Batch | Callable[[], Batch] | None = None,
          eval_fn: Callable[[Any], dict[str, float]] | None = None, max_grad_norm: float | None = None,
          progress: bool = True, desc: str = "train", eval_at: Sequence[int] = ()) -> History:
    """Train ``model`` for ``steps`` optimizer steps and return a :class:`History`.

    Parameters
    ----------
    model : has ``forward(x, targets) -> (out, loss)``, ``backward(dloss)``, ``zero_grad()``, ``grads``.
    data : a fixed ``(x, targets)`` batch, or ``data(i) -> (x, targets)`` for micro-batch ``i``.
    optimizer : from :mod:`minilora.optim`; its ``lr`` is overwritten by ``schedule(step)`` when given.
    schedule : ``step -> lr`` (see :mod:`minilora.schedules`), or None to keep ``optimizer.lr``.
    grad_accum : micro-batches per step; each backward is scaled by ``1/grad_accum``, so the update is that
        of the union batch when the micro-batches count equally many targets.
    eval_every : evaluate every this many steps and after the last (0: only after the last when
        ``eval_data`` or ``eval_fn`` is given).
    eval_at : also evaluate after these steps (each in 1 … ``steps``), e.g. after each epoch.
    eval_data : ``(x, targets)`` or a callable returning it, for ``eval_loss``.
    eval_fn : ``eval_fn(model) -> dict`` of extra metrics (e.g. exact-match accuracy), stored per evaluation.
    max_grad_norm : clip the global gradient norm to this (None: no clipping); ``grad_norm`` records the
        norm before clipping.
    progress : show a tqdm progress bar.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum!r}")
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0, got {eval_every!r}")
    eval_at = frozenset(eval_at)
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= steps for s in eval_at):
        raise ValueError(f"eval_at must lie in 1 … steps={steps}, got {sorted(eval_at, key=repr)}")
    hist = History()
    t_start = time.perf_counter()

    def do_eval(step: int) -> None:
        hist.eval_step.append(step)
        if eval_data is not None:
            hist.eval_loss.append(evaluate(model, eval_data))
        if eval_fn is not None:
            hist.eval_metrics.append(dict(eval_fn(model)))

    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        t0 = time.perf_counter()
        model.train()
        model.zero_grad()
        loss, tokens = 0.0, 0
        for micro in range(grad_accum):
            x, y = _get(data, step * grad_accum + micro)
            _, micro_loss = model.forward(x, y)
            model.backward(1.0 / grad_accum)
            loss += micro_loss / grad_accum
            tokens += _tokens(x)
        grads = model.grads
        norm = clip_grad_norm(grads, max_grad_norm) if max_grad_norm else grad_norm(grads)
        if schedule is not None:
            optimizer.lr = float(schedule(step))
        optimizer.step()
        dt = time.perf_counter() - t0
        hist.step.append(step)
        hist.loss.append(float(loss))
        hist.lr.append(optimizer.lr)
        hist.grad_norm.append(norm)
        hist.tokens_per_s.append(tokens / max(dt, 1e-9))
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{optimizer.lr:.2e}")
        if ((eval_every and (step + 1) % eval_every == 0) or step + 1 in eval_at) and step + 1 < steps:
            do_eval(step + 1)
    bar.close()
    if steps and (eval_data is not None or eval_fn is not None):
        do_eval(steps)
    hist.seconds = time.perf_counter() - t_start
    return hist


__all__ = ["train", "evaluate", "History"]

"""Data made on the spot, nothing downloaded: a low-rank teacher and synthetic token tasks.

**Low-rank teacher** (for the MLP experiments). A "pretrained" linear map ``W0`` and a fine-tuning target
``W* = W0 + U V^T`` whose change has known rank ``r`` — the LoRA hypothesis (Hu et al. 2021, §4: the
update ``ΔW`` has a low intrinsic rank) made exact, so a rank-r adapter can fit it and a smaller one cannot.

**Token tasks** (for the GPT). A sequence is ``[task] d_1 .. d_n = o_1 .. o_n`` over the digits 0-9, with
``o`` a function of ``d`` chosen by the task token. The model sees ``seq[:-1]`` and predicts ``seq[1:]``;
only the answer positions count (other targets are -100, ignored by the loss). Example for ``reverse``,
n = 4: ``[reverse] 3 1 2 7 = 7 2 1 3``. Exact match (every answer digit right) is the task metric; since
greedy decoding reproduces the teacher-forced argmax whenever all of them are right, one forward pass
computes it. The base model (:func:`minilora.load_base_model`) is pretrained on :data:`PRETRAIN_TASKS`;
:data:`HELDOUT_TASK` is never shown to it and is the fine-tuning target of the LoRA/QLoRA chapters.
Chance exact match is ``10**-n``.

Every array is drawn on the host (a ``numpy.random.Generator``, so a seed gives the same data on every
backend) and returned on the current backend (:mod:`minilora.backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minilora import backend
from minilora.nn.functional import IGNORE_INDEX

# ----------------------------------------------------------------------------- token tasks
DIGITS = 10
SEP = 10  # "="
_TASK_FNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda d: d,
    "reverse": lambda d: d[:, ::-1],
    "sort": lambda d: np.sort(d, axis=1),
    "add1": lambda d: (d + 1) % DIGITS,
    "sort_desc": lambda d: np.sort(d, axis=1)[:, ::-1],
}
TASKS = tuple(_TASK_FNS)
TASK_TOKEN = {name: SEP + 1 + i for i, name in enumerate(TASKS)}
PRETRAIN_TASKS = ("copy", "reverse", "sort", "add1")
HELDOUT_TASK = "sort_desc"
VOCAB_SIZE = 16  # 10 digits, "=", 5 task tokens
N_DIGITS = 8
VOCAB = [str(i) for i in range(DIGITS)] + ["="] + [f"[{t}]" for t in TASKS]


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def task_batch(task: str | tuple[str, ...], batch_size: int, seed: int | np.random.Generator | None = None,
               n_digits: int = N_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """A batch of one task, or of several (each row a task drawn uniformly).

    Returns
    -------
    idx : (batch_size, 2 n + 1) int64 inputs.  targets : same shape, -100 except the n answer positions.
    """
    tasks = (task,) if isinstance(task, str) else tuple(task)
    unknown = [t for t in tasks if t not in _TASK_FNS]
    if unknown or not tasks:
        raise ValueError(f"task must be one or more of {TASKS}, got {task!r}")
    if batch_size < 1 or n_digits < 1:
        raise ValueError(f"batch_size and n_digits must be >= 1, got {batch_size}, {n_digits}")
    rng = _rng(seed)
    digits = rng.integers(0, DIGITS, (batch_size, n_digits))
    which = rng.integers(0, len(tasks), batch_size)
    answers = np.empty_like(digits)
    for k, name in enumerate(tasks):  # loop over the (few) tasks, not over rows
        rows = which == k
        answers[rows] = _TASK_FNS[name](digits[rows])
    task_ids = np.array([TASK_TOKEN[t] for t in tasks])[which]
    seq = np.concatenate([task_ids[:, None], digits, np.full((batch_size, 1), SEP), answers], axis=1)
    idx, targets = seq[:, :-1].astype(np.int64), seq[:, 1:].astype(np.int64)
    targets[:, : n_digits + 1] = IGNORE_INDEX  # only the answer (after "=") is scored
    xp = backend.xp()
    return xp.asarray(idx), xp.asarray(targets)


def task_stream(task: str | tuple[str, ...], batch_size: int, seed: int = 0,
                n_digits: int = N_DIGITS) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``data(i)`` for :func:`minilora.train.train`: micro-batch ``i`` drawn with seed ``(seed, i)``."""
    return lambda i: task_batch(task, batch_size, np.random.default_rng([seed, i]), n_digits)


def heldout_train_data(batch_size: int = 32, seed: int = 0) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """Training stream of the held-out task (for fine-tuning the base model)."""
    return task_stream(HELDOUT_TASK, batch_size, seed)


def heldout_eval_batch(n: int = 512, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """A fixed evaluation batch of the held-out task (a seed disjoint from :func:`heldout_train_data`)."""
    return task_batch(HELDOUT_TASK, n, np.random.default_rng([seed, 1 << 30]))


def accuracy(model, idx: np.ndarray, targets: np.ndarray, position_ids: np.ndarray | None = None) -> dict[str, float]:
    """Token accuracy and exact match of greedy answers (teacher-forced argmax = greedy when all right).

    Returns ``{"token_acc": ..., "exact_match": ...}`` over the positions whose target is not -100.
    ``position_ids`` goes to the model's forward when given (e.g. the inputs shifted to other positions).
    """
    was_training = model.training
    model.eval()
    try:
        logits, _ = model.forward(idx) if position_ids is None else model.forward(idx, position_ids=position_ids)
    finally:
        model.train(was_training)
    targets = backend.input_array(targets, "targets")
    mask = targets != IGNORE_INDEX
    right = (logits.argmax(axis=-1) == targets) | ~mask
    return {"token_acc": float(right[mask].mean()), "exact_match": float(right.all(axis=1).mean())}


def exact_match(model, task: str = HELDOUT_TASK, n: int = 512, seed: int = 12345) -> float:
    """Exact-match accuracy of ``model`` on ``n`` fresh examples of ``task``."""
    idx, targets = task_batch(task, n, np.random.default_rng([seed, 1 << 30]))
    return accuracy(model, idx, targets)["exact_match"]


def decode(ids) -> str:
    """Token ids as text: ``decode([13, 3, 1, 10, 1, 3])`` is ``"[sort] 3 1 = 1 3"``."""
    return " ".join(VOCAB[int(i)] for i in backend.to_numpy(ids).reshape(-1))


# ----------------------------------------------------------------------------- low-rank teacher
@dataclass(frozen=True)
class LowRankTeacher:
    """``W* = W0 + U V^T``: W0 (d_out, d_in) "pretrained", ``delta = U V^T`` of rank ``rank`` (float64)."""

    w0: np.ndarray
    delta: np.ndarray
    rank: int
    noise: float

    @property
    def w_star(self) -> np.ndarray:
        return self.w0 + self.delta

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: x ~ N(0, I) (n, d_in) float32, ``y = x W*^T + noise * N(0, 1)`` (n, d_out)."""
        xp, rng = backend.xp(), _rng(seed)
        d_out, d_in = self.w0.shape
        x = xp.asarray(rng.standard_normal((n, d_in)))  # (n, d_in)
        noise = xp.asarray(rng.standard_normal((n, d_out)))  # (n, d_out)
        y = x @ self.w_star.T + self.noise * noise  # (n, d_out)
        return x.astype(xp.float32), y.astype(xp.float32)

    def stream(self, batch_size: int, seed: int = 0) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
        """``data(i)`` for :func:`minilora.train.train`."""
        return lambda i: self.sample(batch_size, np.random.default_rng([seed, i]))

    def __repr__(self) -> str:
        d_out, d_in = self.w0.shape
        return f"LowRankTeacher(d_out={d_out}, d_in={d_in}, rank={self.rank}, noise={self.noise})"


def low_rank_teacher(d_in: int = 32, d_out: int = 32, rank: int = 4, noise: float = 0.0, scale: float = 1.0,
                     seed: int | np.random.Generator | None = 0) -> LowRankTeacher:
    """Make a :class:`LowRankTeacher`.

    W0 ~ N(0, 1/d_in) entries; U (d_out, rank) ~ N(0, scale^2/d_out); V (d_in, rank) ~ N(0, 1/d_in).
    """
    if not 1 <= rank <= min(d_in, d_out):
        raise ValueError(f"rank must be in [1, min(d_in, d_out)={min(d_in, d_out)}], got {rank!r}")
    xp, rng = backend.xp(), _rng(seed)
    w0 = xp.asarray(rng.standard_normal((d_out, d_in)) / np.sqrt(d_in))  # (d_out, d_in)
    u = xp.asarray(rng.standard_normal((d_out, rank)) * scale / np.sqrt(d_out))  # (d_out, rank)
    v = xp.asarray(rng.standard_normal((d_in, rank)) / np.sqrt(d_in))  # (d_in, rank)
    return LowRankTeacher(w0, u @ v.T, rank, float(noise))


__all__ = ["task_batch", "task_stream", "accuracy", "exact_match", "decode", "heldout_train_data",
           "heldout_eval_batch", "low_rank_teacher", "LowRankTeacher", "TASKS", "PRETRAIN_TASKS",
           "HELDOUT_TASK", "VOCAB", "VOCAB_SIZE", "N_DIGITS", "TASK_TOKEN"]

"""Fast paths of the engine's widest ops, each beside its readable twin in :mod:`minilora.nn.functional`.

The readable ops are the reference: each formula is one line, as a student meets it in the paper, and each
backward is gradient-checked and compared with PyTorch. Written that way, every operator of a formula makes a
new full-size temporary: GELU's backward makes a dozen arrays of the MLP's width (B, T, 4C) for one result,
and the whole step spends much of its time allocating, zeroing and streaming memory it throws away
(``benchmarks/bench_ops.py`` times each op both ways, ``benchmarks/bench_train.py`` the whole step).

Each function here computes **the same operations in the same order** as its twin — so the result is equal
bit for bit, which ``tests/nn/test_fast.py`` checks on NumPy and the strict backend — but writes each step's
result into one of two or three arrays it allocated for this call (``out=``, ``-=``, ``*=``), so one or two
full-size arrays are made and thrown away instead of one per operator. Same signatures, same caches (a cache
still owns what it holds: nothing here is kept between calls), same backends. What each one saves:

* :func:`gelu_forward` / :func:`gelu_backward`: 8 / 18 temporaries of the MLP's width besides the result → 1 / 2;
* :func:`layernorm_forward` / :func:`layernorm_backward`: 2 / 6 full-size temporaries besides what they return
  and keep → 0 / 1 (``x.var`` makes its own deviations and squares; here the squares go where ``out`` will be);
* :func:`softmax`: shifted, exponentiated and normalized in place (one array);
* :func:`attention_forward` / :func:`attention_backward`: the (B, nh, T, P+T) scores and their gradient in place,
  and the per-head products written straight into the heads' columns of the (B, T, C) results
  (``matmul(..., out=split_heads(y))``) instead of computed and then copied by :func:`merge_heads`.

The modules of :mod:`minilora.nn.modules` call these. ``with readable(): ...`` swaps the readable twins in for
the duration of a block (``benchmarks/bench_train.py`` times a step both ways), which must give the same
numbers, only slower.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from minilora import backend
from minilora.nn import functional as F
from minilora.nn.functional import GELU_C, LN_EPS, causal_mask, merge_heads, split_heads


# ----------------------------------------------------------------------------- layernorm
def layernorm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = LN_EPS):
    """:func:`minilora.nn.functional.layernorm_forward` with two full-size arrays: ``norm`` and ``out``."""
    xp = backend.xp()
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    norm = x - mean  # (..., C): x - mean, normalized in place below
    out = xp.multiply(norm, norm)  # (..., C): the squares first, then the output
    var = out.mean(axis=-1, keepdims=True)  # (..., 1): x.var's own steps (mean of the squared deviations)
    rstd = 1.0 / xp.sqrt(var + eps)  # (..., 1)
    norm *= rstd  # (x - mean) * rstd
    xp.multiply(norm, w, out=out)
    out += b  # norm * w + b
    return out, (norm, w, rstd)


def layernorm_backward(dout: np.ndarray, cache, need_dw: bool = True, need_dx: bool = True):
    """:func:`minilora.nn.functional.layernorm_backward` with two full-size arrays: ``dx`` and one temporary."""
    xp = backend.xp()
    norm, w, rstd = cache
    C = w.shape[0]
    dx = dw = db = tmp = None
    if need_dx:
        dx = dout * w  # (..., C): dnorm, turned into dx in place
        tmp = xp.multiply(dx, norm)  # dnorm * norm
        mean_dnorm_norm = tmp.mean(axis=-1, keepdims=True)  # (..., 1)
        dx -= dx.mean(axis=-1, keepdims=True)  # dnorm - mean(dnorm)
        xp.multiply(norm, mean_dnorm_norm, out=tmp)
        dx -= tmp  # dnorm - mean(dnorm) - norm * mean(dnorm * norm)
        dx *= rstd
    if need_dw:
        tmp = xp.multiply(dout, norm, out=tmp)  # into dx's temporary (out=None without dx: a new array)
        dw = tmp.reshape(-1, C).sum(axis=0)  # (C,)
        db = dout.reshape(-1, C).sum(axis=0)  # (C,)
    return dx, dw, db


# ----------------------------------------------------------------------------- GELU
def gelu_forward(x: np.ndarray):
    """:func:`minilora.nn.functional.gelu_forward` with one temporary besides the output; the cache is x."""
    xp = backend.xp()
    t = xp.multiply(0.044715, x)  # 0.044715 x, then x + 0.044715 x^3, then the tanh
    t *= x
    t *= x
    t += x
    t *= GELU_C
    xp.tanh(t, out=t)
    t += 1.0  # 1 + tanh(...)
    out = xp.multiply(0.5, x)
    out *= t  # 0.5 x (1 + tanh(...))
    return out, x


def gelu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """:func:`minilora.nn.functional.gelu_backward` with three full-size arrays: ``t``, one temporary, ``dx``."""
    xp = backend.xp()
    x = cache
    t = xp.multiply(0.044715, x)  # inner, then t = tanh(inner)
    t *= x
    t *= x
    t += x
    t *= GELU_C
    xp.tanh(t, out=t)
    tmp = xp.multiply(t, t)
    xp.subtract(1.0, tmp, out=tmp)  # 1 - t^2
    dx = xp.multiply(0.5, x)
    dx *= tmp  # 0.5 x (1 - t^2)
    xp.multiply(3 * 0.044715, x, out=tmp)  # dinner = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    tmp *= x
    tmp += 1.0
    tmp *= GELU_C
    dx *= tmp  # 0.5 x (1 - t^2) dinner
    t += 1.0
    t *= 0.5  # 0.5 (1 + t)
    dx += t
    dx *= dout
    return dx


# ----------------------------------------------------------------------------- softmax and attention
def softmax(x: np.ndarray) -> np.ndarray:
    """:func:`minilora.nn.functional.softmax` in one new array."""
    return _softmax_inplace(x.copy())


def _softmax_inplace(x: np.ndarray) -> np.ndarray:
    """Overwrite ``x`` by ``exp(x - max) / sum(exp(x - max))`` over the last axis; return it."""
    xp = backend.xp()
    x -= x.max(axis=-1, keepdims=True)
    xp.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int,
                      past_k: np.ndarray | None = None, past_v: np.ndarray | None = None):
    """:func:`minilora.nn.functional.attention_forward`: the scores turned into probabilities in place, and
    ``att @ v`` written straight into the heads' columns of the (B, T, C) output."""
    xp = backend.xp()
    B, T, C = q.shape
    hs = C // n_head
    q, k, v = split_heads(q, n_head), split_heads(k, n_head), split_heads(v, n_head)  # (B, nh, T, hs)
    if past_k is not None:
        k = xp.concatenate([past_k, k], axis=2)  # (B, nh, P + T, hs)
        v = xp.concatenate([past_v, v], axis=2)  # (B, nh, P + T, hs)
    P = k.shape[2] - T
    att = q @ k.transpose(0, 1, 3, 2)  # (B, nh, T, P + T): the scores, then the probabilities
    att /= math.sqrt(hs)
    att += causal_mask(T, P, q.dtype)
    _softmax_inplace(att)
    y = xp.empty((B, T, C), dtype=att.dtype)
    xp.matmul(att, v, out=split_heads(y, n_head))  # (B, nh, T, hs) into y's columns: merge_heads(att @ v)
    return y, (q, k, v, att, past_k is not None)


def attention_backward(dout: np.ndarray, cache):
    """:func:`minilora.nn.functional.attention_backward`: the softmax backward in place on ``datt``, and the
    per-head gradients of the real tokens written straight into the columns of dq, dk, dv (B, T, C)."""
    xp = backend.xp()
    q, k, v, att, has_past = cache
    B, nh, T, hs = q.shape
    P = k.shape[2] - T
    dy = split_heads(dout, nh)  # (B, nh, T, hs)
    dscores = dy @ v.transpose(0, 1, 3, 2)  # (B, nh, T, P + T): datt, then dscores in place
    tmp = xp.multiply(dscores, att)
    dscores -= tmp.sum(axis=-1, keepdims=True)  # datt - sum(datt * p)
    del tmp
    dscores *= att  # p * (datt - sum(datt * p)): softmax backward; masked entries: att = 0 -> 0
    dscores /= math.sqrt(hs)
    dq = xp.empty((B, T, nh * hs), dtype=dscores.dtype)
    xp.matmul(dscores, k, out=split_heads(dq, nh))  # (B, nh, T, hs) into dq's columns
    if has_past:  # the prefix's gradients are (B, nh, P, hs) slices: compute whole, then split as the twin does
        dk_all = dscores.transpose(0, 1, 3, 2) @ q  # (B, nh, P + T, hs)
        dv_all = att.transpose(0, 1, 3, 2) @ dy  # (B, nh, P + T, hs)
        return (dq, merge_heads(dk_all[:, :, P:]), merge_heads(dv_all[:, :, P:]), dk_all[:, :, :P],
                dv_all[:, :, :P])
    dk, dv = xp.empty_like(dq), xp.empty_like(dq)
    xp.matmul(dscores.transpose(0, 1, 3, 2), q, out=split_heads(dk, nh))  # (B, nh, T, hs)
    xp.matmul(att.transpose(0, 1, 3, 2), dy, out=split_heads(dv, nh))  # (B, nh, T, hs)
    return dq, dk, dv, None, None


#: the ops with a fast path here, by name (each has a readable twin of the same name in functional)
FAST_OPS = ("layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward", "softmax",
            "attention_forward", "attention_backward")


@contextmanager
def readable() -> Iterator[None]:
    """Inside the block the engine runs the readable ops of :mod:`minilora.nn.functional` instead of these
    (same results, bit for bit; slower): for benchmarks and for reading a step op by op in a debugger.

    >>> from minilora.nn import fast
    >>> with fast.readable():
    ...     fast.gelu_forward is F.gelu_forward
    True
    >>> fast.gelu_forward is F.gelu_forward
    False
    """
    module = sys.modules[__name__]
    current = {name: getattr(module, name) for name in FAST_OPS}
    for name in FAST_OPS:
        setattr(module, name, getattr(F, name))
    try:
        yield
    finally:
        for name, fn in current.items():
            setattr(module, name, fn)


__all__ = [*FAST_OPS, "FAST_OPS", "readable"]

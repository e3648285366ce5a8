"""Forward/backward pairs for every layer of the tiny GPT, in the llm.c shape.

Each operation ``foo`` is two functions that sit side by side::

    out, cache = foo_forward(x, ...)        # cache keeps only what the backward needs
    dx, ...    = foo_backward(dout, cache)  # gradients in the order of the forward's inputs

Gradients are named ``d`` + the forward's name (``dx``, ``dw``, ``db``) so a backward reads as the
forward in reverse. Everything is batched with ``matmul``: there is no Python loop over batch, heads
or time. Each backward is checked against central finite differences in float64
(``tests/nn/test_functional.py``, via :mod:`minilora.nn.gradcheck`).

Conventions and departures:

* weights are ``(out_features, in_features)`` as in PyTorch: ``y = x @ w.T + b``;
* LayerNorm uses ``eps = 1e-5`` (PyTorch's default) and caches ``mean`` and ``rstd`` like llm.c;
* GELU is the tanh approximation of Hendrycks & Gimpel (2016), ``nn.GELU(approximate="tanh")``;
* attention is causal multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1) with the
  mask applied before the softmax; dropout on the attention probabilities is left out;
* cross-entropy is the mean over the targets that are not ``ignore_index`` (PyTorch's default -100);
* dropout is inverted dropout (kept units scaled by ``1/(1-p)``), with an explicit random generator.
"""

from __future__ import annotations

import math

import numpy as np

LN_EPS = 1e-5
IGNORE_INDEX = -100
_GELU_C = math.sqrt(2.0 / math.pi)


# ----------------------------------------------------------------------------- linear
def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """``y = x @ w.T + b`` for any leading dimensions.

    Parameters
    ----------
    x : (..., in) array.  w : (out, in) array.  b : (out,) array or None.

    Returns
    -------
    out : (..., out) array; cache : ``(x, w, has_bias)``.
    """
    # one 2-D GEMM: NumPy runs a stacked (3-D) @ transposed (2-D) product without BLAS, ~25x slower
    out = x.reshape(-1, w.shape[1]) @ w.T  # (N, out)
    if b is not None:
        out += b
    return out.reshape(*x.shape[:-1], w.shape[0]), (x, w, b is not None)


def linear_backward(dout: np.ndarray, cache, need_dw: bool = True, need_db: bool | None = None,
                    need_dx: bool = True):
    """Gradients of :func:`linear_forward`: ``(dx, dw, db)``.

    ``need_dw=False`` skips the weight-gradient matmul (a frozen layer: the saving LoRA relies on);
    ``need_db`` (default: same as ``need_dw``) the bias sum; ``need_dx=False`` the input gradient.
    Skipped gradients are returned as None.
    """
    x, w, has_bias = cache
    n_out, n_in = w.shape
    need_db = need_dw if need_db is None else need_db
    dout2 = dout.reshape(-1, n_out)  # (N, out)
    dx = (dout2 @ w).reshape(x.shape) if need_dx else None  # (..., in)
    dw = dout2.T @ x.reshape(-1, n_in) if need_dw else None  # (out, in)
    db = dout2.sum(axis=0) if (need_db and has_bias) else None  # (out,)
    return dx, dw, db


# ----------------------------------------------------------------------------- embedding
def embedding_forward(idx: np.ndarray, w: np.ndarray):
    """Row lookup ``out[..., :] = w[idx[...], :]``; idx integer array of any shape, w (V, C)."""
    return w[idx], (idx, w.shape)


def embedding_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Gradient of the table: rows scatter-added (``np.add.at``: repeated ids accumulate)."""
    idx, shape = cache
    dw = np.zeros(shape, dtype=dout.dtype)
    np.add.at(dw, idx.reshape(-1), dout.reshape(-1, shape[1]))
    return dw


# ----------------------------------------------------------------------------- layernorm
def layernorm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = LN_EPS):
    """LayerNorm over the last axis (Ba et al. 2016): ``(x - mean) * rstd * w + b``.

    The cache keeps ``x``, ``mean`` and ``rstd = 1 / sqrt(var + eps)`` (biased variance), as llm.c does.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)  # (..., 1)
    norm = xc * rstd  # (..., C)
    return norm * w + b, (norm, w, rstd)


def layernorm_backward(dout: np.ndarray, cache, need_dw: bool = True):
    """Gradients ``(dx, dw, db)`` of :func:`layernorm_forward`.

    With ``n = (x - mean) * rstd`` and ``dn = dout * w``:
    ``dx = rstd * (dn - mean(dn) - n * mean(dn * n))``.
    """
    norm, w, rstd = cache
    C = w.shape[0]
    dnorm = dout * w  # (..., C)
    dx = rstd * (dnorm - dnorm.mean(axis=-1, keepdims=True)
                 - norm * (dnorm * norm).mean(axis=-1, keepdims=True))
    dw = db = None
    if need_dw:
        dw = (dout * norm).reshape(-1, C).sum(axis=0)
        db = dout.reshape(-1, C).sum(axis=0)
    return dx, dw, db


# ----------------------------------------------------------------------------- activations
def gelu_forward(x: np.ndarray):
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    t = x * x  # in-place steps below: this runs on the widest activations, so temporaries matter
    t *= 0.044715
    t += 1.0
    t *= x
    t *= _GELU_C
    np.tanh(t, out=t)  # t = tanh(sqrt(2/pi) (x + 0.044715 x^3))
    out = t + 1.0
    out *= x
    out *= 0.5
    return out, (x, t)


def gelu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """``d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``."""
    x, t = cache
    dinner = x * x
    dinner *= 3 * 0.044715 * _GELU_C
    dinner += _GELU_C  # sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    dx = t * t
    np.subtract(1.0, dx, out=dx)
    dx *= x
    dx *= dinner  # x (1 - t^2) dinner
    dx += t
    dx += 1.0
    dx *= 0.5
    dx *= dout
    return dx


def relu_forward(x: np.ndarray):
    """``max(x, 0)``; the cache is the mask of positive inputs."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    return dout * cache


def softmax_forward(x: np.ndarray):
    """Softmax over the last axis, shifted by the row maximum for stability; caches the output."""
    p = x - x.max(axis=-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p, p


def softmax_backward(dout: np.ndarray, cache) -> np.ndarray:
    """``dx = p * (dout - sum(dout * p))`` over the last axis."""
    p = cache
    return p * (dout - (dout * p).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- attention
def _causal_mask(T: int, dtype) -> np.ndarray:
    """(T, T) array: 0 on and below the diagonal, -inf above (added to the scores before softmax)."""
    return np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int):
    """Causal multi-head attention ``softmax(q k^T / sqrt(hs) + mask) v`` (Vaswani et al., eq. 1).

    Parameters
    ----------
    q, k, v : (B, T, C) arrays, already projected.  n_head : number of heads, ``C % n_head == 0``.

    Returns
    -------
    out : (B, T, C) array (heads concatenated); cache : ``(q, k, v, att)`` split by head.
    """
    B, T, C = q.shape
    hs = C // n_head
    q = q.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    k = k.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    v = v.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, nh, T, T)
    scores *= 1.0 / math.sqrt(hs)
    scores += _causal_mask(T, scores.dtype)  # -inf above the diagonal: position t sees 0..t
    att, _ = softmax_forward(scores)  # (B, nh, T, T), exactly 0 above the diagonal
    y = att @ v  # (B, nh, T, hs)
    out = y.transpose(0, 2, 1, 3).reshape(B, T, C)
    return out, (q, k, v, att)


def attention_backward(dout: np.ndarray, cache):
    """Gradients ``(dq, dk, dv)``, each (B, T, C), of :func:`attention_forward`."""
    q, k, v, att = cache
    B, nh, T, hs = q.shape
    dy = dout.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
    datt = dy @ v.transpose(0, 1, 3, 2)  # (B, nh, T, T)
    dv = att.transpose(0, 1, 3, 2) @ dy  # (B, nh, T, hs)
    dscores = softmax_backward(datt, att) * (1.0 / math.sqrt(hs))  # masked entries: att = 0 -> 0
    dq = dscores @ k  # (B, nh, T, hs)
    dk = dscores.transpose(0, 1, 3, 2) @ q  # (B, nh, T, hs)
    merge = lambda a: a.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)
    return merge(dq), merge(dk), merge(dv)


# ----------------------------------------------------------------------------- losses
def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, ignore_index: int = IGNORE_INDEX):
    """Mean cross-entropy over the targets that are not ``ignore_index``.

    Parameters
    ----------
    logits : (..., V) float array.  targets : (...) integer array of class ids or ``ignore_index``.

    Returns
    -------
    loss : Python float; cache : ``(probs, targets, mask, count)``.
    """
    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    t = targets.reshape(-1)
    mask = t != ignore_index
    count = max(int(mask.sum()), 1)
    zmax = z.max(axis=-1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=-1, keepdims=True)
    probs = e / s  # (N, V)
    tt = np.where(mask, t, 0)
    logp = (z - zmax - np.log(s))[np.arange(z.shape[0]), tt]  # (N,)
    loss = float(-(logp * mask).sum() / count)
    return loss, (probs, tt, mask, count, logits.shape)


def cross_entropy_backward(dloss: float, cache) -> np.ndarray:
    """``dlogits = (softmax - onehot(targets)) * mask / count * dloss``, shaped like the logits."""
    probs, tt, mask, count, shape = cache
    dlogits = probs.copy()
    dlogits[np.arange(probs.shape[0]), tt] -= 1.0
    dlogits *= (mask * (dloss / count))[:, None].astype(probs.dtype)
    return dlogits.reshape(shape)


def mse_forward(y: np.ndarray, targets: np.ndarray):
    """Mean squared error ``mean((y - targets)^2)`` over all elements."""
    diff = y - targets
    return float((diff * diff).mean()), (diff,)


def mse_backward(dloss: float, cache) -> np.ndarray:
    (diff,) = cache
    return diff * (2.0 * dloss / diff.size)


# ----------------------------------------------------------------------------- dropout
def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None, training: bool = True):
    """Inverted dropout: zero each unit with probability ``p``, scale the kept ones by ``1/(1-p)``.

    With ``training=False`` or ``p == 0`` it is the identity (cache None).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p!r}")
    if not training or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout with p > 0 needs rng (a numpy.random.Generator), got None")
    mask = (rng.random(x.shape) >= p).astype(x.dtype) * (1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dout: np.ndarray, cache) -> np.ndarray:
    return dout if cache is None else dout * cache

"""Forward/backward pairs for every layer of the tiny GPT, in the llm.c shape.

Each operation ``foo`` is two functions that sit side by side::

    out, cache = foo_forward(x, ...)        # cache keeps only what the backward needs
    dx, ...    = foo_backward(dout, cache)  # gradients in the order of the forward's inputs

Each forward is its equation, written once; each backward names its intermediates after the forward's
(``dnorm`` is the gradient of ``norm``), so it reads as the forward in reverse. A cache holds arrays that
no one else writes into: a forward allocates what it returns and what it keeps. Everything is batched with
``matmul``: there is no Python loop over batch, heads or time. Each backward is checked against central
finite differences in float64 (``tests/nn/test_functional.py``, via :mod:`minilora.nn.gradcheck`) and each
forward and backward against PyTorch (``tests/nn/test_golden_engine.py``).

Conventions and departures:

* weights are ``(out_features, in_features)`` as in PyTorch: ``y = x @ w.T + b``;
* LayerNorm uses ``eps = 1e-5`` (PyTorch's default) and caches ``norm`` and ``rstd`` like llm.c;
* GELU is the tanh approximation of Hendrycks & Gimpel (2016), ``nn.GELU(approximate="tanh")``; its
  backward recomputes the tanh instead of keeping a second (B, T, 4C) array;
* attention is causal multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1) with the
  mask applied before the softmax, optionally after a prefix of earlier keys and values; dropout on the
  attention probabilities is left out;
* cross-entropy is the mean over the targets that are not ``ignore_index`` (PyTorch's default -100); when
  every target is ignored the loss is 0 (PyTorch returns nan, the mean of nothing) and the gradient 0;
* dropout is inverted dropout (kept units scaled by ``1/(1-p)``), with an explicit random generator.

Arrays come from :mod:`minilora.backend` (``xp = backend.xp()``): the same code runs on NumPy and CuPy.
"""

from __future__ import annotations

import math

import numpy as np

from minilora import backend

LN_EPS = 1e-5
IGNORE_INDEX = -100
GELU_C = math.sqrt(2.0 / math.pi)


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
    """Gradient of the table: rows scatter-added (:func:`minilora.backend.scatter_add`: repeated ids add up)."""
    xp = backend.xp()
    idx, shape = cache
    dw = xp.zeros(shape, dtype=dout.dtype)  # (V, C)
    backend.scatter_add(dw, idx.reshape(-1), dout.reshape(-1, shape[1]))
    return dw


# ----------------------------------------------------------------------------- layernorm
def layernorm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = LN_EPS):
    """LayerNorm over the last axis (Ba et al. 2016): ``(x - mean) / sqrt(var + eps) * w + b``.

    The cache keeps ``norm``, ``w`` and ``rstd = 1 / sqrt(var + eps)`` (biased variance), as llm.c does.
    """
    xp = backend.xp()
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = x.var(axis=-1, keepdims=True)  # (..., 1), biased (divided by C), as torch's LayerNorm
    rstd = 1.0 / xp.sqrt(var + eps)  # (..., 1)
    norm = (x - mean) * rstd  # (..., C)
    out = norm * w + b  # (..., C)
    return out, (norm, w, rstd)


def layernorm_backward(dout: np.ndarray, cache, need_dw: bool = True, need_dx: bool = True):
    """Gradients ``(dx, dw, db)`` of :func:`layernorm_forward`.

    With ``dnorm = dout * w``: ``dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))``.
    ``need_dw=False`` skips ``dw`` and ``db``, ``need_dx=False`` skips ``dx``; skipped gradients are None.
    """
    norm, w, rstd = cache
    C = w.shape[0]
    dx = None
    if need_dx:
        dnorm = dout * w  # (..., C)
        dx = rstd * (dnorm - dnorm.mean(axis=-1, keepdims=True) - norm * (dnorm * norm).mean(axis=-1, keepdims=True))
    dw = (dout * norm).reshape(-1, C).sum(axis=0) if need_dw else None  # (C,)
    db = dout.reshape(-1, C).sum(axis=0) if need_dw else None  # (C,)
    return dx, dw, db


# ----------------------------------------------------------------------------- activations
def gelu_forward(x: np.ndarray):
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; the cache is x."""
    xp = backend.xp()
    out = 0.5 * x * (1.0 + xp.tanh(GELU_C * (x + 0.044715 * x * x * x)))
    return out, x


def gelu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """With ``inner = sqrt(2/pi) (x + 0.044715 x^3)`` and ``t = tanh(inner)``:
    ``d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) dinner``, ``dinner = sqrt(2/pi) (1 + 3 * 0.044715 x^2)``.
    """
    xp = backend.xp()
    x = cache
    inner = GELU_C * (x + 0.044715 * x * x * x)  # the forward's tanh argument, recomputed
    t = xp.tanh(inner)
    dinner = GELU_C * (1.0 + 3 * 0.044715 * x * x)  # d inner / dx
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)


def relu_forward(x: np.ndarray):
    """``max(x, 0)``; the cache is the mask of positive inputs."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """``dout`` where the input was positive, else 0."""
    return dout * cache


def softmax(x: np.ndarray) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` over the last axis (the shift by the row maximum changes nothing
    but keeps exp from overflowing)."""
    xp = backend.xp()
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def log_softmax(x: np.ndarray) -> np.ndarray:
    """``x - log(sum(exp(x)))`` over the last axis, shifted by the row maximum like :func:`softmax`."""
    xp = backend.xp()
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_forward(x: np.ndarray):
    """:func:`softmax`; the cache is the output p."""
    p = softmax(x)
    return p, p


def softmax_backward(dout: np.ndarray, cache) -> np.ndarray:
    """``dx = p * (dout - sum(dout * p))`` over the last axis."""
    p = cache
    return p * (dout - (dout * p).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- attention
def causal_mask(T: int, P: int, dtype) -> np.ndarray:
    """(T, P + T) array added to the scores: 0 where query t may see key s, -inf where it may not.

    Query t sits at position ``P + t`` after ``P`` prefix positions, so it sees keys ``s <= P + t``: every
    prefix key and the real tokens up to itself. Two tokens after one prefix position:

    >>> causal_mask(2, 1, float)
    array([[  0.,   0., -inf],
           [  0.,   0.,   0.]])
    """
    xp = backend.xp()
    return xp.triu(xp.full((T, P + T), -xp.inf, dtype=dtype), k=P + 1)


def split_heads(a: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, nh, T, hs), a view."""
    B, T, C = a.shape
    return a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(a: np.ndarray) -> np.ndarray:
    """(B, nh, T, hs) -> (B, T, nh * hs): the heads side by side, as the output projection expects."""
    B, nh, T, hs = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int,
                      past_k: np.ndarray | None = None, past_v: np.ndarray | None = None):
    """Causal multi-head attention ``softmax(q k^T / sqrt(hs) + mask) v`` (Vaswani et al., eq. 1).

    Parameters
    ----------
    q, k, v : (B, T, C) arrays, already projected.  n_head : number of heads, ``C % n_head == 0``.
    past_k, past_v : (B, nh, P, hs) arrays or None: keys and values of ``P`` earlier positions (a key/value
        cache, or a trained prefix), put before this call's keys and values. Every query sees all of them.

    Returns
    -------
    out : (B, T, C) array (heads concatenated); cache : ``(q, k, v, att, has_past)``, k and v with the prefix.
    """
    xp = backend.xp()
    B, T, C = q.shape
    hs = C // n_head
    q, k, v = split_heads(q, n_head), split_heads(k, n_head), split_heads(v, n_head)  # (B, nh, T, hs)
    if past_k is not None:
        k = xp.concatenate([past_k, k], axis=2)  # (B, nh, P + T, hs)
        v = xp.concatenate([past_v, v], axis=2)  # (B, nh, P + T, hs)
    P = k.shape[2] - T
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs) + causal_mask(T, P, q.dtype)  # (B, nh, T, P + T)
    att, _ = softmax_forward(scores)  # (B, nh, T, P + T), exactly 0 where masked
    y = att @ v  # (B, nh, T, hs)
    return merge_heads(y), (q, k, v, att, past_k is not None)


def attention_backward(dout: np.ndarray, cache):
    """Gradients ``(dq, dk, dv, dpast_k, dpast_v)`` of :func:`attention_forward`.

    dq, dk, dv are (B, T, C); dpast_k, dpast_v (B, nh, P, hs), or None when no prefix was given.
    """
    q, k, v, att, has_past = cache
    B, nh, T, hs = q.shape
    P = k.shape[2] - T
    dy = split_heads(dout, nh)  # (B, nh, T, hs)
    datt = dy @ v.transpose(0, 1, 3, 2)  # (B, nh, T, P + T)
    dv = att.transpose(0, 1, 3, 2) @ dy  # (B, nh, P + T, hs)
    dscores = softmax_backward(datt, att) / math.sqrt(hs)  # masked entries: att = 0 -> 0
    dq = dscores @ k  # (B, nh, T, hs)
    dk = dscores.transpose(0, 1, 3, 2) @ q  # (B, nh, P + T, hs)
    dpast_k, dpast_v = (dk[:, :, :P], dv[:, :, :P]) if has_past else (None, None)
    return merge_heads(dq), merge_heads(dk[:, :, P:]), merge_heads(dv[:, :, P:]), dpast_k, dpast_v


# ----------------------------------------------------------------------------- losses
def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, ignore_index: int = IGNORE_INDEX):
    """Mean cross-entropy ``-mean(log softmax(logits)[target])`` over the targets that are not ``ignore_index``.

    Parameters
    ----------
    logits : (..., V) float array.  targets : (...) integer array of class ids or ``ignore_index``.

    Returns
    -------
    loss : Python float; cache : ``(probs, targets, mask, count, shape)``.
    """
    xp = backend.xp()
    V = logits.shape[-1]
    z = logits.reshape(-1, V)  # (N, V)
    t = targets.reshape(-1)  # (N,)
    mask = t != ignore_index  # (N,): the positions that count
    count = max(int(mask.sum()), 1)
    t = xp.where(mask, t, 0)  # an ignored position reads class 0, weighted by 0 below
    rows = xp.arange(z.shape[0])
    logprobs = log_softmax(z)  # (N, V)
    loss = float(-(logprobs[rows, t] * mask).sum() / count)
    return loss, (xp.exp(logprobs), t, mask, count, logits.shape)


def cross_entropy_backward(dloss: float, cache) -> np.ndarray:
    """``dlogits = (softmax - onehot(targets)) * mask / count * dloss``, shaped like the logits."""
    xp = backend.xp()
    probs, t, mask, count, shape = cache
    dlogits = probs.copy()  # (N, V)
    dlogits[xp.arange(probs.shape[0]), t] -= 1.0  # softmax - onehot(targets)
    dlogits *= (mask * (dloss / count)).astype(probs.dtype)[:, None]  # ignored positions: 0
    return dlogits.reshape(shape)


def mse_forward(y: np.ndarray, targets: np.ndarray):
    """Mean squared error ``mean((y - targets)^2)`` over all elements."""
    diff = y - targets
    return float((diff * diff).mean()), (diff,)


def mse_backward(dloss: float, cache) -> np.ndarray:
    """``dy = 2 (y - targets) / n * dloss``."""
    (diff,) = cache
    return diff * (2.0 * dloss / diff.size)


# ----------------------------------------------------------------------------- dropout
def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None, training: bool = True):
    """Inverted dropout: zero each unit with probability ``p``, scale the kept ones by ``1/(1-p)``.

    With ``training=False`` or ``p == 0`` it is the identity (cache None). The draws are made on the host
    (``rng`` is a ``numpy.random.Generator``), so every backend drops the same units.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p!r}")
    if not training or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout with p > 0 needs rng (a numpy.random.Generator), got None")
    xp = backend.xp()
    mask = xp.asarray(rng.random(x.shape) >= p, dtype=x.dtype) * (1.0 / (1.0 - p))  # (...) 0 or 1/(1-p)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, cache) -> np.ndarray:
    """``dout`` times the forward's mask (the identity when the forward was)."""
    return dout if cache is None else dout * cache

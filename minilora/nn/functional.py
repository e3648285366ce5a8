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

Work arrays: the functions with large intermediates (GELU, attention) take ``alloc(name, shape, dtype)``,
which returns the array to write an intermediate into. The default, :func:`fresh`, allocates a new one;
a :class:`~minilora.nn.module.Module` passes its work-buffer cache instead, so the same memory is reused
every training step (see ``Module._buf``). Whatever ``alloc`` returns is overwritten.
"""

from __future__ import annotations

import math

import numpy as np

LN_EPS = 1e-5
IGNORE_INDEX = -100
_GELU_C = math.sqrt(2.0 / math.pi)


def fresh(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """The default ``alloc``: a new uninitialised array of ``shape`` and ``dtype`` (``name`` is unused)."""
    return np.empty(shape, dtype=dtype)


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
    # the bias gradient as a GEMV with a ones vector: BLAS runs it ~3x faster than dout2.sum(axis=0)
    db = np.ones(dout2.shape[0], dtype=dout2.dtype) @ dout2 if (need_db and has_bias) else None  # (out,)
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
def layernorm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = LN_EPS, alloc=fresh):
    """LayerNorm over the last axis (Ba et al. 2016): ``(x - mean) * rstd * w + b``.

    The cache keeps ``norm = (x - mean) * rstd`` (in ``alloc("ln_norm", ...)``), ``w`` and
    ``rstd = 1 / sqrt(var + eps)`` (biased variance), as llm.c does.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    norm = np.subtract(x, mean, out=alloc("ln_norm", x.shape, x.dtype))  # (..., C); normalised in place below
    out = norm * norm  # the output buffer holds the squares first: one full-size temporary fewer
    var = out.mean(axis=-1, keepdims=True)  # (..., 1)
    rstd = 1.0 / np.sqrt(var + eps)  # (..., 1)
    norm *= rstd  # (..., C)
    np.multiply(norm, w, out=out)
    out += b
    return out, (norm, w, rstd)


def layernorm_backward(dout: np.ndarray, cache, need_dw: bool = True):
    """Gradients ``(dx, dw, db)`` of :func:`layernorm_forward`.

    With ``n = (x - mean) * rstd`` and ``dn = dout * w``:
    ``dx = rstd * (dn - mean(dn) - n * mean(dn * n))``.
    """
    norm, w, rstd = cache
    C = w.shape[0]
    dnorm = dout * w  # (..., C); becomes dx in place below (fewer full-size temporaries)
    dn_mean = dnorm.mean(axis=-1, keepdims=True)  # (..., 1)
    dn_n_mean = np.einsum("...c,...c->...", dnorm, norm)[..., None] / C  # mean(dn * n), (..., 1)
    dnorm -= dn_mean
    dnorm -= norm * dn_n_mean
    dnorm *= rstd
    dx = dnorm  # (..., C)
    dw = db = None
    if need_dw:
        dw = np.einsum("nc,nc->c", dout.reshape(-1, C), norm.reshape(-1, C))  # sum of dout * norm, (C,)
        db = dout.reshape(-1, C).sum(axis=0)  # (C,)
    return dx, dw, db


# ----------------------------------------------------------------------------- activations
def gelu_forward(x: np.ndarray, alloc=fresh):
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    The cache is ``(x, t)`` with ``t = tanh(...)``: the backward reuses t instead of recomputing it.
    ``t`` and ``out`` are written into ``alloc("gelu_t", ...)`` and ``alloc("gelu_out", ...)``.
    """
    # in-place steps: this runs on the widest activations (B, T, 4C), so every temporary costs a pass
    t = np.multiply(x, x, out=alloc("gelu_t", x.shape, x.dtype))
    t *= 0.044715
    t += 1.0
    t *= x
    t *= _GELU_C
    np.tanh(t, out=t)  # t = tanh(sqrt(2/pi) (x + 0.044715 x^3))
    out = np.add(t, 1.0, out=alloc("gelu_out", x.shape, x.dtype))
    out *= x
    out *= 0.5
    return out, (x, t)


def gelu_backward(dout: np.ndarray, cache, alloc=fresh) -> np.ndarray:
    """``d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``.

    Written into ``alloc("gelu_dx", ...)`` with one temporary ``alloc("gelu_tmp", ...)``.
    """
    x, t = cache
    dinner = np.multiply(x, x, out=alloc("gelu_tmp", x.shape, x.dtype))
    dinner *= 3 * 0.044715 * _GELU_C
    dinner += _GELU_C  # sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    dx = np.multiply(t, t, out=alloc("gelu_dx", x.shape, x.dtype))
    np.subtract(1.0, dx, out=dx)
    dx *= x
    dx *= dinner  # x (1 - t^2) dinner
    dx += t
    dx += 1.0
    dx *= 0.5
    dx *= dout
    return dx


def relu_forward(x: np.ndarray, alloc=fresh):
    """``max(x, 0)``; the cache is the mask of positive inputs (``alloc`` unused: GELU's signature)."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, cache, alloc=fresh) -> np.ndarray:
    """``dout`` where the input was positive, else 0."""
    return dout * cache


def _softmax_inplace(x: np.ndarray) -> np.ndarray:
    """Overwrite ``x`` with its softmax over the last axis (shifted by the row maximum); returns x."""
    # fmax.reduce: the row maximum, faster than max() (no NaN bookkeeping; a NaN row stays NaN via exp)
    x -= np.fmax.reduce(x, axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def softmax_forward(x: np.ndarray):
    """Softmax over the last axis, shifted by the row maximum for stability; caches the output."""
    p = _softmax_inplace(x.copy())
    return p, p


def softmax_backward(dout: np.ndarray, cache) -> np.ndarray:
    """``dx = p * (dout - sum(dout * p))`` over the last axis."""
    p = cache
    return p * (dout - np.einsum("...i,...i->...", dout, p)[..., None])


# ----------------------------------------------------------------------------- attention
def causal_mask(T: int, P: int, dtype) -> np.ndarray:
    """(T, P + T) array added to the scores: 0 where query t may see key s, -inf where it may not.

    Query t sits at position ``P + t`` after ``P`` prefix positions, so it sees keys ``s <= P + t``: every
    prefix key and the real tokens up to itself. ``causal_mask(2, 1, float)`` is
    ``[[0, 0, -inf], [0, 0, 0]]``.
    """
    return np.triu(np.full((T, P + T), -np.inf, dtype=dtype), k=P + 1)


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
    B, T, C = q.shape
    hs = C // n_head
    q, k, v = split_heads(q, n_head), split_heads(k, n_head), split_heads(v, n_head)  # (B, nh, T, hs)
    if past_k is not None:
        k = np.concatenate([past_k, k], axis=2)  # (B, nh, P + T, hs)
        v = np.concatenate([past_v, v], axis=2)  # (B, nh, P + T, hs)
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
def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, ignore_index: int = IGNORE_INDEX,
                          alloc=fresh):
    """Mean cross-entropy over the targets that are not ``ignore_index``.

    Parameters
    ----------
    logits : (..., V) float array.  targets : (...) integer array of class ids or ``ignore_index``.
    alloc : where the cached softmax ``"ce_probs"`` (N, V) is written (default: a fresh array).

    Returns
    -------
    loss : Python float; cache : ``(probs, targets, mask, count, shape)``.
    """
    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    t = targets.reshape(-1)
    mask = t != ignore_index
    count = max(int(mask.sum()), 1)
    tt = np.where(mask, t, 0)
    rows = np.arange(z.shape[0])
    # probs holds z - zmax, then exp(z - zmax), then the softmax: in place, one (N, V) array in all
    probs = np.subtract(z, z.max(axis=-1, keepdims=True), out=alloc("ce_probs", z.shape, z.dtype))
    shifted = probs[rows, tt]  # (N,) z - zmax at the targets, read before the exp overwrites it
    np.exp(probs, out=probs)
    s = probs.sum(axis=-1, keepdims=True)  # (N, 1)
    probs /= s  # (N, V)
    logp = shifted - np.log(s[:, 0])  # (N,) log-softmax at the targets
    loss = float(-(logp * mask).sum() / count)
    return loss, (probs, tt, mask, count, logits.shape)


def cross_entropy_backward(dloss: float, cache, alloc=fresh) -> np.ndarray:
    """``dlogits = (softmax - onehot(targets)) * mask / count * dloss``, shaped like the logits.

    Written into ``alloc("ce_dlogits", ...)``.
    """
    probs, tt, mask, count, shape = cache
    dlogits = alloc("ce_dlogits", probs.shape, probs.dtype)
    dlogits[...] = probs
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

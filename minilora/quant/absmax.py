"""Absmax quantization: the blog's toy walkthrough, then tensor-, row/column- and block-wise int-b.

Quantizing maps a value to the nearest level of a small set. The blog's "Quantize" section does it by
hand: to store ``[3, 1, 2, 3]`` (levels A = {0, …, 5}) with the levels B = {0, 2, 4}, normalize so the
largest magnitude lands on B's largest level, round to the nearest level of B, and undo the scaling::

    [3, 1, 2, 3] → ×4/3 → [4, 1.33, 2.67, 4] → nearest in B → [4, 2, 2, 4]
                 → ÷4 → [1, 0.5, 0.5, 1] → ×3 → [3, 1.5, 1.5, 3] → nearest in A → [3, 2, 2, 3]

(:func:`toy_walkthrough` returns every one of these arrays; the blog prints 2.66 for 8/3 = 2.667.)
The round trip lost information: 1 came back as 2.

Symmetric absmax int-b quantization (LLM.int8 paper, Dettmers et al. 2022, arXiv 2208.07339, Eq. 1)
is the same idea with the levels ``{−qmax, …, qmax}``, ``qmax = 2^(b−1) − 1``::

    q = round_half_even(x · qmax / absmax),      x̂ = q · absmax / qmax

with one ``absmax = max |x|`` per tensor, per row/column (``axis``) or per flat block (``blocksize``).
A single outlier inflates absmax and crushes every other value of its tensor (or row, or block) to a
few levels: the smaller the group sharing a scale, the less harm it does. Worst-case error:
``|x − x̂| ≤ absmax / (2·qmax)`` (plus float32 rounding; :func:`minilora.quant.bounds.absmax_bound`).

Rounding: minilora computes ``q = rint(float32(x / absmax) · qmax)`` in float32 (dividing first cannot
overflow, even for a subnormal absmax) and ``x̂ = q · float32(absmax / qmax)``; a group whose absmax is 0
gets ``q = 0``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from minilora import backend
from minilora.quant.state import as_float_array, check_choice, check_finite_stats

__all__ = ["quantize_to_levels", "toy_walkthrough", "ToySteps", "absmax_quantize", "absmax_dequantize",
           "qmax_for"]


def quantize_to_levels(x: Any, levels: Any, ties: str = "up") -> Any:
    """Index of the nearest of ``levels`` for each element of ``x``.

    Parameters
    ----------
    x : array of float, any shape
    levels : 1-D array of distinct sorted floats
    ties : {"up", "down"}
        A value exactly halfway between two levels takes the upper ("up", the blog's 1.5 → 2) or the
        lower ("down", bitsandbytes' 4-bit rule) level.

    Returns
    -------
    int64 array of indices into ``levels``, shape of ``x``.

    >>> quantize_to_levels([1.33, 2.67, 1.5, 9], [0, 2, 4]).tolist()
    [1, 1, 1, 2]
    """
    xp = backend.xp()
    check_choice(ties, ("up", "down"), "ties")
    lv = xp.asarray(levels, dtype=xp.float64)
    if lv.ndim != 1 or lv.size == 0 or bool(xp.any(xp.diff(lv) <= 0)):
        raise ValueError(f"levels must be a non-empty 1-D strictly increasing array, got {levels!r}")
    mid = (lv[:-1] + lv[1:]) / 2
    return xp.searchsorted(mid, xp.asarray(x, dtype=xp.float64), side="right" if ties == "up" else "left")


class ToySteps(NamedTuple):
    """Every intermediate array of the blog's walkthrough (see the module docstring)."""

    x: np.ndarray           # the input, on levels A
    normalized: np.ndarray  # x · max(B) / absmax(x)
    quantized: np.ndarray   # nearest level of B
    unit: np.ndarray        # ÷ max(B): back to [−1, 1]
    rescaled: np.ndarray    # × absmax(x)
    restored: np.ndarray    # nearest level of A


def toy_walkthrough(x: Any = (3, 1, 2, 3), source_levels: Any = (0, 1, 2, 3, 4, 5),
                    target_levels: Any = (0, 2, 4)) -> ToySteps:
    """The blog's absmax example step by step (float64 throughout, ties go up).

    >>> s = toy_walkthrough()
    >>> s.quantized.tolist(), s.restored.tolist()
    ([4.0, 2.0, 2.0, 4.0], [3.0, 2.0, 2.0, 3.0])
    """
    x = np.asarray(x, np.float64)
    a = np.asarray(source_levels, np.float64)
    b = np.asarray(target_levels, np.float64)
    absmax, top = np.abs(x).max(), np.abs(b).max()
    normalized = x * top / absmax
    quantized = b[quantize_to_levels(normalized, b)]
    unit = quantized / top
    rescaled = unit * absmax
    return ToySteps(x, normalized, quantized, unit, rescaled, a[quantize_to_levels(rescaled, a)])


def qmax_for(bits: int) -> int:
    """``2^(bits−1) − 1``, the largest code of symmetric int-``bits``; ValueError unless 2 ≤ bits ≤ 8."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [2, 8], got {bits!r}")
    return 2 ** (int(bits) - 1) - 1


def _check_mode(axis: Any, blocksize: Any) -> None:
    if axis is not None and blocksize is not None:
        raise ValueError(f"give axis or blocksize, not both (got axis={axis!r}, blocksize={blocksize!r})")
    if blocksize is not None and (isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer))
                                  or blocksize < 1):
        raise ValueError(f"blocksize must be a positive integer or None, got {blocksize!r}")


def _blocks(flat: Any, blocksize: int) -> Any:
    """``flat`` zero-padded to whole blocks, shape (nblocks, blocksize)."""
    xp = backend.xp()
    pad = (-flat.size) % blocksize
    return xp.concatenate([flat, xp.zeros(pad, flat.dtype)]).reshape(-1, blocksize)


def absmax_quantize(x: Any, bits: int = 8, axis: int | None = None,
                    blocksize: int | None = None) -> tuple[Any, Any]:
    """Symmetric absmax quantization to ``bits``-bit integers, round half to even.

    Parameters
    ----------
    x : float array, any shape (computed in float32)
    bits : int in [2, 8]
    axis : int or None
        The axis reduced for the statistic, NumPy's meaning: ``axis=-1`` gives one absmax per row.
    blocksize : int or None
        Flat C-order blocks of this many elements (the last one may be partial), as in ``quantize_4bit``.

    Returns
    -------
    q : int8 array, shape of ``x``, values in [−qmax, qmax]
    absmax : float32 — shape () tensor-wise, x.shape without ``axis`` per axis, (nblocks,) per block

    Raises
    ------
    TypeError for non-float ``x``; ValueError for NaN/Inf, bad ``bits``/``blocksize``, or both ``axis`` and
    ``blocksize``. Empty ``x`` gives empty ``q`` (tensor-wise absmax 0.0).

    >>> q, a = absmax_quantize(np.array([3., 1, 2, -3]), bits=3)          # qmax = 3
    >>> q.tolist(), float(a)
    ([3, 1, 2, -3], 3.0)
    """
    xp = backend.xp()
    qmax = qmax_for(bits)
    _check_mode(axis, blocksize)
    arr = as_float_array(x, "x").astype(xp.float32, copy=False)
    if blocksize is not None:
        groups = _blocks(arr.reshape(-1), int(blocksize))
        absmax = xp.abs(groups).max(axis=1) if groups.size else xp.zeros(0, xp.float32)
        expand = absmax[:, None]
    elif axis is not None:
        groups = arr
        absmax = xp.abs(arr).max(axis=axis) if arr.size else xp.zeros(np.delete(arr.shape, axis), xp.float32)
        expand = xp.expand_dims(absmax, axis)
    else:
        groups = arr
        absmax = xp.abs(arr).max() if arr.size else xp.float32(0)
        expand = absmax
    check_finite_stats(xp.asarray(absmax).reshape(-1), "x")
    safe = xp.where(expand > 0, expand, xp.float32(1)).astype(xp.float32)    # absmax 0: x is 0 too
    q = xp.clip(xp.rint((groups / safe) * xp.float32(qmax)), -qmax, qmax).astype(xp.int8)
    if blocksize is not None:
        q = q.reshape(-1)[: arr.size].reshape(arr.shape)
    return q, xp.asarray(absmax, dtype=xp.float32)


def absmax_dequantize(q: Any, absmax: Any, bits: int = 8, axis: int | None = None,
                      blocksize: int | None = None, shape: tuple[int, ...] | None = None) -> Any:
    """``q · float32(absmax / qmax)`` in float32, with the same ``axis``/``blocksize`` as the quantization.

    ``shape`` (default ``q.shape``) reshapes the result. Returns float32.
    """
    xp = backend.xp()
    qmax = qmax_for(bits)
    _check_mode(axis, blocksize)
    q = xp.asarray(q)
    absmax = xp.asarray(absmax, dtype=xp.float32)
    step = (absmax / xp.float32(qmax)).astype(xp.float32)
    shape = tuple(q.shape) if shape is None else tuple(shape)
    if blocksize is not None:
        nblocks = -(-q.size // int(blocksize))
        if absmax.shape != (nblocks,):
            raise ValueError(f"absmax must have shape ({nblocks},) for {q.size} codes at blocksize "
                             f"{blocksize}, got {tuple(absmax.shape)}")
        out = _blocks(q.reshape(-1).astype(xp.float32), int(blocksize)) * step[:, None]
        return out.reshape(-1)[: q.size].reshape(shape)
    if axis is not None:
        step = xp.expand_dims(step, axis)
    return (q.astype(xp.float32) * step).astype(xp.float32).reshape(shape)

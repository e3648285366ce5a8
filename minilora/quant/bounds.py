"""Worst-case reconstruction error of each quantizer, as functions (the property tests call these).

Every bound is ``ideal + rounding``: the exact-arithmetic error of rounding to the nearest level, plus a
few units of float32 roundoff ``u = 2^-24`` per floating-point operation on the way, plus ``SUB = 2^-149``
(the float32 subnormal spacing) per operation that may underflow. Write ``a`` for a group's absmax,
``s`` for the scaled value and ``c`` for the chosen level.

absmax int-b (:func:`absmax_bound`)
    ``s = fl(fl(x / a) · qmax)`` differs from ``x · qmax / a`` by at most ``2u · qmax``; rounding to the
    nearest integer adds at most ½; ``x̂ = fl(q · fl(a / qmax))`` adds ``2u · a``. Dividing the first two
    by ``qmax / a``: ``|x − x̂| ≤ a / (2·qmax) + 4u · a``, plus ``(qmax + 1) · SUB`` when ``a / qmax``
    is subnormal.

block-wise codebook: NF4, FP4, 8-bit dynamic (:func:`codebook_bound`)
    The scaled value ``s`` is clamped to [−1, 1] and mapped to the nearest level, so ``|s − c| ≤ e(code)``,
    where ``e`` = the larger of half the widest gap between adjacent sorted levels and the distances from ±1
    to the end levels (:func:`code_max_error`). The float32 midpoints add an ulp, the scaling 2u and the
    dequantization u: ``|x − x̂| ≤ a · (e + 4u)``; we allow ``8u`` because ``1/a`` is subnormal (fewer
    bits) when ``a > 2^126``. NF4: e = 0.1519 (the gap between −1 and −0.696); FP4: e = 1/6; 8-bit dynamic
    map: e = 0.00703. Below ``a = 1e-38`` bitsandbytes' floor on the reciprocal's argument scales too little
    (``x · 1e38``, not ``x / a``) and only ``|x − x̂| ≤ |x| + |c| a ≤ 2a`` (< 2e-38) holds.

double quantization (:func:`double_quant_absmax_bound`, :func:`nf4_double_quant_bound`)
    The stored scale is ``â = fl(fl(code8[q] · a2) + offset)``, where ``d = fl(a − offset)`` was quantized
    with the second-level scale ``a2`` (absmax of ``d`` over 256 blocks): ``|a − â| ≤ a2 · (e8 + 4u) +
    2u · (|a| + |offset| + a2)``. The 4-bit codes were chosen with the true ``a``, so
    ``|x − c · â| ≤ |x − c · a| + |c| · |a − â|`` and the total is ``a · (e4 + 4u) + (1 + u) · Δa + u · a``.

LLM.int8 matmul (:func:`int8_matmul_bound`)
    For a non-outlier column: ``|x − x̂| ≤ e_x = 2^-11 |x| + 2^-25 + SCA · (1/254 + 8u)`` (FP16 rounding, then
    int8 rounding at the row's scale); likewise ``e_w`` from the weight row's scale ``SCB``. Outlier columns
    use the exact ``x`` (``e_x = 0``). Per product ``|x w − x̂ ŵ| ≤ |x| e_w + (|w| + e_w) e_x``, summed over k;
    the float32 sums and scalings add ``(k + 4) u Σ (|x| + e_x)(|w| + e_w)``, and bitsandbytes' rescaling
    constant (the default ``rescale``, 1.8e-5 above 1/127²) ``r Σ (|x| + e_x)(|w| + e_w)`` with
    ``r = |6.200124e-05 · 127² − 1|``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minilora import backend
from minilora.formats import FP16, round_to
from minilora.quant.absmax import qmax_for
from minilora.quant.blockwise import scale_blocks
from minilora.quant.int8 import BNB_INV_127_SQ, int8_vectorwise_quant

__all__ = ["U32", "SUB", "RESCALE_EXCESS", "absmax_bound", "code_max_error", "codebook_bound",
           "double_quant_absmax_bound", "nf4_double_quant_bound", "int8_vectorwise_bound", "int8_matmul_bound",
           "block_absmax", "per_element"]

#: unit roundoff of float32
U32 = 2.0**-24
#: spacing of float32 subnormals: the absolute error of a rounding that underflows
SUB = 2.0**-149
#: bitsandbytes' floor under absmax when it takes the reciprocal
TINY = float(np.float32(1e-38))
#: relative excess of bitsandbytes' LLM.int8 rescaling constant over 1/127² (docs/facts.md §4)
RESCALE_EXCESS = abs(float(BNB_INV_127_SQ) * 127**2 - 1)


def absmax_bound(absmax: Any, bits: int = 8) -> Any:
    """Per group: ``|x − x̂| ≤ absmax / (2·(2^(bits−1) − 1)) + 4u · absmax + (qmax + 1) · SUB`` (float64)."""
    a = np.asarray(backend.to_numpy(absmax), np.float64)
    qmax = qmax_for(bits)
    return a * (1.0 / (2 * qmax) + 4 * U32) + (qmax + 1) * SUB


def code_max_error(code: Any) -> float:
    """Largest ``|s − nearest level|`` over s ∈ [−1, 1] for a codebook (in units of absmax).

    >>> from minilora.quant.nf4 import nf4_code, fp4_code
    >>> round(code_max_error(nf4_code()), 4), round(code_max_error(fp4_code()), 4)
    (0.1519, 0.1667)
    """
    c = np.unique(np.asarray(backend.to_numpy(code), np.float64))
    half_gaps = np.diff(c) / 2 if c.size > 1 else np.zeros(1)
    return float(max(half_gaps.max(), c[0] + 1.0, 1.0 - c[-1]))


def codebook_bound(absmax: Any, code: Any) -> Any:
    """Per block: ``|x − x̂| ≤ absmax · (code_max_error(code) + 8u) + SUB`` (``2 · absmax`` below 1e-38)."""
    a = np.asarray(backend.to_numpy(absmax), np.float64)
    return np.where(a < TINY, 2 * a, a * (code_max_error(code) + 8 * U32)) + SUB


def double_quant_absmax_bound(absmax: Any, offset: Any, absmax2: Any, code8: Any,
                              blocksize2: int = 256) -> Any:
    """Per first-level block: ``|a − â| ≤ a2 · (e8 + 8u) + 2u · (|a| + |offset| + a2) + 2·SUB`` (float64).

    ``absmax`` are the true float32 scales (nblocks,), ``absmax2`` the second-level scales
    (ceil(nblocks / blocksize2),), ``code8`` the 8-bit map.
    """
    a = np.asarray(backend.to_numpy(absmax), np.float64)
    a2 = np.repeat(np.asarray(backend.to_numpy(absmax2), np.float64), blocksize2)[: a.size]
    off = abs(float(offset))
    first = np.where(a2 < TINY, 2 * a2, a2 * (code_max_error(code8) + 8 * U32))
    return first + 2 * U32 * (np.abs(a) + off + a2) + 2 * SUB


def nf4_double_quant_bound(absmax: Any, absmax_error: Any, code: Any) -> Any:
    """Per block, 4-bit codes with a double-quantized scale: codebook bound ``+ (1 + u) · Δa + u · a``."""
    a = np.asarray(backend.to_numpy(absmax), np.float64)
    return codebook_bound(a, code) + U32 * a + (1 + U32) * np.asarray(absmax_error, np.float64) + SUB


def int8_vectorwise_bound(row_stats: Any) -> Any:
    """Per row, non-outlier elements: ``|x − dequant| ≤ SCA · (1/254 + 8u) + SUB`` (float64, shape (rows,)).

    ``1/SCA`` and ``·127`` round twice (the scaled value is off by ``3u · 127``), dequantization three times.
    Holds for rows with ``SCA ≥ 2^-126`` (FP16 input always qualifies; see :func:`int8_vectorwise_quant`).
    """
    return np.asarray(backend.to_numpy(row_stats), np.float64) * (1 / 254 + 8 * U32) + SUB


def int8_matmul_bound(x: Any, w: Any, threshold: float = 6.0) -> np.ndarray:
    """Element-wise bound on ``|x @ w.T − int8_matmul(x, w, threshold)|`` (either ``rescale``), float64 (..., n).

    Built from the row scales of the FP16-rounded x (after outliers are removed) and of w.
    """
    x = np.asarray(backend.to_numpy(x), np.float32)
    w = np.asarray(backend.to_numpy(w), np.float32)
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k)
    _, sca, cols = int8_vectorwise_quant(round_to(x2, FP16), threshold)
    _, scb, _ = int8_vectorwise_quant(round_to(w, FP16), 0.0)
    sca, scb, cols = (np.asarray(backend.to_numpy(v)) for v in (sca, scb, cols))
    ax, aw = np.abs(x2).astype(np.float64), np.abs(w).astype(np.float64)
    ex = 2.0**-11 * ax + 2.0**-25 + sca[:, None].astype(np.float64) * (1 / 254 + 8 * U32)
    ex[:, cols] = 0.0
    ew = 2.0**-11 * aw + 2.0**-25 + scb[:, None].astype(np.float64) * (1 / 254 + 8 * U32)
    bound = ax @ ew.T + ex @ (aw + ew).T + ((k + 4) * U32 + RESCALE_EXCESS) * ((ax + ex) @ (aw + ew).T)
    return bound.reshape(*lead, w.shape[0])


def block_absmax(x: Any, blocksize: int) -> Any:
    """The float32 absmax per flat block of ``x``, exactly as ``quantize_4bit`` stores it."""
    xp = backend.xp()
    return scale_blocks(xp.asarray(x, dtype=xp.float32).reshape(-1), int(blocksize))[0]


def per_element(per_block: Any, n: int, blocksize: int) -> np.ndarray:
    """Repeat a per-block quantity for every element: shape (n,)."""
    return np.repeat(np.asarray(backend.to_numpy(per_block)), blocksize)[:n]

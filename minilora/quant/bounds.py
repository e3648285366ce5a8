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

From the input alone (:func:`error_bound`)
    The bound of every element of ``x`` for a method named as the user knows it (``"nf4"``, ``"absmax"``, …),
    with the group statistics recomputed from ``x``: what :mod:`minilora.testing` asserts. A result delivered
    in FP16 / BF16 adds that rounding (:func:`output_rounding_bound`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minilora import backend
from minilora.formats import FP16, get_format, round_to
from minilora.quant.absmax import qmax_for
from minilora.quant.blockwise import scale_blocks
from minilora.quant.double_quant import create_dynamic_map
from minilora.quant.int8 import BNB_INV_127_SQ, int8_vectorwise_quant
from minilora.quant.nf4 import get_4bit_code

__all__ = ["U32", "SUB", "RESCALE_EXCESS", "absmax_bound", "code_max_error", "codebook_bound",
           "double_quant_absmax_bound", "nf4_double_quant_bound", "int8_vectorwise_bound", "int8_matmul_bound",
           "block_absmax", "per_element", "METHODS", "INT8_MIN_ROW_ABSMAX", "error_bound", "output_rounding_bound"]

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
    Holds for rows with ``SCA ≥`` :data:`INT8_MIN_ROW_ABSMAX` ≈ 3.73e-37, where ``float32(1/SCA) · 127`` is
    still finite (FP16 input always qualifies; see :func:`int8_vectorwise_quant`).
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


# ----------------------------------------------------------------------------- from the input alone

#: the quantizers :func:`error_bound` knows, by name
METHODS = ("absmax", "nf4", "fp4", "nf4_dq", "fp4_dq", "dynamic", "int8_vectorwise")
#: default blocksize of each block-wise method (bitsandbytes' defaults)
DEFAULT_BLOCKSIZE = {"nf4": 64, "fp4": 64, "nf4_dq": 64, "fp4_dq": 64, "dynamic": 4096}


def _min_row_absmax() -> float:
    """Smallest float32 ``s`` with ``float32(float32(1/s) · 127)`` finite (the int8 row scale)."""
    s = np.float32(127 / float(np.finfo(np.float32).max))
    with np.errstate(over="ignore"):
        while not np.isfinite((np.float32(1) / s) * np.float32(127)):
            s = np.nextafter(s, np.float32(1))
    return float(s)


#: rows of int8 vector-wise quantization with a smaller (nonzero) absmax overflow the scale 127/absmax
INT8_MIN_ROW_ABSMAX = _min_row_absmax()


def _block_max_abs(flat: np.ndarray, blocksize: int, floor: bool = True) -> np.ndarray:
    """``max |x|`` per flat block (float32); with ``floor`` the partial last block stores at least 1e-38, as
    bitsandbytes' block-wise quantizers do (absmax int-b does not)."""
    n, bs = flat.size, int(blocksize)
    padded = np.zeros(-(-n // bs) * bs, np.float32)
    padded[:n] = np.abs(flat)
    a = padded.reshape(-1, bs).max(axis=1) if n else np.zeros(0, np.float32)
    if floor and n % bs:
        a[-1] = max(a[-1], np.float32(TINY))
    return a


def output_rounding_bound(bound: Any, x: Any, fmt: Any) -> np.ndarray:
    """``bound`` on ``|x − x̂|`` widened for a result delivered in ``fmt`` (e.g. FP16 or BF16) instead of float32.

    Rounding ``x̂`` to nearest moves it by at most ``ε/2 · |x̂| + min_subnormal/2`` (``ε = 2^-man_bits``), and
    ``|x̂| ≤ |x| + bound``: the total is ``bound + ε/2 · (|x| + bound) + min_subnormal/2`` (float64).
    """
    f = get_format(fmt)
    b = np.asarray(bound, np.float64)
    ax = np.abs(np.asarray(backend.to_numpy(x), np.float64))
    return b + f.eps / 2 * (ax + b) + f.min_subnormal / 2


def error_bound(x: Any, method: str, *, bits: int = 8, axis: int | None = None, blocksize: int | None = None,
                threshold: float = 0.0, offset: Any = None, output_format: Any = None,
                return_scale: bool = False) -> Any:
    """The bound on ``|x − x̂|`` for every element of ``x`` quantized by ``method``, from ``x`` alone.

    Parameters
    ----------
    x : float array, any shape (float16 or float32; the quantizers compute in float32)
    method : one of :data:`METHODS`
        ``"absmax"`` (int-``bits``, per tensor, per ``axis`` or per flat ``blocksize`` block), ``"nf4"`` /
        ``"fp4"`` (:func:`codebook_bound`), ``"nf4_dq"`` / ``"fp4_dq"`` (with double quantization of absmax,
        :func:`nf4_double_quant_bound`; needs ``offset``), ``"dynamic"`` (8-bit dynamic map block-wise),
        ``"int8_vectorwise"`` (x 2-D, rows scaled by their absmax; ``threshold`` > 0 takes outlier columns out).
    bits, axis : for ``"absmax"`` (``axis`` in NumPy's meaning: ``axis=-1`` is one absmax per row)
    blocksize : block length; default 64 for 4-bit, 4096 for ``"dynamic"``; optional for ``"absmax"``
    threshold : outlier threshold of ``"int8_vectorwise"``: ``|x| ≥ threshold`` marks an outlier column
    offset : the double-quantization offset the kernel used (its ``QuantState.offset``), for ``*_dq``
    output_format : None (float32 result) or the format the result is delivered in (``"fp16"``, ``"bf16"``, a
        :class:`~minilora.formats.FloatFormat`): adds its rounding (:func:`output_rounding_bound`)
    return_scale : also return the scale each element was quantized with (its group's absmax)

    Returns
    -------
    bound : float64 array of ``x``'s shape; ``inf`` where the method makes no claim (outlier columns of
        ``"int8_vectorwise"``, which go to the 16-bit path). With ``return_scale``, ``(bound, scale)``.

    The group statistics are computed here from ``x`` as bitsandbytes stores them (``max |x|`` in float32;
    a partial last block floored at 1e-38), so a kernel's own (possibly wrong) state cannot loosen the bound;
    for double quantization the second-level scales are recomputed from ``absmax − offset``.

    >>> b = error_bound(np.array([1.0, 0.3, -0.2], np.float32), "nf4")
    >>> [round(v, 6) for v in b.tolist()]     # one block of absmax 1: e = 0.1519 (+ 8u) everywhere
    [0.151904, 0.151904, 0.151904]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    arr = np.asarray(backend.to_numpy(x))
    if arr.dtype.kind != "f":
        raise TypeError(f"x must be a floating-point array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("x contains NaN or Inf: no quantizer here accepts them, so there is no bound")
    if method != "absmax" and axis is not None:
        raise ValueError(f"axis is only for method 'absmax', got axis={axis!r} with method {method!r}")
    if method == "absmax":
        if axis is not None and blocksize is not None:
            raise ValueError(f"give axis or blocksize, not both (got axis={axis!r}, blocksize={blocksize!r})")
        if blocksize is not None:
            bs = _check_positive_blocksize(blocksize)
            a = _block_max_abs(arr.reshape(-1), bs, floor=False)
            scale = per_element(a, arr.size, bs).reshape(arr.shape)
        elif axis is not None:
            scale = np.broadcast_to(np.abs(arr).max(axis=axis, keepdims=True, initial=0), arr.shape)
        else:
            scale = np.full(arr.shape, np.abs(arr).max(initial=0), np.float32)
        bound = absmax_bound(scale, bits)
    elif method == "int8_vectorwise":
        if arr.ndim != 2:
            raise ValueError(f"x must be 2-D (rows, cols) for 'int8_vectorwise', got shape {arr.shape}")
        t = float(threshold)
        if not np.isfinite(t) or t < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        outlier = np.abs(arr) >= t if t > 0 else np.zeros(arr.shape, bool)
        rows = np.abs(np.where(outlier, np.float32(0), arr)).max(axis=1, initial=0)
        tiny = np.flatnonzero((rows > 0) & (rows < INT8_MIN_ROW_ABSMAX))
        if tiny.size:
            raise ValueError(f"row {tiny[0]} of x has absmax {rows[tiny[0]]!r} < {INT8_MIN_ROW_ABSMAX:.7g}: its "
                             f"scale 127/absmax overflows float32, so int8 vector-wise quantization has no "
                             f"error bound there (LLM.int8 takes FP16 input, which never gets there)")
        scale = np.broadcast_to(rows[:, None], arr.shape)
        bound = np.broadcast_to(int8_vectorwise_bound(rows)[:, None], arr.shape).copy()
        bound[:, outlier.any(axis=0)] = np.inf
    else:
        bs = DEFAULT_BLOCKSIZE[method] if blocksize is None else _check_positive_blocksize(blocksize)
        flat = arr.reshape(-1)
        a = _block_max_abs(flat, bs)
        code = create_dynamic_map() if method == "dynamic" else get_4bit_code(method[:3])
        if method.endswith("_dq"):
            if offset is None:
                raise ValueError(f"method {method!r} needs offset= (the QuantState.offset the kernel subtracted "
                                 f"from absmax before the second-level quantization)")
            off = np.float32(float(offset))
            a2 = _block_max_abs((a - off).astype(np.float32), 256)
            da = double_quant_absmax_bound(a, off, a2, create_dynamic_map())
            per_block = nf4_double_quant_bound(a, da, code)
        else:
            per_block = codebook_bound(a, code)
        scale = per_element(a, flat.size, bs).reshape(arr.shape)
        bound = per_element(per_block, flat.size, bs).reshape(arr.shape)
    bound = np.asarray(bound, np.float64)
    if output_format is not None:
        bound = output_rounding_bound(bound, arr, output_format)
    return (bound, np.asarray(scale, np.float32)) if return_scale else bound


def _check_positive_blocksize(blocksize: Any) -> int:
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    return int(blocksize)

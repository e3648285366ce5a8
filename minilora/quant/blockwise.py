"""The block-wise machinery shared by NF4, FP4 and the 8-bit dynamic map.

Every bitsandbytes block-wise quantizer is the same four steps with a different codebook
(``docs/facts.md`` §2–§3; Dettmers et al. 2022, "8-bit optimizers via block-wise quantization"):

1. flatten in C order and cut into blocks of ``blocksize`` consecutive elements (blocks cross rows);
2. per block ``absmax = max |x|`` in float32 (the last, partial block stores ``max(absmax, 1e-38)``);
3. scale into [-1, 1]: full blocks ``x · float32(1 / absmax)``, the partial block ``x / absmax``
   (bitsandbytes computes the two differently, so minilora does too), then clamp;
4. code = index of the nearest codebook value, found as the number of float32 midpoints
   ``(c[i] + c[i+1]) / 2`` of the *sorted* codebook strictly below the scaled value — so a value exactly
   on a midpoint takes the lower code.

Step 4 is ``searchsorted(midpoints, scaled, side="left")``, which counts midpoints strictly below.
On large arrays :func:`nearest_code` gets the same answer faster from a 65536-entry table keyed by the top
16 bits of the float32 pattern: each key covers an interval of floats containing at most one midpoint,
so ``count = base[key] + (scaled > threshold[key])``, with ``base`` and ``threshold`` made by
``searchsorted`` itself (the table is checked to have at most one midpoint per key, else the plain
``searchsorted`` is used). Tests compare the two paths on midpoints and their float neighbours.

Dequantization is ``float32(code[q] · absmax[block])``.

Example (the 4-value codebook {-1, 0, 0.5, 1}, one block of 4)
--------------------------------------------------------------
>>> import numpy as np
>>> code = np.array([-1, 0, .5, 1], np.float32)
>>> q, absmax = quantize_blocks(np.array([0.25, -2, 0.8, 2], np.float32), 4096, code)
>>> q.tolist(), absmax.tolist()        # 0.25/2 = 0.125 → 0; 0.8/2 = 0.4 → 0.5
([1, 0, 2, 3], [2.0])
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from minilora import backend

#: the floor bitsandbytes puts under a partial block's absmax (and under every reciprocal)
TINY = np.float32(1e-38)


def linspace_f32(start: float, end: float, n: int) -> np.ndarray:
    """torch's float32 ``linspace(start, end, n)``, bit for bit (docs/facts.md §2).

    ``step = float32((end − start) / (n − 1))`` computed in float32; point ``i`` is ``start + i·step`` for
    ``i < n // 2`` and ``end − (n − 1 − i)·step`` otherwise, each computed in float64 from the float32
    operands and rounded once to float32. (``np.linspace(..., dtype=np.float32)`` differs in places.)

    >>> float(linspace_f32(0.9677083, 0.5, 9)[0])
    0.9677082896232605
    """
    s, e = np.float32(start), np.float32(end)
    if n == 1:
        return np.array([s], np.float32)
    step = np.float32(np.float32(e - s) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    lo = np.float64(s) + i * np.float64(step)
    hi = np.float64(e) - (n - 1 - i) * np.float64(step)
    return np.where(i < n // 2, lo, hi).astype(np.float32)


def midpoints(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(midpoints, order)`` of a codebook: float32 midpoints of the sorted values, and the permutation.

    ``order[j]`` is the code whose value is the ``j``-th smallest (stable, so equal values keep their
    code order: FP4's two zeros give ``order[7] = 0, order[8] = 8``).
    """
    code = np.asarray(backend.to_numpy(code), np.float32)
    order = np.argsort(code, kind="stable")
    c = code[order]
    return ((c[:-1] + c[1:]) / np.float32(2)).astype(np.float32), order


@lru_cache(maxsize=16)
def _bit_table(mid_bytes: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Per 16-bit key of the float32 pattern: midpoints strictly below the key's interval, and the
    one midpoint inside it (``+inf`` if none). None when some key holds two midpoints."""
    mid = np.frombuffer(mid_bytes, np.float32)
    keys = np.arange(65536, dtype=np.uint32) << np.uint32(16)
    ends = np.stack([keys, keys | np.uint32(0xFFFF)]).view(np.float32)     # (2, 65536), may hold NaN
    lo, hi = np.fmin(ends[0], ends[1]), np.fmax(ends[0], ends[1])
    base = np.searchsorted(mid, lo, side="left")                           # midpoints < lo
    top = np.searchsorted(mid, hi, side="left")                            # midpoints < hi
    finite = np.isfinite(lo) & np.isfinite(hi)
    if np.any((top - base > 1) & finite):
        return None
    threshold = np.where(top > base, mid[np.minimum(base, mid.size - 1)], np.float32(np.inf))
    return base.astype(np.uint8 if mid.size < 256 else np.uint16), threshold.astype(np.float32)


def nearest_code(scaled: Any, code: Any) -> Any:
    """Index into ``code`` of the nearest value to each ``scaled`` (finite, float32); ties → lower value.

    Parameters
    ----------
    scaled : array of float32, any shape
    code : array of float32, shape (k,), k ≤ 256

    Returns
    -------
    uint8 array, shape of ``scaled``.
    """
    xp = backend.xp()
    mid, order = midpoints(code)
    table = _bit_table(mid.tobytes()) if xp is np and scaled.size > 4096 else None
    if table is None:
        pos = xp.searchsorted(xp.asarray(mid), scaled, side="left")
    else:
        base, threshold = table
        key = scaled.view(np.uint32) >> np.uint32(16)
        pos = base[key]
        pos += scaled > threshold[key]
    if np.array_equal(order, np.arange(order.size)):
        return pos.astype(xp.uint8, copy=False)
    return xp.asarray(order.astype(np.uint8))[pos]


def block_layout(n: int, blocksize: int) -> tuple[int, int]:
    """``(nfull, rem)``: number of full blocks and length of the last partial block."""
    return n // blocksize, n % blocksize


def scale_blocks(flat: Any, blocksize: int) -> tuple[Any, Any]:
    """Steps 2–3: per-block absmax (float32, shape (nblocks,)) and the scaled values in [-1, 1].

    ``flat`` is 1-D float32. Non-finite input shows up as a non-finite absmax (checked by the caller).
    """
    xp = backend.xp()
    n = flat.size
    nfull, rem = block_layout(n, blocksize)
    full = flat[: nfull * blocksize].reshape(nfull, blocksize)                 # (nfull, bs)
    absmax = xp.empty(nfull + (rem > 0), dtype=xp.float32)
    if nfull:                                                                  # "+ 0" turns −0.0 into 0.0
        absmax[:nfull] = xp.maximum(full.max(axis=1), -full.min(axis=1)) + xp.float32(0)
    scaled = xp.empty(n, dtype=xp.float32)
    with np.errstate(invalid="ignore", over="ignore"):                       # NaN/Inf: caller raises
        recip = xp.float32(1) / xp.maximum(absmax[:nfull], TINY)               # float32(1 / absmax)
        xp.multiply(full, recip[:, None], out=scaled[: nfull * blocksize].reshape(nfull, blocksize))
        if rem:
            tail = flat[nfull * blocksize:]
            absmax[nfull] = xp.maximum(xp.abs(tail).max(), TINY)
            scaled[nfull * blocksize:] = tail / absmax[nfull]                  # a true division here
    xp.clip(scaled, -1, 1, out=scaled)
    return absmax, scaled


def quantize_blocks(flat: Any, blocksize: int, code: Any, pad_even: bool = False) -> tuple[Any, Any]:
    """Block-wise quantize 1-D float32 ``flat`` with ``code``: ``(codes uint8 (n,), absmax (nblocks,))``.

    ``pad_even=True`` appends one scaled 0.0 to an odd-length input before coding (what bitsandbytes does
    before packing 4-bit codes): the pad nibble is the code of 0.0 — 7 for NF4, 0 for FP4 — and the
    result has ``n + 1`` codes.
    """
    xp = backend.xp()
    absmax, scaled = scale_blocks(flat, blocksize)
    if pad_even and scaled.size % 2:
        scaled = xp.concatenate([scaled, xp.zeros(1, xp.float32)])
    return nearest_code(scaled, code), absmax


def dequantize_blocks(values: Any, absmax: Any, blocksize: int) -> Any:
    """``float32(values · absmax[i // blocksize])`` for decoded code values (1-D float32, in place)."""
    xp = backend.xp()
    n = values.size
    nfull, rem = block_layout(n, blocksize)
    head = values[: nfull * blocksize].reshape(nfull, blocksize)
    xp.multiply(head, absmax[:nfull, None].astype(xp.float32), out=head)
    if rem:
        values[nfull * blocksize:] *= absmax[nfull].astype(xp.float32)  # a 0-d array: no host round trip
    return values


def pack_nibbles(q: Any) -> Any:
    """Pack 4-bit codes two per byte, the even element in the HIGH nibble.

    An odd length gets code 0 appended here; :func:`quantize_blocks` with ``pad_even=True`` pads with the
    code of 0.0 instead, as bitsandbytes does.

    >>> pack_nibbles(np.array([1, 2, 15], np.uint8)).tolist()     # 0x12, 0xF0
    [18, 240]
    """
    xp = backend.xp()
    if q.size % 2:
        q = xp.concatenate([q, xp.zeros(1, dtype=xp.uint8)])
    return (q[0::2] << xp.uint8(4)) | q[1::2]


@lru_cache(maxsize=8)
def _pair_table(code_bytes: bytes) -> np.ndarray:
    """(256, 2) float32: byte ``b`` decodes to ``(code[b >> 4], code[b & 15])``."""
    code = np.frombuffer(code_bytes, np.float32)
    b = np.arange(256)
    return np.stack([code[b >> 4], code[b & 15]], axis=1).astype(np.float32)


def unpack_decode(packed: Any, code: Any, n: int) -> Any:
    """Decode packed 4-bit codes to their codebook values, float32 shape (n,) (a fresh, writable array)."""
    xp = backend.xp()
    table = xp.asarray(_pair_table(np.asarray(backend.to_numpy(code), np.float32).tobytes()))
    # One 8-byte gather per byte: each (code_hi, code_lo) row viewed as a single uint64, so ``take`` on a
    # 1-D table copies both values at once (about 7x faster than indexing the (256, 2) rows).
    pairs = xp.take(table.view(xp.uint64).reshape(-1), packed)
    return pairs.view(xp.float32)[:n]


def unpack_nibbles(packed: Any, n: int) -> Any:
    """The 4-bit codes of ``packed`` as uint8, shape (n,): high nibble first."""
    xp = backend.xp()
    q = xp.empty(2 * packed.size, dtype=xp.uint8)
    q[0::2] = packed >> xp.uint8(4)
    q[1::2] = packed & xp.uint8(15)
    return q[:n]

"""8-bit block-wise quantization with the dynamic map, and double quantization of the absmax values.

The 8-bit "dynamic tree" map (Dettmers 2016, "8-Bit Approximations for Parallelism in Deep Learning";
bitsandbytes ``create_dynamic_map``) spends its 7 non-sign bits on a decimal exponent ``10^(i−6)``,
``i = 0..6``, and a linear fraction with ``2^i`` steps in [0.1, 1]: small magnitudes get few fraction
steps, large ones many. 127 negative values (no −1.0), 0 and 127 positive values up to 1.0. The QLoRA
paper calls it "8-bit floats"; it is not IEEE/OCP FP8 (those are in :mod:`minilora.formats`).

Double quantization (QLoRA §3, "Double Quantization"): the float32 absmax of every 64-element block
costs 32/64 = 0.5 bit per parameter. QLoRA quantizes these scales once more — subtract their mean
(``offset``), quantize with the 8-bit map in blocks of 256 — leaving ``8/64 + 32/(64·256) = 0.127``
bit per parameter (the blog's "8/16 + …" is a typo, docs/errata.md, erratum 9). Reconstruction (docs/facts.md §3)::

    absmax[i] ≈ float32(code8[q[i]] · absmax2[i // 256]) + offset

Departures: bitsandbytes takes ``offset`` as torch's float32 mean, which lands up to ~4 ulp from the
exact mean depending on the summation order; minilora takes the correctly rounded one,
``float32(mean in float64)``. bitsandbytes' native CPU 8-bit kernel approximates the nearest code
through a lookup table; minilora (like bitsandbytes' pure-PyTorch kernel) takes the exact nearest code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minilora import backend
from minilora.quant.blockwise import dequantize_blocks, linspace_f32, quantize_blocks
from minilora.quant.state import QuantState, as_float_array, check_blocksize, check_finite_stats

__all__ = ["create_dynamic_map", "quantize_blockwise", "dequantize_blockwise",
           "compress_absmax", "decompress_absmax", "DQ_BLOCKSIZE"]

#: blocksize of the second-level quantization of absmax (QLoRA, bitsandbytes)
DQ_BLOCKSIZE = 256
#: blocksizes accepted by 8-bit block-wise quantization (bitsandbytes accepts 64 … 4096; 256 is DQ's)
BLOCKWISE_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """bitsandbytes' 8-bit dynamic quantization map, bit for bit, for every argument it accepts (docs/facts.md §3).

    With ``e = max_exponent_bits`` and ``f = total_bits − 1 − e`` (the bits a level has for its fraction
    beyond its exponent): for ``i = 0 .. e − 1``, ``int(2^(i + f) + 1)`` points of torch's float32
    ``linspace(0.1, 1, ·)`` (``2^(i + f + 1) + 1`` unsigned), the float32 midpoints of neighbours, times
    ``float32(10^(i − (e − 1)))`` in float32, with both signs when ``signed``; when ``f > 0`` another
    ``2^f − 1`` midpoints at the last scale; then 0 and 1.0; padded with zeros to 256 values; sorted.
    (Scaling in float64 instead differs in 30 values of the default map.)

    ``int()`` truncates the point count as bitsandbytes does, so ``f < 0`` is allowed: levels with
    ``i + f < 0`` have one point and add nothing (``create_dynamic_map(True, 8, 8)`` has 256 values too).

    Parameters
    ----------
    signed : bool
        Both signs (127 negative values) or only non-negative ones.
    max_exponent_bits : int
        Number of decimal exponents ``10^0 … 10^-(e−1)``.
    total_bits : int
        Bits of a code; a float with an integer value is taken as bitsandbytes takes it.

    Returns
    -------
    numpy.ndarray of float32, shape (max(256, 2**total_bits),), sorted (shorter maps are padded with zeros,
    as in bitsandbytes).

    Raises
    ------
    ValueError
        Where bitsandbytes fails: the values do not number ``2**total_bits`` (e.g. ``signed=False`` with
        ``max_exponent_bits != total_bits − 1``; bitsandbytes' ``AssertionError``), or ``max_exponent_bits <= 0``
        leaves no exponent for the fraction items (its ``UnboundLocalError``).
    TypeError
        For a non-integer ``max_exponent_bits``, or a point count that is not an integer (``total_bits`` 8.5 or
        9.0 with a fraction level: torch's ``linspace`` refuses a float count).

    Notes
    -----
    NumPy integers are taken as Python integers (bitsandbytes would raise on ``2 ** np.int64(-1)``).

    >>> m = create_dynamic_map()
    >>> m.size, float(m[0]), float(m[127]), float(m[-1])
    (256, -0.992968738079071, 0.0, 1.0)
    """
    call = f"create_dynamic_map(signed={signed!r}, max_exponent_bits={max_exponent_bits!r}, total_bits={total_bits!r})"
    if isinstance(max_exponent_bits, np.integer):
        max_exponent_bits = int(max_exponent_bits)
    if isinstance(total_bits, np.integer):
        total_bits = int(total_bits)
    if not isinstance(max_exponent_bits, int):
        raise TypeError(f"{call}: max_exponent_bits must be an integer, got {type(max_exponent_bits).__name__}")
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    data: list[np.ndarray] = []

    def level(i: int, items: Any) -> None:
        if not isinstance(items, int):
            raise TypeError(f"{call}: a level needs {items!r} linspace points, not an integer "
                            f"(total_bits must be an integer)")
        b = linspace_f32(0.1, 1, items)
        means = (b[:-1] + b[1:]) / np.float32(2)                          # float32
        scale = np.float32(10 ** (-(max_exponent_bits - 1) + i))
        data.append(scale * means)
        if signed:
            data.append(-scale * means)

    for i in range(max_exponent_bits):
        extra = 0 if signed else 1
        level(i, int(2 ** (i + non_sign_bits - max_exponent_bits + extra) + 1))
    if additional_items > 0:
        if max_exponent_bits <= 0:
            raise ValueError(f"{call}: the {additional_items} fraction items need max_exponent_bits >= 1")
        level(max_exponent_bits - 1, additional_items + 1)
    values = np.concatenate(data + [np.array([0.0, 1.0], np.float32)])
    if values.size != 2**total_bits:
        raise ValueError(f"{call} gives {values.size} values where a {total_bits}-bit map has 2**{total_bits}; "
                         f"signed=False needs max_exponent_bits = total_bits - 1, and total_bits must be an integer")
    values = np.concatenate([values, np.zeros(max(0, 256 - values.size), np.float32)])
    return np.sort(values).astype(np.float32)


def _dynamic_code() -> Any:
    return backend.asarray(create_dynamic_map())


def quantize_blockwise(x: Any, blocksize: int = 4096, code: Any = None) -> tuple[Any, QuantState]:
    """8-bit block-wise quantization: each element becomes the index of the nearest ``code`` value.

    Parameters
    ----------
    x : float array, any shape (computed in float32)
    blocksize : int, power of two in [32, 4096]
    code : float32 array of up to 256 values, optional (default: :func:`create_dynamic_map`)

    Returns
    -------
    q : uint8 array, shape of ``x`` (index into ``code``; ties go to the lower value)
    state : QuantState with ``quant_type="dynamic"`` and float32 ``absmax`` of shape (ceil(n / blocksize),)

    Raises
    ------
    TypeError for a non-float ``x``; ValueError for NaN/Inf, a bad blocksize or a code longer than 256.
    """
    xp = backend.xp()
    arr = as_float_array(x, "x")
    blocksize = check_blocksize(blocksize, allowed=BLOCKWISE_SIZES)
    code = _dynamic_code() if code is None else xp.asarray(code, dtype=xp.float32)
    if code.ndim != 1 or not 2 <= code.size <= 256:
        raise ValueError(f"code must be 1-D with 2 to 256 values, got shape {tuple(code.shape)}")
    flat = arr.astype(xp.float32, copy=False).reshape(-1)
    q, absmax = quantize_blocks(flat, blocksize, code)
    check_finite_stats(absmax, "x")
    state = QuantState(absmax=absmax, shape=tuple(arr.shape), dtype=arr.dtype, blocksize=blocksize,
                       quant_type="dynamic", code=code)
    return q.reshape(arr.shape), state


def dequantize_blockwise(q: Any, quant_state: QuantState) -> Any:
    """Undo :func:`quantize_blockwise`: ``float32(code[q] · absmax[i // blocksize])``, original shape."""
    xp = backend.xp()
    q = xp.asarray(q)
    if q.dtype != xp.uint8:
        raise TypeError(f"q must be uint8 codes, got dtype {q.dtype}")
    n = quant_state.numel
    if q.size != n:
        raise ValueError(f"q has {q.size} codes but quant_state.shape {tuple(quant_state.shape)} needs {n}")
    if quant_state.absmax.size != quant_state.nblocks:
        raise ValueError(f"quant_state.absmax has {quant_state.absmax.size} values, expected "
                         f"{quant_state.nblocks} for {n} elements at blocksize {quant_state.blocksize}")
    values = xp.asarray(quant_state.code, dtype=xp.float32)[q.reshape(-1)]
    return dequantize_blocks(values, quant_state.absmax, quant_state.blocksize).reshape(quant_state.shape)


def exact_mean_f32(a: Any) -> np.float32:
    """The correctly rounded float32 mean of float32 values: ``float32(mean in float64)`` (0.0 when empty).

    The float64 sum of up to 2^29 float32 values is exact enough that one rounding remains.
    """
    xp = backend.xp()
    if a.size == 0:
        return np.float32(0.0)
    return np.float32(float(xp.mean(a.astype(xp.float64))))


def compress_absmax(absmax: Any) -> tuple[Any, np.float32, QuantState]:
    """Double quantization of float32 block scales: ``(uint8 codes, offset, state2)``.

    ``offset = mean(absmax)``; ``codes, state2 = quantize_blockwise(absmax − offset, 256, dynamic map)``.
    Empty ``absmax`` gives empty codes and offset 0.0.
    """
    offset = exact_mean_f32(absmax)
    q, state2 = quantize_blockwise(absmax - offset, blocksize=DQ_BLOCKSIZE)
    return q, offset, state2


def decompress_absmax(q: Any, offset: Any, state2: QuantState) -> Any:
    """Reconstruct the block scales: ``float32(code[q] · absmax2[i // 256]) + offset`` (float32)."""
    xp = backend.xp()
    return dequantize_blockwise(q, state2) + xp.float32(offset)

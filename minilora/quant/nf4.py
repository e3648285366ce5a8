"""4-bit NormalFloat (NF4) and FP4 block-wise quantization, as in QLoRA and bitsandbytes.

NF4 (Dettmers et al. 2023, QLoRA, arXiv 2305.14314, §3 Eq. 4) places its 16 levels at quantiles of
N(0, 1), so that each level is used about equally often by normally distributed weights:

.. math:: q_i = \\tfrac12\\left(Q_X(\\tfrac{i}{2^k+1}) + Q_X(\\tfrac{i+1}{2^k+1})\\right)

(the blog's "z^k + 1" is 2^k + 1, docs/errata.md, erratum 5). Taken literally at ``i = 0`` this asks for
``Q_X(0) = −∞``. bitsandbytes instead takes 8 positive quantiles on ``linspace(offset, 0.5, 9)`` and
7 negative ones on ``linspace(offset, 0.5, 8)``, adds an exact 0 and normalizes by the largest, with
``offset = 0.9677083 ≈ ½((1 − 1/30) + (1 − 1/32))`` — the blog's "1 − 1/(215)" is 1 − 1/(2·15)
(erratum 8). So NF4 has 2^(k−1) = 8 negative levels and 2^(k−1)+1 = 9 non-negative ones (erratum 6):
asymmetric, with an exact zero and −1 and 1 both present.

FP4 is bitsandbytes' E2M1 float: code bit 3 is the sign, the values are
``[0, 0.0625, 8, 12, 4, 6, 2, 3] / 12`` for codes 0–7.

Quantization follows :mod:`minilora.quant.blockwise` (docs/facts.md §2), then packs two codes per byte with the
even element in the high nibble (an odd length gets a scaled 0.0 appended first: the pad nibble is 7 for
NF4, 0 for FP4). ``compress_statistics=True`` adds double quantization of absmax
(:mod:`minilora.quant.double_quant`); the 4-bit codes are the same either way.

Names and defaults are bitsandbytes': ``quantize_4bit`` defaults to ``quant_type="fp4"`` as there (QLoRA's
NF4 is ``quant_type="nf4"``, or :func:`quantize_nf4`); ``blocksize=None`` means 64.

Departures from bitsandbytes:

* the packed array is 1-D of shape ``(ceil(n / 2),)`` (bitsandbytes returns ``(ceil(n / 2), 1)``);
* ``dequantize_4bit`` always returns float32 (bitsandbytes casts to the state's dtype);
* the double-quantization offset is the correctly rounded mean (see :mod:`~minilora.quant.double_quant`);
* the arguments are ``quantize_4bit(x, blocksize, quant_type, compress_statistics)``, without bitsandbytes'
  ``absmax=`` / ``out=`` buffers and ``quant_storage``; ``dequantize_4bit(packed, quant_state)`` needs the state
  (bitsandbytes also takes ``absmax`` + ``out`` instead); ``quantize_nf4`` / ``quantize_fp4`` take ``blocksize``
  and ``compress_statistics`` by keyword only, since bitsandbytes' second positional argument is ``absmax``;
* ``dequantize_nf4`` / ``dequantize_fp4`` refuse a state of the other type (bitsandbytes silently
  dequantizes it by the state's own type).

Example
-------
>>> import numpy as np
>>> packed, state = quantize_4bit(np.array([0.5, -1.0, 1.0], np.float32), blocksize=64, quant_type="nf4")
>>> [hex(b) for b in packed.tolist()], state.absmax.tolist()   # codes 12, 0, 15 (+ pad 7: the code of 0.0)
(['0xc0', '0xf7'], [1.0])
>>> dequantize_4bit(packed, state).tolist()
[0.44070982933044434, -1.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minilora import backend
from minilora.quant.blockwise import (
    dequantize_blocks,
    linspace_f32,
    pack_nibbles,
    quantize_blocks,
    unpack_decode,
)
from minilora.quant.double_quant import compress_absmax, decompress_absmax
from minilora.quant.state import QuantState, as_float_array, check_blocksize, check_choice, check_finite_stats

__all__ = ["nf4_code", "fp4_code", "get_4bit_code", "create_normal_map", "quantize_4bit", "dequantize_4bit",
           "quantize_nf4", "quantize_fp4", "dequantize_nf4", "dequantize_fp4", "QUANT_TYPES", "NF4_OFFSET"]

QUANT_TYPES = ("nf4", "fp4")
NF4_OFFSET = 0.9677083

#: bitsandbytes' NF4 table as float32 bit patterns (docs/facts.md §2), indexed by the 4-bit code
_NF4_BITS = np.array([
    0xBF800000, 0xBF3239B1, 0xBF066B30, 0xBECA32A0, 0xBE91A24D, 0xBE3D353F, 0xBDBA7871, 0x00000000,
    0x3DA2FAFF, 0x3E24CAE3, 0x3E7C04DD, 0x3EAD033A, 0x3EE1A4B8, 0x3F1007AB, 0x3F3913B3, 0x3F800000,
], dtype=np.uint32)


def nf4_code() -> np.ndarray:
    """The 16 NF4 levels (float32, sorted, index = 4-bit code), bit-equal to bitsandbytes."""
    return _NF4_BITS.view(np.float32).copy()


def fp4_code() -> np.ndarray:
    """The 16 FP4 (E2M1) levels by code (float32): ``[0, 0.0625, 8, 12, 4, 6, 2, 3, −…] / 12``."""
    mag = np.array([0, 0.0625, 8, 12, 4, 6, 2, 3], np.float32)
    return (np.concatenate([mag, -mag]) / np.float32(12)).astype(np.float32) + np.float32(0)   # no −0


def get_4bit_code(quant_type: str) -> np.ndarray:
    """``nf4_code()`` or ``fp4_code()`` by name; ValueError for anything else."""
    check_choice(quant_type, QUANT_TYPES, "quant_type")
    return nf4_code() if quant_type == "nf4" else fp4_code()


def create_normal_map(offset: float = NF4_OFFSET, use_extra_value: bool = True,
                      recipe: str = "bitsandbytes") -> np.ndarray:
    """Build NormalFloat levels from N(0, 1) quantiles (bitsandbytes ``create_normal_map``).

    Parameters
    ----------
    offset : float
        Outermost quantile; ``norm.ppf(offset)`` ≈ 1.848 becomes the level 1.0.
    use_extra_value : bool
        True: 8 positive + 7 negative + 0 = 16 levels (NF4). False: 7 + 7 + 0 = 15 levels (symmetric).
    recipe : {"bitsandbytes", "float64"}
        ``"bitsandbytes"`` reproduces the library's mixed precision — torch's float32 linspace,
        ``norm.ppf`` in float64 on those float32 points, cast to float32, divide by the max in float32 —
        and rebuilds :func:`nf4_code` bit for bit. ``"float64"`` does everything in float64 and rounds
        once at the end: the mathematically cleaner recipe, off by a few ulp from the library's table.

    Returns
    -------
    numpy.ndarray of float32, sorted, shape (16,) or (15,). (bitsandbytes pads to 256 with zeros.)
    """
    from scipy.stats import norm  # noqa: PLC0415  (scipy is a dependency; imported lazily: it is slow)

    check_choice(recipe, ("bitsandbytes", "float64"), "recipe")
    n_pos = 9 if use_extra_value else 8
    if recipe == "float64":
        pos = norm.ppf(np.linspace(offset, 0.5, n_pos)[:-1])
        neg = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
        v = np.sort(np.concatenate([pos, [0.0], neg]))
        return (v / v.max()).astype(np.float32)
    pos = norm.ppf(linspace_f32(offset, 0.5, n_pos)[:-1].astype(np.float64)).astype(np.float32)
    neg = (-norm.ppf(linspace_f32(offset, 0.5, 8)[:-1].astype(np.float64))).astype(np.float32)
    v = np.sort(np.concatenate([pos, np.zeros(1, np.float32), neg]))
    return (v / v.max()).astype(np.float32)


def quantize_4bit(x: Any, blocksize: int | None = 64, quant_type: str = "fp4",
                  compress_statistics: bool = False) -> tuple[Any, QuantState]:
    """Block-wise 4-bit quantization (NF4 or FP4), packed two codes per byte.

    Parameters
    ----------
    x : float array, any shape (computed in float32, flattened in C order; blocks cross rows)
    blocksize : int, power of two in [32, 4096] (default 64, as in QLoRA; None means 64, as in bitsandbytes)
    quant_type : {"fp4", "nf4"}
        Default ``"fp4"``, bitsandbytes' default; QLoRA's NF4 is ``"nf4"`` (or :func:`quantize_nf4`).
    compress_statistics : bool
        Double quantization of absmax (8-bit dynamic map, blocks of 256, minus their mean).

    Returns
    -------
    packed : uint8 array, shape (ceil(n / 2),); byte k = ``q[2k] << 4 | q[2k+1]``
    quant_state : QuantState
        ``absmax`` float32 (nblocks,), or uint8 (nblocks,) with ``offset`` and ``state2`` when
        ``compress_statistics``. An empty ``x`` gives empty ``packed`` and ``absmax`` (and offset 0.0).

    Raises
    ------
    TypeError if ``x`` is not floating point; ValueError for NaN/Inf in ``x``, a bad ``blocksize`` or an
    unknown ``quant_type``.
    """
    xp = backend.xp()
    arr = as_float_array(x, "x")
    blocksize = check_blocksize(64 if blocksize is None else blocksize)
    code = xp.asarray(get_4bit_code(quant_type))
    flat = arr.astype(xp.float32, copy=False).reshape(-1)
    q, absmax = quantize_blocks(flat, blocksize, code, pad_even=True)
    check_finite_stats(absmax, "x")
    state = QuantState(absmax=absmax, shape=tuple(arr.shape), dtype=arr.dtype, blocksize=blocksize,
                       quant_type=quant_type, code=code)
    if compress_statistics:
        state.absmax, state.offset, state.state2 = compress_absmax(absmax)
    return pack_nibbles(q), state


def dequantize_4bit(packed: Any, quant_state: QuantState) -> Any:
    """Undo :func:`quantize_4bit`: ``float32(code[q] · absmax[i // blocksize])``, shape ``quant_state.shape``.

    With double quantization ``absmax`` is first rebuilt as ``float32(code8[q8] · absmax2) + offset``.

    Raises
    ------
    TypeError if ``packed`` is not uint8; ValueError if ``packed`` or ``absmax`` has the wrong length for
    ``quant_state.shape`` and ``blocksize``, or the quant_type is unknown.
    """
    xp = backend.xp()
    packed = xp.asarray(packed)
    if packed.dtype != xp.uint8:
        raise TypeError(f"packed must be uint8, got dtype {packed.dtype}")
    check_choice(quant_state.quant_type, QUANT_TYPES, "quant_state.quant_type")
    n = quant_state.numel
    if packed.size != -(-n // 2):
        raise ValueError(f"packed has {packed.size} bytes but quant_state.shape {tuple(quant_state.shape)} "
                         f"({n} elements) needs {-(-n // 2)}")
    if quant_state.absmax.size != quant_state.nblocks:
        raise ValueError(f"quant_state.absmax has {quant_state.absmax.size} values, expected "
                         f"{quant_state.nblocks} for {n} elements at blocksize {quant_state.blocksize}")
    absmax = quant_state.absmax
    if quant_state.nested:
        absmax = decompress_absmax(absmax, quant_state.offset, quant_state.state2)
    values = unpack_decode(packed.reshape(-1), quant_state.code, n)
    return dequantize_blocks(values, absmax, quant_state.blocksize).reshape(quant_state.shape)


def quantize_nf4(x: Any, *, blocksize: int | None = 64, compress_statistics: bool = False) -> tuple[Any, QuantState]:
    """``quantize_4bit(x, blocksize, "nf4", compress_statistics)`` (bitsandbytes' ``quantize_nf4``)."""
    return quantize_4bit(x, blocksize, "nf4", compress_statistics)


def quantize_fp4(x: Any, *, blocksize: int | None = 64, compress_statistics: bool = False) -> tuple[Any, QuantState]:
    """``quantize_4bit(x, blocksize, "fp4", compress_statistics)`` (bitsandbytes' ``quantize_fp4``)."""
    return quantize_4bit(x, blocksize, "fp4", compress_statistics)


def _dequantize_named(packed: Any, quant_state: QuantState, quant_type: str) -> Any:
    if quant_state.quant_type != quant_type:
        raise ValueError(f"dequantize_{quant_type} needs a QuantState with quant_type {quant_type!r}, got "
                         f"{quant_state.quant_type!r}; use dequantize_4bit, which follows the state")
    return dequantize_4bit(packed, quant_state)


def dequantize_nf4(packed: Any, quant_state: QuantState) -> Any:
    """:func:`dequantize_4bit` of an NF4 state (bitsandbytes' ``dequantize_nf4``); ValueError for FP4."""
    return _dequantize_named(packed, quant_state, "nf4")


def dequantize_fp4(packed: Any, quant_state: QuantState) -> Any:
    """:func:`dequantize_4bit` of an FP4 state (bitsandbytes' ``dequantize_fp4``); ValueError for NF4."""
    return _dequantize_named(packed, quant_state, "fp4")

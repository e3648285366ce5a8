"""`QuantState`: what a block-wise quantizer stores besides the codes, and how many bytes that is.

bitsandbytes keeps the per-block scales and the codebook of a quantized tensor in a ``QuantState``;
minilora keeps the same fields under the same names (``absmax, shape, dtype, blocksize, quant_type,
code, offset, state2``) so a student moving to the real library finds them again.

Counting bytes
--------------
:attr:`QuantState.nbytes` counts every array actually stored for one tensor, split three ways:

* ``data_nbytes``  — the packed codes: ``ceil(n · bits / 8)`` bytes (4 bits for NF4/FP4, 8 for
  8-bit block-wise). The packed array itself lives outside the state (as in bitsandbytes), so this
  figure comes from ``shape`` and ``quant_type``;
* ``stats_nbytes`` — the per-block statistics: ``absmax.nbytes`` (float32, or uint8 codes with double
  quantization) plus, recursively, the second-level ``state2.absmax``;
* ``const_nbytes`` — fixed per-tensor constants that do not grow with ``n``: the codebook (16 float32
  = 64 bytes for NF4/FP4, 256 float32 = 1024 bytes for the 8-bit dynamic map), and the float32
  ``offset`` (4 bytes).

:attr:`bits_per_param` is ``8 · (data + stats) / n`` — the per-block figure the QLoRA paper quotes:
4.5 at blocksize 64 and 4.126953125 with double quantization (``4 + 8/64 + 32/(64·256)``), when ``n``
is a multiple of ``64 · 256``. :attr:`bits_per_param_total` adds the constants
(``8 · nbytes / n``); on a 4096×4096 matrix they add 1092 bytes, 5.2e-4 bit per parameter.

Files bitsandbytes reads
------------------------
:meth:`QuantState.as_dict` / :meth:`QuantState.from_dict` write and read bitsandbytes 0.50.2's dictionaries
byte for byte (:mod:`minilora.quant.serialize`, docs/facts.md §10).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minilora import backend

#: blocksizes bitsandbytes accepts for 4-bit and block-wise quantization (powers of two)
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
#: bits of one stored code per quant_type
CODE_BITS = {"nf4": 4, "fp4": 4, "dynamic": 8}


@dataclass
class QuantState:
    """Everything needed to undo a block-wise quantization, except the codes themselves.

    Attributes
    ----------
    absmax : array, shape (nblocks,)
        float32 per-block absolute maxima; with double quantization, the uint8 8-bit codes of
        ``absmax - offset`` (then ``state2`` holds their scales).
    shape : tuple of int
        Shape of the original tensor.
    dtype : numpy.dtype or "bfloat16"
        dtype of the original tensor (the computation itself is float32, as in bitsandbytes); the string
        ``"bfloat16"`` for a state read from a bfloat16 checkpoint (NumPy has no bfloat16 dtype).
    blocksize : int
        Number of consecutive elements (C order) sharing one absmax.
    quant_type : str
        ``"nf4"``, ``"fp4"`` or ``"dynamic"`` (the 8-bit dynamic map).
    code : array, shape (16,) or (256,)
        float32 codebook: code ``i`` decodes to ``code[i] · absmax``.
    offset : numpy.float32 or None
        Mean of the absmax values subtracted before double quantization.
    state2 : QuantState or None
        The state of the second-level (8-bit, blocksize 256) quantization of ``absmax``.
    """

    absmax: Any
    shape: tuple[int, ...]
    dtype: Any
    blocksize: int
    quant_type: str
    code: Any
    offset: Any = None
    state2: QuantState | None = field(default=None)

    @property
    def nested(self) -> bool:
        """True when ``absmax`` is itself quantized (double quantization)."""
        return self.state2 is not None

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def nblocks(self) -> int:
        return -(-self.numel // self.blocksize)

    @property
    def data_nbytes(self) -> int:
        """Bytes of the packed codes, ``ceil(n · bits / 8)``."""
        return -(-self.numel * CODE_BITS[self.quant_type] // 8)

    @property
    def stats_nbytes(self) -> int:
        """Bytes of the per-block statistics, including the nested level's."""
        nested = self.state2.stats_nbytes if self.state2 is not None else 0
        return int(self.absmax.nbytes) + nested

    @property
    def const_nbytes(self) -> int:
        """Bytes of the fixed per-tensor constants: codebooks and offset."""
        own = int(self.code.nbytes) + (4 if self.offset is not None else 0)
        return own + (self.state2.const_nbytes if self.state2 is not None else 0)

    @property
    def nbytes(self) -> int:
        """All bytes stored for this tensor: packed codes + statistics + constants."""
        return self.data_nbytes + self.stats_nbytes + self.const_nbytes

    @property
    def bits_per_param(self) -> float:
        """``8 · (data + stats) / n``: 4.5 for NF4 at blocksize 64, 4.126953125 with double quantization."""
        n = self.numel
        return 8.0 * (self.data_nbytes + self.stats_nbytes) / n if n else 0.0

    @property
    def bits_per_param_total(self) -> float:
        """``8 · nbytes / n``: :attr:`bits_per_param` plus the per-tensor constants."""
        n = self.numel
        return 8.0 * self.nbytes / n if n else 0.0

    def as_dict(self, packed: bool = False) -> dict[str, Any]:
        """bitsandbytes' ``QuantState.as_dict``: the state as a flat dict, for ``state_dict`` / safetensors files.

        Parameters
        ----------
        packed : bool
            False: arrays and plain values (``quant_type``, ``blocksize``, ``dtype``, ``shape``, ``nested_*``).
            True: only arrays — the plain values packed as UTF-8 JSON into a uint8 array under
            ``"quant_state.bitsandbytes__<quant_type>"`` (4-bit states only), byte for byte as bitsandbytes.

        Returns
        -------
        dict, in bitsandbytes' key order: ``absmax`` (float32 (nblocks,), uint8 when nested), ``quant_map``
        (float32 (16,)), nested: ``nested_absmax`` (float32 (ceil(nblocks / 256),)), ``nested_quant_map``
        (float32 (256,)). Arrays are host NumPy copies (the dict is meant for files).

        Notes
        -----
        ``dtype`` is written as bitsandbytes names it (``"float32"``, ``"float16"``, ``"bfloat16"``; a float64
        input is written ``"float64"``, which bitsandbytes reads but its ``dequantize_4bit`` refuses).
        """
        from minilora.quant.serialize import state_as_dict  # noqa: PLC0415  (it imports this module)

        return state_as_dict(self, packed)

    @classmethod
    def from_dict(cls, qs_dict: Mapping[str, Any]) -> QuantState:
        """bitsandbytes' ``QuantState.from_dict``: rebuild a 4-bit state from :meth:`as_dict`'s output.

        Parameters
        ----------
        qs_dict : mapping
            Packed (one ``"…quant_state.bitsandbytes__nf4|fp4"`` uint8 array) or unpacked, as bitsandbytes
            writes it; keys may carry a prefix (``"….weight.absmax"``), which is stripped. Arrays may be NumPy
            arrays or anything ``numpy.asarray`` reads (e.g. CPU torch tensors). It is not modified.

        Returns
        -------
        QuantState on the current backend. ``dtype`` is a NumPy dtype, or the string ``"bfloat16"``.

        Raises
        ------
        TypeError
            If ``qs_dict`` is not a mapping.
        ValueError
            For missing or unknown keys, a packed entry that is not UTF-8 JSON of an object, wrong dtypes or
            shapes (``absmax`` must have ``ceil(prod(shape) / blocksize)`` values, ``nested_absmax``
            ``ceil(nblocks / nested_blocksize)``), non-finite values, or a ``quant_map`` other than the NF4/FP4
            table (bitsandbytes dequantizes with its built-in table and ignores a different map).
        """
        from minilora.quant.serialize import state_from_dict  # noqa: PLC0415  (it imports this module)

        return state_from_dict(cls, qs_dict)

    # Compared by value, as bitsandbytes' QuantState.__eq__ does; mutable, so not hashable (as there).
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        """bitsandbytes' ``QuantState.__eq__``: arrays by ``allclose``, the rest exactly, ``state2`` recursively.

        ``absmax`` and ``code`` are equal when ``allclose(rtol=1e-5, atol=1e-6)`` holds (exact for the uint8
        codes of a nested ``absmax``); ``shape``, ``dtype``, ``blocksize``, ``quant_type`` and ``offset`` must be
        equal, ``offset`` and ``state2`` both absent or both present and equal. (Arrays of different shapes or
        kinds are unequal here, where torch's ``allclose`` would broadcast or raise.)
        """
        if not isinstance(other, QuantState):
            return NotImplemented
        return bool(
            _allclose(self.absmax, other.absmax)
            and tuple(self.shape) == tuple(other.shape)
            and _allclose(self.code, other.code)
            and _dtype_str(self.dtype) == _dtype_str(other.dtype)
            and self.blocksize == other.blocksize
            and self.quant_type == other.quant_type
            and (self.offset is None) == (other.offset is None)
            and (self.offset is None or bool(self.offset == other.offset))
            and (self.state2 is None) == (other.state2 is None)
            and (self.state2 is None or self.state2 == other.state2)
        )

    def __repr__(self) -> str:
        nested = f", state2=<{self.state2.quant_type} bs {self.state2.blocksize}>" if self.nested else ""
        return (f"QuantState(quant_type={self.quant_type!r}, shape={tuple(self.shape)}, "
                f"blocksize={self.blocksize}, nblocks={self.nblocks}, "
                f"bits_per_param={self.bits_per_param:.6g}{nested})")


def _allclose(a: Any, b: Any) -> bool:
    """``allclose(a, b, rtol=1e-5, atol=1e-6)`` (torch's defaults, bitsandbytes' atol) for same-shape arrays."""
    xp = backend.xp()
    a, b = xp.asarray(a), xp.asarray(b)
    if a.shape != b.shape or (a.dtype.kind == "f") != (b.dtype.kind == "f"):
        return False
    return bool(xp.allclose(a.astype(xp.float64), b.astype(xp.float64), rtol=1e-5, atol=1e-6))


#: the dtype names a bitsandbytes state can record (``str(torch.float32).strip("torch.")`` etc.)
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")


def _dtype_str(dtype: Any) -> str:
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def dtype_name(dtype: Any) -> str:
    """The name bitsandbytes writes for a dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``, ``"float64"``.

    NumPy has no bfloat16, so a state read from a bfloat16 checkpoint keeps the string ``"bfloat16"``.
    """
    name = _dtype_str(dtype)
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {dtype!r}")
    return name


# ----------------------------------------------------------------------------- input validation

def as_float_array(x: Any, arg: str = "x") -> Any:
    """``x`` as a backend array of float32 (the computation dtype), keeping its original dtype aside.

    Raises TypeError for a non-floating dtype (integers, bools, complex, objects).
    """
    xp = backend.xp()
    arr = xp.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"{arg} must be a floating-point array (float16, float32 or float64), "
                        f"got dtype {arr.dtype}")
    return arr


def check_finite_stats(stats: Any, arg: str = "x") -> None:
    """Raise ValueError if a block statistic is NaN or Inf (NaN/Inf propagate through ``max``).

    Checking the per-block maxima instead of every element costs nothing and catches the same inputs:
    a NaN or Inf anywhere in a block makes that block's absmax NaN or Inf.
    """
    xp = backend.xp()
    bad = ~xp.isfinite(stats)
    if bool(bad.any()):
        first = int(xp.argmax(bad))
        raise ValueError(f"{arg} contains NaN or Inf (first in block/row {first}); a non-finite value "
                         f"would poison the scale of its whole block — clean the input first")


def check_blocksize(blocksize: Any, arg: str = "blocksize", allowed: tuple[int, ...] = BLOCKSIZES) -> int:
    """Return ``blocksize`` as int, or raise ValueError unless it is one of ``allowed``."""
    is_int = isinstance(blocksize, (int, np.integer)) and not isinstance(blocksize, bool)
    if not is_int or int(blocksize) not in allowed:
        raise ValueError(f"{arg} must be a power of two in [{allowed[0]}, {allowed[-1]}] "
                         f"(one of {allowed}), got {blocksize!r}")
    return int(blocksize)


def check_choice(value: Any, allowed: tuple[str, ...], arg: str) -> str:
    """Return ``value`` or raise ValueError listing the allowed strings."""
    if value not in allowed:
        raise ValueError(f"{arg} must be one of {allowed}, got {value!r}")
    return value

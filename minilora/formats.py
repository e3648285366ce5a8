"""Floating-point formats at the bit level: FP32, FP16, BF16, FP8 E4M3 and FP8 E5M2.

A binary floating-point number is ``(-1)^s · 2^(e − bias) · 1.m`` (normal) or
``(-1)^s · 2^(1 − bias) · 0.m`` (subnormal, exponent field 0), stored as a sign bit,
``exp_bits`` exponent bits and ``man_bits`` mantissa bits (IEEE 754-2008 §3.4). The blog's
"Quantize" section compares three of them:

=========  ============  ====  ==================  ================
format     s / e / m     bias  largest finite      eps = 2^-m
=========  ============  ====  ==================  ================
FP32       1 / 8 / 23    127   3.4028235e38        1.19e-7
FP16       1 / 5 / 10    15    65504               9.77e-4
BF16       1 / 8 / 7     127   3.3895314e38        7.81e-3
=========  ============  ====  ==================  ================

BF16 keeps FP32's 8 exponent bits (same range) and drops 16 mantissa bits (less precision);
FP16 spends more bits on the mantissa and has a far smaller range. The two FP8 formats of the
OCP FP8 specification (Micikevicius et al. 2022, arXiv 2209.05433) are here too: E5M2 is a
shortened FP16 with inf and NaN; E4M3 ("fn") has no infinity and a single NaN per sign
(S.1111.111), which buys it one more binade (max 448).

:func:`encode` converts float32 to a format using only integer operations on the float32 bit
pattern — ``.view``, shifts, masks and comparisons — so the rounding is visible step by step
and the same code runs on CuPy. Semantics (those of PyTorch, ml_dtypes and NumPy, checked
against all three by golden vectors; ``../shared/FACTS.md`` §1):

* round to nearest, ties to even; subnormal results are kept (no flush to zero); ±0 keep their sign;
* a finite value at or beyond the first overflow point becomes ±inf (FP16 from 65520, BF16 from
  3.3961775e38, E5M2 from 61440); E4M3 has no inf and gives NaN above 464 (464 itself is a tie
  that rounds to 448); ``saturate=True`` clamps overflow to ±max instead (PyTorch's E4M3 behaviour);
* NaN becomes the format's canonical quiet NaN with the input's sign (BF16 ``s|0x7FC0``,
  FP16 ``s|0x7E00``, E4M3 ``s|0x7F``, E5M2 ``s|0x7E``, FP32 ``s|0x7FC00000``).

Every non-NaN pattern of these formats is exactly representable in float32, so :func:`decode`
returns float32 and ``round_to(x, fmt) = decode(encode(x, fmt), fmt)`` is exact.

Example
-------
>>> import numpy as np
>>> hex(int(encode(np.float32(1 + 2**-8), BF16)))      # a tie: rounds to even (1.0)
'0x3f80'
>>> float(round_to(np.float32(65519), FP16)), float(round_to(np.float32(65520), FP16))
(65504.0, inf)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minilora import backend

__all__ = [
    "FloatFormat", "FP32", "FP16", "BF16", "FP8_E4M3", "FP8_E5M2", "FORMATS",
    "get_format", "encode", "decode", "round_to", "fields",
]

_U32_SIGN = 0x80000000
_U32_ABS = 0x7FFFFFFF


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: 1 sign bit, ``exp_bits`` exponent bits, ``man_bits`` mantissa bits.

    Parameters
    ----------
    name : str
        Short name, e.g. ``"bf16"``.
    exp_bits, man_bits : int
        Widths of the exponent and mantissa (fraction) fields.
    bias : int
        Exponent bias: a normal number with exponent field ``e`` is ``2^(e − bias) · 1.m``.
    ieee_specials : bool
        True for IEEE-style formats whose all-ones exponent encodes inf (mantissa 0) and NaN.
        False for the OCP "fn" E4M3 format: no inf, NaN only when exponent and mantissa are all
        ones, every other all-ones-exponent pattern is a normal number.

    The derived constants (``max``, ``min_normal``, ``min_subnormal``, ``eps``) are computed from
    these fields, not typed in.
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    ieee_specials: bool = True

    @property
    def bits(self) -> int:
        """Total width in bits."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def storage_dtype(self) -> np.dtype:
        """Unsigned integer dtype that holds one bit pattern."""
        return np.dtype({8: np.uint8, 16: np.uint16, 32: np.uint32}[self.bits])

    @property
    def max_exp_field(self) -> int:
        """Largest exponent field of a finite number."""
        top = (1 << self.exp_bits) - 1
        return top - 1 if self.ieee_specials else top

    @property
    def max_bits(self) -> int:
        """Bit pattern (without sign) of the largest finite value."""
        man = (1 << self.man_bits) - 1
        if not self.ieee_specials:
            man -= 1  # S.1111.111 is NaN, so the top mantissa is one less
        return (self.max_exp_field << self.man_bits) | man

    @property
    def max(self) -> float:
        """Largest finite value."""
        man = self.max_bits & ((1 << self.man_bits) - 1)
        return (1 + man / 2**self.man_bits) * 2.0 ** (self.max_exp_field - self.bias)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, ``2^(1 − bias)``."""
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal value, ``2^(1 − bias − man_bits)``."""
        return 2.0 ** (1 - self.bias - self.man_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon: the gap between 1 and the next larger value, ``2^-man_bits``."""
        return 2.0**-self.man_bits

    @property
    def inf_bits(self) -> int | None:
        """Pattern of +inf, or None for formats without infinity."""
        return ((1 << self.exp_bits) - 1) << self.man_bits if self.ieee_specials else None

    @property
    def nan_bits(self) -> int:
        """Canonical quiet NaN (positive): exponent all ones, top mantissa bit (or all bits, E4M3) set."""
        if self.ieee_specials:
            return (((1 << self.exp_bits) - 1) << self.man_bits) | (1 << (self.man_bits - 1))
        return (1 << (self.bits - 1)) - 1

    def __repr__(self) -> str:
        return (f"FloatFormat({self.name!r}, s/e/m=1/{self.exp_bits}/{self.man_bits}, bias={self.bias}, "
                f"max={self.max:.8g}, min_normal={self.min_normal:.4g}, "
                f"min_subnormal={self.min_subnormal:.4g}, eps={self.eps:.4g})")


FP32 = FloatFormat("fp32", 8, 23, 127)
FP16 = FloatFormat("fp16", 5, 10, 15)
BF16 = FloatFormat("bf16", 8, 7, 127)
FP8_E4M3 = FloatFormat("fp8_e4m3", 4, 3, 7, ieee_specials=False)
FP8_E5M2 = FloatFormat("fp8_e5m2", 5, 2, 15)

#: every format by name
FORMATS: dict[str, FloatFormat] = {f.name: f for f in (FP32, FP16, BF16, FP8_E4M3, FP8_E5M2)}


def get_format(fmt: FloatFormat | str) -> FloatFormat:
    """Return ``fmt`` itself or the format of that name; unknown names raise ValueError."""
    if isinstance(fmt, FloatFormat):
        return fmt
    if isinstance(fmt, str) and fmt.lower() in FORMATS:
        return FORMATS[fmt.lower()]
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)} or a FloatFormat")


def _as_float32(x: Any, arg: str = "x") -> Any:
    xp = backend.xp()
    x = xp.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(
            f"{arg} must be a float32 array (got dtype {x.dtype}); convert it first, e.g. "
            f"np.asarray({arg}, dtype=np.float32) — a float64 → float32 cast would round a second time"
        )
    return x


def _shift_round_even(v: Any, s: Any) -> Any:
    """``v / 2**s`` rounded to nearest, ties to even, for uint32 ``v`` and shifts ``1 <= s <= 31``.

    ``q = v >> s`` is the truncated quotient, ``rem`` the bits shifted out and ``half`` the value
    of the first of them: round up when ``rem > half``, or ``rem == half`` and ``q`` is odd.
    """
    xp = backend.xp()
    one = xp.uint32(1)
    s = xp.asarray(s, dtype=xp.uint32)
    q = v >> s
    rem = v & ((one << s) - one)
    half = one << (s - one)
    up = (rem > half) | ((rem == half) & ((q & one) == one))
    return q + up.astype(xp.uint32)


def encode(x: Any, fmt: FloatFormat | str, saturate: bool = False) -> Any:
    """Encode float32 values as bit patterns of ``fmt``, rounding to nearest, ties to even.

    Parameters
    ----------
    x : float32 array_like
        Values to encode. Other dtypes raise TypeError (casting float64 first would round twice).
    fmt : FloatFormat or str
        Target format (``FP32``, ``FP16``, ``BF16``, ``FP8_E4M3``, ``FP8_E5M2`` or their names).
    saturate : bool
        If True, finite values that overflow become ±max instead of ±inf (±NaN for E4M3), and for
        E4M3, which has no inf, ±inf becomes ±448 (PyTorch's behaviour). Default False: ml_dtypes'.

    Returns
    -------
    bits : uint32 / uint16 / uint8 array of ``x``'s shape
        The bit patterns (``fmt.storage_dtype``).
    """
    fmt = get_format(fmt)
    xp = backend.xp()
    x = _as_float32(x)
    u = x.view(xp.uint32)
    sign = u & xp.uint32(_U32_SIGN)
    a = u & xp.uint32(_U32_ABS)  # |x| as bits
    is_nan = a > xp.uint32(0x7F800000)
    is_inf = a == xp.uint32(0x7F800000)
    out_sign = sign >> xp.uint32(32 - fmt.bits)

    if fmt == FP32:
        out = xp.where(is_nan, xp.uint32(FP32.nan_bits), a)
        return (out | out_sign).astype(fmt.storage_dtype)

    shift = 23 - fmt.man_bits  # mantissa bits dropped
    field = a >> xp.uint32(23)  # float32 exponent field
    # exponent field the value would have in the target format (may be <= 0: subnormal there)
    t_field = field.astype(xp.int32) - (127 - fmt.bias)

    # Normal in the target: re-bias the exponent in place, then drop `shift` mantissa bits with
    # round-to-nearest-even. A mantissa that rounds up past all ones carries into the exponent,
    # which is exactly right (1.111…1 rounds to 10.0).
    rebiased = a - xp.uint32(((127 - fmt.bias) << 23) & 0xFFFFFFFF)
    normal = _shift_round_even(rebiased, shift)

    # Subnormal in the target: the significand with its implicit 1 (none for float32 subnormals),
    # shifted right by one more bit for every binade below the target's smallest normal.
    sig = (a & xp.uint32(0x7FFFFF)) | xp.where(field > 0, xp.uint32(0x800000), xp.uint32(0))
    # (a float32 subnormal has exponent −126 like the smallest normal, but no implicit 1)
    t_eff = xp.where(field > 0, t_field, xp.int32(fmt.bias - 126))
    # code = sig · 2^(t_eff − 1 − shift); shifts beyond 25 leave less than half an ulp: round to 0
    sub_shift = xp.clip(shift + 1 - t_eff, 1, 25)
    sub = _shift_round_even(sig, sub_shift.astype(xp.uint32))
    is_sub = (t_field <= 0) | (field == 0)
    mag = xp.where(is_sub, sub, normal)

    max_bits = xp.uint32(fmt.max_bits)
    if fmt.ieee_specials:
        inf_bits = xp.uint32(fmt.inf_bits)
        overflow = mag >= inf_bits
        mag = xp.where(overflow, max_bits if saturate else inf_bits, mag)
        mag = xp.where(is_inf, inf_bits, mag)
    else:
        overflow = (mag > max_bits) | is_inf
        mag = xp.where(overflow, max_bits if saturate else xp.uint32(fmt.nan_bits), mag)
    mag = xp.where(is_nan, xp.uint32(fmt.nan_bits), mag)
    return (mag | out_sign).astype(fmt.storage_dtype)


def decode(bits: Any, fmt: FloatFormat | str) -> Any:
    """Decode bit patterns of ``fmt`` to float32 (exact: every value of these formats fits in float32).

    Normal numbers are rebuilt by moving the fields into float32's positions; subnormals are
    ``mantissa · 2^(1 − bias − man_bits)`` (an exact float32 product); inf and NaN keep their
    sign, and NaN its payload shifted into float32's mantissa (a quiet NaN).
    """
    fmt = get_format(fmt)
    xp = backend.xp()
    bits = xp.asarray(bits)
    if bits.dtype.kind not in "ui":
        raise TypeError(f"bits must be an integer array (got dtype {bits.dtype}); expected {fmt.storage_dtype}")
    if bits.dtype.itemsize * 8 > fmt.bits and bits.size and (
            int(bits.max()) >= (1 << fmt.bits) or int(bits.min()) < 0):
        raise ValueError(f"bits hold values outside [0, 2**{fmt.bits}) for {fmt.name}; "
                         f"pass {fmt.storage_dtype} patterns as returned by encode()")
    b = bits.astype(xp.uint32) & xp.uint32((1 << fmt.bits) - 1)
    if fmt == FP32:
        return b.view(xp.float32)
    if fmt.exp_bits == 8:  # BF16: the top half of a float32
        return (b << xp.uint32(16)).view(xp.float32)
    m = fmt.man_bits
    sign = (b >> xp.uint32(fmt.bits - 1)) << xp.uint32(31)
    field = (b >> xp.uint32(m)) & xp.uint32((1 << fmt.exp_bits) - 1)
    man = b & xp.uint32((1 << m) - 1)
    normal = ((field + xp.uint32(127 - fmt.bias)) << xp.uint32(23)) | (man << xp.uint32(23 - m))
    top = (1 << fmt.exp_bits) - 1
    if fmt.ieee_specials:
        special = field == xp.uint32(top)
        nan = special & (man != 0)
    else:
        special = (field == xp.uint32(top)) & (man == xp.uint32((1 << m) - 1))
        nan = special
    special_bits = xp.where(nan, xp.uint32(0x7FC00000) | (man << xp.uint32(23 - m)), xp.uint32(0x7F800000))
    mag = xp.where(special, special_bits, normal)
    out = (mag | sign).view(xp.float32)
    sub_val = man.astype(xp.float32) * xp.float32(fmt.min_subnormal)
    sub_val = xp.where(sign != 0, -sub_val, sub_val)  # keeps -0.0
    return xp.where(field == 0, sub_val, out).astype(xp.float32)


def round_to(x: Any, fmt: FloatFormat | str, saturate: bool = False) -> Any:
    """Round float32 values to the nearest value of ``fmt`` (ties to even), returned as float32."""
    return decode(encode(x, fmt, saturate=saturate), fmt)


def fields(x: Any, fmt: FloatFormat | str, saturate: bool = False) -> tuple[Any, Any, Any]:
    """The (sign, exponent field, mantissa field) of ``x`` encoded in ``fmt``, as uint32 arrays.

    >>> import numpy as np
    >>> [int(f) for f in fields(np.float32(-1.5), FP16)]
    [1, 15, 512]
    """
    fmt = get_format(fmt)
    xp = backend.xp()
    b = encode(x, fmt, saturate=saturate).astype(xp.uint32)
    m = xp.uint32(fmt.man_bits)
    return (b >> xp.uint32(fmt.bits - 1),
            (b >> m) & xp.uint32((1 << fmt.exp_bits) - 1),
            b & xp.uint32((1 << fmt.man_bits) - 1))

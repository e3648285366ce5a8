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
against all three by golden vectors; ``docs/facts.md`` §1):

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
    "get_format", "encode", "decode", "round_to", "fields", "running_sum",
]

_U32_SIGN = 0x80000000
_BLOCK = 1 << 16  # elements per cache block in encode/decode (3 uint32 work arrays: 768 KiB)
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


def _encode_magnitude(a: Any, fmt: FloatFormat, saturate: bool) -> Any:
    """Encode |x| (float32 bits without the sign, uint32) in ``fmt``: every case, one readable pass.

    This is the whole rounding rule. :func:`encode` runs its first step (normal numbers) on every
    element and this function only on the elements that need more (subnormals, overflow, inf, NaN).
    """
    xp = backend.xp()
    shift = 23 - fmt.man_bits  # mantissa bits dropped
    field = a >> xp.uint32(23)  # float32 exponent field
    # exponent field the value would have in the target format (<= 0: subnormal there)
    t_field = field.astype(xp.int32) - (127 - fmt.bias)

    # 1. Normal in the target: re-bias the exponent in place, then drop `shift` mantissa bits with
    #    round-to-nearest-even. A mantissa that rounds up past all ones carries into the exponent,
    #    which is exactly right (1.111…1 rounds to 10.0).
    normal = _shift_round_even(a - xp.uint32((127 - fmt.bias) << 23), shift)

    # 2. Subnormal in the target: the significand with its implicit 1 (a float32 subnormal has none,
    #    and the exponent −126 of the smallest normal), shifted right by one more bit for every binade
    #    below the target's smallest normal: code = sig · 2^(t − 1 − shift). Shifts beyond 25 leave
    #    less than half the smallest subnormal: the value rounds to 0.
    sig = (a & xp.uint32(0x7FFFFF)) | xp.where(field > 0, xp.uint32(0x800000), xp.uint32(0))
    t_eff = xp.where(field > 0, t_field, xp.int32(fmt.bias - 126))
    sub = _shift_round_even(sig, xp.clip(shift + 1 - t_eff, 1, 25).astype(xp.uint32))
    mag = xp.where((t_field <= 0) | (field == 0), sub, normal)

    # 3. Overflow, inf and NaN.
    is_nan = a > xp.uint32(0x7F800000)
    is_inf = a == xp.uint32(0x7F800000)
    max_bits = xp.uint32(fmt.max_bits)
    if fmt.ieee_specials:
        inf_bits = xp.uint32(fmt.inf_bits)
        mag = xp.where(mag >= inf_bits, max_bits if saturate else inf_bits, mag)
        mag = xp.where(is_inf, inf_bits, mag)
    else:  # E4M3fn: no inf; overflow (and inf) become NaN, or ±max when saturating
        mag = xp.where((mag > max_bits) | is_inf, max_bits if saturate else xp.uint32(fmt.nan_bits), mag)
    return xp.where(is_nan, xp.uint32(fmt.nan_bits), mag)


def _check_out(out: Any, shape: tuple[int, ...], dtype: Any, func: str) -> Any:
    """Validate a caller's ``out=`` array before anything is written: backend array, dtype, shape, layout."""
    xp = backend.xp()
    if not isinstance(out, xp.ndarray):
        raise TypeError(f"{func}: out must be an array of the current backend ({backend.name()}), "
                        f"got {type(out).__name__}")
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"{func}: out must have dtype {np.dtype(dtype)} (what {func} returns), got {out.dtype}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{func}: out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{func}: out must be C-contiguous (it is written through a flat view)")
    if not getattr(out.flags, "writeable", True):
        raise ValueError(f"{func}: out is read-only")
    return out


def _work(n: int, *dtypes: Any) -> list[Any]:
    """One work array per dtype, of ``n`` elements, reused by every cache block of one call."""
    xp = backend.xp()
    return [xp.empty(n, dtype=d) for d in dtypes]


def encode(x: Any, fmt: FloatFormat | str, saturate: bool = False, *, out: Any = None) -> Any:
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
    out : array, optional
        Where to write the result, as with NumPy ufuncs: a C-contiguous, writeable array of the current
        backend with ``x``'s shape and dtype ``fmt.storage_dtype``; it is returned. It may share memory with
        ``x`` (``x`` is then copied first). Saves the allocation (and, for a fresh array, the page faults)
        of a new output.

    Returns
    -------
    bits : uint32 / uint16 / uint8 array of ``x``'s shape
        The bit patterns (``fmt.storage_dtype``); ``out`` when given.

    Notes
    -----
    The rounding rule is :func:`_encode_magnitude`. For speed, the common case — a value that is
    normal in the target format — is computed for every element with in-place operations on one
    buffer, and the full rule is applied only to the (usually few) elements that are subnormal in
    the target, overflow, or are inf/NaN.
    """
    fmt = get_format(fmt)
    xp = backend.xp()
    x = _as_float32(x)
    if out is not None:
        _check_out(out, x.shape, fmt.storage_dtype, "encode")
        if xp.may_share_memory(x, out):
            x = x.copy()                      # as ufuncs do: the result of separate arrays
    shape = x.shape
    u = x.reshape(-1).view(xp.uint32)  # 1-D: array arithmetic wraps silently, 0-d scalars would warn
    if fmt == FP32:
        res = xp.where(xp.isnan(x.reshape(-1)), xp.uint32(FP32.nan_bits), u & xp.uint32(_U32_ABS))
        res = (res | (u & xp.uint32(_U32_SIGN))).reshape(shape)
        if out is None:
            return res
        out[...] = res
        return out

    flat = xp.empty(u.size, dtype=fmt.storage_dtype) if out is None else out.reshape(-1)
    # Cache blocking: a loop over blocks of _BLOCK elements (not over elements), so that the few
    # working arrays of one block stay in the CPU cache between the in-place passes; they are allocated
    # once per call (a fresh allocation per block would pay page faults again). On the GPU the whole
    # array is one block.
    step = max(u.size if xp is not np else min(_BLOCK, u.size), 1)
    work = _work(step, xp.uint32, xp.uint32, xp.bool_, xp.bool_)
    for start in range(0, u.size, step):
        _encode_block(u[start:start + step], fmt, saturate, flat[start:start + step], work)
    return flat.reshape(shape) if out is None else out


def _encode_block(u: Any, fmt: FloatFormat, saturate: bool, out: Any, work: list[Any]) -> None:
    """Encode float32 bits ``u`` (uint32, 1-D) into ``out`` (the format's storage dtype), in place.

    ``work`` holds two uint32 and two bool arrays of at least ``u.size`` elements (scratch).
    """
    xp = backend.xp()
    n = u.size
    bits, lsb, rare_mask, more = (w[:n] for w in work)
    sign_bit = 1 << (fmt.bits - 1)
    if fmt.exp_bits == 8:
        # BF16 shares float32's exponent: no re-biasing, and float32 subnormals become BF16 subnormals
        # by the same rounding. Round the 16 dropped bits half to even, sign included (only NaNs can
        # carry into the sign bit, and they are fixed below); overflow rounds up to inf by itself.
        xp.right_shift(u, xp.uint32(16), out=bits)
        bits &= xp.uint32(1)
        bits += xp.uint32(0x7FFF)
        bits += u
        bits >>= xp.uint32(16)
        xp.bitwise_and(u, xp.uint32(_U32_ABS), out=lsb)
        xp.greater(lsb, xp.uint32(0x7F800000), out=rare_mask)  # NaN
        if saturate:
            xp.bitwise_and(bits, xp.uint32(0x7FFF), out=lsb)
            xp.equal(lsb, xp.uint32(0x7F80), out=more)  # rounded to ±inf
            rare_mask |= more
    else:
        # common case: normal in the target (step 1 of _encode_magnitude, in place on one buffer)
        shift = 23 - fmt.man_bits
        min_normal_bits = (128 - fmt.bias) << 23  # float32 bits of the target's smallest normal, 2^(1 − bias)
        xp.bitwise_and(u, xp.uint32(_U32_ABS), out=bits)  # |x| as bits
        xp.less(bits, xp.uint32(min_normal_bits), out=rare_mask)  # subnormal in the target
        bits -= xp.uint32((127 - fmt.bias) << 23)  # re-bias the exponent (wraps for tiny |x|: fixed below)
        xp.right_shift(bits, xp.uint32(shift), out=lsb)
        lsb &= xp.uint32(1)
        lsb += xp.uint32((1 << (shift - 1)) - 1)  # + half − 1, + 1 more when the kept lsb is odd: ties to even
        bits += lsb
        bits >>= xp.uint32(shift)
        xp.greater(bits, xp.uint32(fmt.max_bits), out=more)  # overflow, inf, NaN
        rare_mask |= more
        # sign: moved from bit 31 to the format's top bit, reusing the scratch buffer
        xp.right_shift(u, xp.uint32(32 - fmt.bits), out=lsb)
        lsb &= xp.uint32(sign_bit)
        bits |= lsb
    rare = xp.flatnonzero(rare_mask)
    if rare.size:  # the full rule (subnormals, overflow, inf, NaN) on the few elements that need it
        ur = u[rare]
        bits[rare] = _encode_magnitude(ur & xp.uint32(_U32_ABS), fmt, saturate) | (
            (ur >> xp.uint32(32 - fmt.bits)) & xp.uint32(sign_bit))
    out[...] = bits  # narrowing to the storage dtype: every value fits


def _decode_general(b: Any, fmt: FloatFormat) -> Any:
    """Decode uint32-held patterns of a format with fewer than 8 exponent bits: every case."""
    xp = backend.xp()
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
    out = (xp.where(special, special_bits, normal) | sign).view(xp.float32)
    sub_val = man.astype(xp.float32) * xp.float32(fmt.min_subnormal)  # exact: a small integer times 2^k
    sub_val = xp.where(sign != 0, -sub_val, sub_val)  # keeps -0.0
    return xp.where(field == 0, sub_val, out).astype(xp.float32)


def decode(bits: Any, fmt: FloatFormat | str, *, out: Any = None) -> Any:
    """Decode bit patterns of ``fmt`` to float32 (exact: every value of these formats fits in float32).

    Normal numbers are rebuilt by moving the fields into float32's positions; subnormals are
    ``mantissa · 2^(1 − bias − man_bits)`` (an exact float32 product); inf and NaN keep their
    sign, and NaN its payload shifted into float32's mantissa (a quiet NaN). BF16 is simply the top
    half of a float32: ``bits << 16``.

    ``out``, optional: a C-contiguous, writeable float32 array of ``bits``' shape to write into (returned),
    as with NumPy ufuncs; it may share memory with ``bits`` (which is then copied first).
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
    if out is not None:
        _check_out(out, bits.shape, np.float32, "decode")
        if xp.may_share_memory(bits, out):
            bits = bits.copy()
    shape = bits.shape
    flat = bits.reshape(-1)
    res = xp.empty(flat.size, dtype=xp.uint32) if out is None else out.reshape(-1).view(xp.uint32)
    if fmt.exp_bits == 8:  # FP32, or BF16: the top half of a float32
        res[...] = flat
        if fmt == BF16:
            res &= xp.uint32(0xFFFF)
            res <<= xp.uint32(16)
        return res.view(xp.float32).reshape(shape) if out is None else out
    step = max(flat.size if xp is not np else min(_BLOCK, flat.size), 1)  # cache blocking, as in encode
    work = _work(step, xp.uint32, xp.uint32, xp.bool_)
    for start in range(0, flat.size, step):
        _decode_block(flat[start:start + step], fmt, res[start:start + step], work)
    return res.view(xp.float32).reshape(shape) if out is None else out


def _decode_block(bits: Any, fmt: FloatFormat, out: Any, work: list[Any]) -> None:
    """Decode patterns ``bits`` (1-D) of a format with fewer than 8 exponent bits into ``out`` (uint32).

    ``work`` holds two uint32 and one bool array of at least ``bits.size`` elements (scratch).
    """
    xp = backend.xp()
    n = bits.size
    b, sign, rare_mask = (w[:n] for w in work)
    b[...] = bits
    b &= xp.uint32((1 << fmt.bits) - 1)
    # common case, in place: a normal number; move the fields into float32's places and re-bias
    m = fmt.man_bits
    xp.bitwise_and(b, xp.uint32((1 << (fmt.bits - 1)) - 1), out=out)
    out <<= xp.uint32(23 - m)
    out += xp.uint32((127 - fmt.bias) << 23)
    xp.right_shift(b, xp.uint32(fmt.bits - 1), out=sign)
    sign <<= xp.uint32(31)
    out |= sign
    # the rest: exponent field 0 (zero, subnormal) or all ones (inf, NaN; for E4M3 also normals)
    field = xp.bitwise_and(b, xp.uint32(((1 << fmt.exp_bits) - 1) << m), out=sign)
    field -= xp.uint32(1 << m)  # 0 wraps to the top, so one comparison finds both ends
    xp.greater_equal(field, xp.uint32(((1 << fmt.exp_bits) - 2) << m), out=rare_mask)
    rare = xp.flatnonzero(rare_mask)
    if rare.size:
        out[rare] = _decode_general(b[rare], fmt).view(xp.uint32)


def round_to(x: Any, fmt: FloatFormat | str, saturate: bool = False, *, out: Any = None) -> Any:
    """Round float32 values to the nearest value of ``fmt`` (ties to even), returned as float32.

    ``out``, optional: a C-contiguous, writeable float32 array of ``x``'s shape (returned); ``out=x``
    rounds in place.
    """
    fmt = get_format(fmt)
    x = _as_float32(x)
    if out is not None:
        _check_out(out, x.shape, np.float32, "round_to")
    return decode(encode(x, fmt, saturate=saturate), fmt, out=out)


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


def running_sum(x: Any, fmt: FloatFormat | str, axis: int = -1) -> Any:
    """Partial sums of ``x`` along ``axis`` as an accumulator of format ``fmt`` computes them.

    Each step adds the next element to the running total in float32 (exact for FP16/BF16/FP8
    operands except in rare cases) and rounds the total to ``fmt``, as a hardware adder that keeps
    its accumulator in ``fmt`` would. This is why mixed-precision training multiplies in FP16/BF16 but
    accumulates in FP32: once the total is large, adding a small value changes nothing, because the
    sum rounds back to the total (the gap between neighbours of ``total`` exceeds twice the addend).

    The loop runs over ``axis`` only (the summation is sequential by nature); all other axes are
    processed together, so many independent sums cost one pass.

    Returns float32 partial sums of ``x``'s shape (the last one along ``axis`` is the total).

    >>> import numpy as np
    >>> float(running_sum(np.full(4096, 1.0, np.float32), FP16)[-1])      # FP16 counts to 2048 only
    2048.0
    """
    fmt = get_format(fmt)
    xp = backend.xp()
    x = xp.moveaxis(round_to(_as_float32(x), fmt), axis, 0)
    out = xp.empty_like(x)
    total = xp.zeros(x.shape[1:], dtype=xp.float32)
    for i in range(x.shape[0]):
        total = round_to(total + x[i], fmt)
        out[i] = total
    return xp.moveaxis(out, 0, axis)

"""Hypothesis strategies for the inputs that break quantizers and float casts.

:func:`tensors` draws finite float32 arrays (or float16, or bfloat16 values held in float32) of any rank,
from the easy (normal values near 1) to the hostile: heavy tails, scales from float32 subnormals to near
overflow, planted outliers, all-zero blocks, and values that land *exactly* on the midpoint between two
codes of NF4, FP4, the 8-bit dynamic map or int-b absmax — and on its float32 neighbours — where the tie
rule decides the code. :func:`blocksizes` draws block lengths; :func:`float32_bits` draws float32 bit
patterns from every class a cast must get right (zeros, subnormals, ties to even at every exponent of each
target format, its min-normal and overflow boundaries, infinities, NaN payloads).

Bulk values come from a NumPy generator seeded by hypothesis (fast for 1000s of elements); everything that
decides a bug — shape, kind, scale, which outliers, zero blocks and midpoints, and where — is drawn by
hypothesis itself, so a failing example shrinks to a few elements.

Planting a midpoint ``m`` (a tie between two codes, in units of the scale) works through a power of two:
every group that receives one also receives the anchor ``2^j ≥ max |x|`` at its first element, so the
group's absmax is exactly ``2^j``, ``x / absmax`` and ``x · (1 / absmax)`` are both exact, and the scaled
value is exactly ``float32(m)`` (up to subnormal rounding). For absmax int-b (``"int8"`` …) half the planted
ties are exact in ``x`` instead: anchor ``qmax · 2^j`` and value ``(k + ½) · 2^j``, a tie for a kernel that
scales by ``qmax / absmax`` in one rounding (bitsandbytes' int8), while ``float32(1/absmax) · qmax`` misses
it by an ulp. A "group" is a row (the last axis) by default, or ``blocksize`` flat elements: pass the
blocksize your quantizer uses.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError:                 # the module still imports (pytest walks every module); using it needs the extra
    st = None

from minilora.formats import BF16, FP8_E4M3, FP8_E5M2, FP16, FloatFormat, decode, get_format, round_to
from minilora.quant.double_quant import create_dynamic_map
from minilora.quant.nf4 import fp4_code, nf4_code
from minilora.quant.state import BLOCKSIZES

__all__ = ["tensors", "blocksizes", "float32_bits", "code_midpoints", "KINDS", "DTYPES", "MIDPOINT_CODES",
           "BIT_CLASSES"]

#: value distributions of :func:`tensors`, simplest first (hypothesis shrinks towards the first)
KINDS = ("normal", "uniform", "cauchy", "sparse")
#: what :func:`tensors` can return: float32, float16, or bfloat16 values held in a float32 array
DTYPES = ("float32", "float16", "bfloat16")
#: codebooks whose midpoints :func:`tensors` plants by default ("int8": absmax int8, qmax = 127)
MIDPOINT_CODES = ("nf4", "fp4", "dynamic", "int8")
#: pattern classes of :func:`float32_bits`
BIT_CLASSES = ("zero", "subnormal", "normal", "tie", "near_tie", "min_normal", "overflow", "max", "inf", "nan")

#: what a strategy raises when hypothesis is missing
MISSING_HYPOTHESIS = ("the strategies of minilora.testing need hypothesis, which is not installed. It comes with "
                      "minilora's 'test' extra: pip install -e \".[test]\" (from a clone) or "
                      "pip install \"minilora[test]\" (or pip install hypothesis)")

F32_MAX = float(np.finfo(np.float32).max)
_DEFAULT_SCALE = {"float32": (1e-40, 1e34), "bfloat16": (1e-40, 1e34), "float16": (1e-7, 1e4)}
_DTYPE_MAX = {"float32": F32_MAX, "bfloat16": BF16.max, "float16": FP16.max}
_LOW_FORMATS = (FP16, BF16, FP8_E4M3, FP8_E5M2)


@lru_cache(maxsize=32)
def code_midpoints(name: str) -> np.ndarray:
    """The midpoints between neighbouring levels of a codebook, in units of the scale (float32, sorted).

    ``name``: ``"nf4"``, ``"fp4"``, ``"dynamic"`` (the 8-bit map) — float32 midpoints of the sorted table,
    as bitsandbytes computes them — or ``"int2"`` … ``"int8"``: absmax int-b, midpoints
    ``(k + ½) / qmax`` for ``k = −qmax … qmax − 1``.

    >>> code_midpoints("int2").tolist()             # qmax = 1: levels −1, 0, 1
    [-0.5, 0.5]
    """
    if name in ("nf4", "fp4", "dynamic"):
        table = {"nf4": nf4_code, "fp4": fp4_code, "dynamic": create_dynamic_map}[name]()
        c = np.unique(table)
        return ((c[:-1] + c[1:]) / np.float32(2)).astype(np.float32)
    if name.startswith("int") and name[3:].isdigit() and 2 <= int(name[3:]) <= 8:
        qmax = 2 ** (int(name[3:]) - 1) - 1
        return ((np.arange(-qmax, qmax) + 0.5) / qmax).astype(np.float32)
    raise ValueError(f"unknown codebook {name!r}; allowed: 'nf4', 'fp4', 'dynamic', 'int2' … 'int8'")


def _require_hypothesis() -> None:
    if st is None:
        raise ImportError(MISSING_HYPOTHESIS)


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def tensors(*, shape: tuple[int, ...] | None = None, min_dims: int = 1, max_dims: int = 3, min_side: int = 1,
            max_side: int | None = None, max_size: int = 2000, dtype: str = "float32",
            scale: tuple[float, float] | None = None, kinds: tuple[str, ...] = KINDS, outliers: bool = True,
            zero_blocks: bool = True, midpoints: tuple[str, ...] = MIDPOINT_CODES,
            blocksize: int | None = None) -> st.SearchStrategy[np.ndarray]:
    """Finite arrays that stress a quantizer (a hypothesis strategy).

    Parameters
    ----------
    shape : fixed shape, or None to draw one with ``min_dims … max_dims`` axes of ``min_side … max_side``
        elements each (``max_side`` default: about ``max_size ** (1 / ndim)``, except the last axis, which
        may take the room the others leave), at most ``max_size`` in all; two sides in three are lengths
        kernels special-case (multiples of 16, powers of two and their neighbours).
    dtype : ``"float32"`` (default), ``"float16"`` (a float16 array) or ``"bfloat16"`` (a float32 array of
        bfloat16 values: NumPy has no bfloat16).
    scale : ``(smallest, largest)`` typical magnitude, drawn as a power of ten (default ``(1e-40, 1e34)``:
        from float32 subnormals to near overflow; ``(1e-7, 1e4)`` for float16). Heavy tails and outliers
        (up to 1000×) go beyond ``largest``; values are clipped to the dtype's largest finite value.
    kinds : value distributions to draw from, among :data:`KINDS`.
    outliers : plant up to 3 elements 6×, 60× or 1000× larger than the rest.
    zero_blocks : set up to 2 whole groups (rows, or blocks of ``blocksize``) to exactly 0.
    midpoints : codebooks (:func:`code_midpoints` names) whose exact midpoints, and float32 neighbours, are
        planted (up to 3), each with its group's anchor ``2^j``; ``()`` plants none.
    blocksize : the group length for zero blocks and midpoint anchors (default: the last axis).

    Returns
    -------
    A strategy of numpy arrays, finite, of the requested dtype.

    Examples
    --------
    >>> from hypothesis import given
    >>> @given(x=tensors(max_size=256, blocksize=64))
    ... def test_my_kernel(x): ...
    """
    _require_hypothesis()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
    for name in midpoints:
        code_midpoints(name)                                        # raises for an unknown codebook
    lo, hi = _DEFAULT_SCALE[dtype] if scale is None else scale
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"scale must be (smallest, largest) with 0 < smallest <= largest < inf, got {scale!r}")
    if shape is not None:
        shape = tuple(_check_int(s, "shape entries", 0) for s in shape)
        if math.prod(shape) > 10**7:
            raise ValueError(f"shape {shape} has more than 10**7 elements")
    else:
        min_dims = _check_int(min_dims, "min_dims", 0)
        max_dims = _check_int(max_dims, "max_dims", min_dims)
        min_side = _check_int(min_side, "min_side", 0)
        max_size = _check_int(max_size, "max_size", max(1, min_side ** max_dims))
        if max_side is not None:
            max_side = _check_int(max_side, "max_side", max(min_side, 1))
    if blocksize is not None:
        blocksize = _check_int(blocksize, "blocksize", 1)
    exps = (math.floor(math.log10(lo)), math.ceil(math.log10(hi)))
    return st.composite(_draw_tensor)(shape=shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                      max_side=max_side, max_size=max_size, dtype=dtype, exps=exps,
                                      kinds=tuple(kinds), outliers=outliers, zero_blocks=zero_blocks,
                                      midpoints=tuple(midpoints), blocksize=blocksize)


def _draw_tensor(draw: Any, *, shape: tuple[int, ...] | None, min_dims: int, max_dims: int, min_side: int,
                 max_side: int | None, max_size: int, dtype: str, exps: tuple[int, int], kinds: tuple[str, ...],
                 outliers: bool, zero_blocks: bool, midpoints: tuple[str, ...], blocksize: int | None) -> np.ndarray:
    """One array for :func:`tensors` (``draw`` is hypothesis' draw function)."""
    if shape is None:
        nd = draw(st.integers(min_dims, max_dims))
        cap = max_side if max_side is not None else max(min_side, 1, int(round(max_size ** (1 / max(nd, 1)))))
        sides: list[int] = []
        for i in range(nd):                              # keep the product within max_size
            room = max_size // max(math.prod(sides), 1)
            top = max(min_side, min(room, cap if i < nd - 1 or max_side is not None else room))
            choices = [st.integers(min_side, top)]       # the last axis may take the room the others left
            choices += [st.sampled_from(c) for c in _structured_sides(min_side, top) if c]
            sides.append(draw(st.one_of(*choices)))
        shape = tuple(sides)
    n = math.prod(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(kinds))
    base = {"normal": lambda: rng.standard_normal(n), "uniform": lambda: rng.uniform(-1, 1, n),
            "cauchy": lambda: rng.standard_cauchy(n),
            "sparse": lambda: rng.standard_normal(n) * (rng.random(n) < 0.1)}[kind]()
    x = base * 10.0 ** draw(st.integers(*exps))
    if outliers and n:
        k = draw(st.integers(0, 3))
        if k:
            x[rng.choice(n, min(k, n), replace=False)] *= draw(st.sampled_from([6.0, 60.0, 1e3]))
    top = _DTYPE_MAX[dtype]
    x = np.clip(x, -top, top).astype(np.float32)
    group = blocksize or (shape[-1] if shape else 1) or 1
    if midpoints and n > 1:
        biggest = float(np.abs(x).max())
        jmax = math.floor(math.log2(top))                 # 2^j must stay finite in the dtype
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(midpoints))
            table = code_midpoints(name)
            k = draw(st.integers(0, table.size - 1))
            step = draw(st.sampled_from([0, -1, 1]))
            qmax = _int_qmax(name)
            if qmax and draw(st.booleans()):
                # exact in x: anchor qmax·2^j, value (k' + ½)·2^j — a tie for x · (qmax / absmax)
                j = min(_ceil_log2(biggest / qmax), jmax - qmax.bit_length())
                anchor, value = qmax * 2.0**j, (k - qmax + 0.5) * 2.0**j
                value = _neighbour(np.float32(value), step)
            else:
                # exact in the scaled value: anchor 2^j, value float32(m)·2^j — a tie for x / absmax
                j = min(_ceil_log2(biggest), jmax)
                anchor, value = 2.0**j, float(_neighbour(table[k], step)) * 2.0**j
            pos = draw(st.integers(0, n - 1))
            start = pos - pos % group
            if pos == start:
                pos += 1
            if pos >= min(start + group, n):
                continue                                  # a group of one element has no midpoint
            lo, hi = start, min(start + group, n)
            np.clip(x[lo:hi], -anchor, anchor, out=x[lo:hi])  # the anchor is its group's absmax
            x[start] = anchor
            x[pos] = value
    if zero_blocks and n:
        for _ in range(draw(st.integers(0, 2))):
            q = draw(st.integers(0, (n - 1) // group))
            x[q * group:(q + 1) * group] = 0
    if dtype == "float16":
        return x.astype(np.float16).reshape(shape)
    if dtype == "bfloat16":
        x = round_to(x, BF16)
    return x.reshape(shape)


def _int_qmax(name: str) -> int | None:
    """qmax of an ``"intB"`` codebook name, None for the others."""
    return 2 ** (int(name[3:]) - 1) - 1 if name.startswith("int") else None


def _ceil_log2(v: float) -> int:
    return math.ceil(math.log2(v)) if v > 0 else 0


@lru_cache(maxsize=256)
def _structured_sides(low: int, high: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Lengths kernels special-case, in ``[low, high]``: multiples of 16 (SIMD widths), and powers of two
    with their neighbours."""
    sixteens = tuple(v for v in range(16, high + 1, 16) if v >= low)
    twos = tuple(sorted({2**k + d for k in range(1, 14) for d in (-1, 0, 1)} & set(range(max(low, 1), high + 1))))
    return sixteens, twos


def _neighbour(m: np.float32, step: int) -> np.float32:
    """``m`` itself (step 0) or its float32 neighbour below (−1) or above (+1)."""
    if step == 0:
        return np.float32(m)
    return np.nextafter(np.float32(m), np.float32(step * np.inf))


def blocksizes(min_value: int = BLOCKSIZES[0], max_value: int = BLOCKSIZES[-1],
               powers_of_two: bool = True) -> st.SearchStrategy[int]:
    """Block lengths: powers of two in ``[min_value, max_value]`` (default: bitsandbytes' 32 … 4096),
    or any integer in that range with ``powers_of_two=False`` (absmax int-b takes any positive blocksize).

    >>> blocksizes(64, 256)
    sampled_from([64, 128, 256])
    """
    _require_hypothesis()
    min_value = _check_int(min_value, "min_value", 1)
    max_value = _check_int(max_value, "max_value", min_value)
    if not powers_of_two:
        return st.integers(min_value, max_value)
    choices = [2**k for k in range(13) if min_value <= 2**k <= max_value]
    if not choices:
        raise ValueError(f"no power of two in [{min_value}, {max_value}]")
    return st.sampled_from(choices)


def float32_bits(formats: tuple[FloatFormat | str, ...] = _LOW_FORMATS, *, min_size: int = 1, max_size: int = 64,
                 classes: tuple[str, ...] = BIT_CLASSES) -> st.SearchStrategy[np.ndarray]:
    """1-D uint32 arrays of float32 bit patterns from every class a cast to ``formats`` must get right.

    Classes (:data:`BIT_CLASSES`): ``zero`` (±0), ``subnormal`` (float32 subnormals), ``normal`` (any
    exponent), ``tie`` (exactly halfway between two neighbours of a target format — at every exponent,
    including where the target is subnormal and the tie between 0 and its smallest subnormal),
    ``near_tie`` (a tie ± one float32 ulp), ``min_normal`` (a target's smallest normal and smallest
    subnormal, ± one ulp), ``overflow`` (a target's largest finite value, the first overflow point
    ``max + ulp/2`` — a tie — and ``max + ulp``, each ± two ulps), ``max`` (float32's largest finite),
    ``inf`` and ``nan`` (any payload, quiet or signalling, either sign). View the result with
    ``bits.view(np.float32)``.

    >>> from hypothesis import find
    >>> [hex(b) for b in find(float32_bits(classes=("inf",)), lambda b: True)]    # the simplest example
    ['0x7f800000']
    """
    _require_hypothesis()
    fmts = tuple(get_format(f) for f in formats)
    bad = [c for c in classes if c not in BIT_CLASSES]
    if bad or not classes:
        raise ValueError(f"classes must be a non-empty subset of {BIT_CLASSES}, got {classes!r}")
    per_format = {"tie", "near_tie", "min_normal", "overflow"}
    if not fmts and per_format & set(classes):
        raise ValueError(f"classes {sorted(per_format & set(classes))} need at least one target format")
    if any(f.bits == 32 for f in fmts):
        raise ValueError("formats must be narrower than float32 (a float32 → float32 cast has no ties)")
    min_size = _check_int(min_size, "min_size", 0)
    max_size = _check_int(max_size, "max_size", max(min_size, 1))
    element = st.one_of(*[_pattern(c, fmts) for c in classes])
    return st.lists(element, min_size=min_size, max_size=max_size).map(lambda v: np.array(v, dtype=np.uint32))


def _f32_bits(v: float) -> int:
    return int(np.array(v, np.float32).view(np.uint32))


def _tie_exponents(fmt: FloatFormat) -> tuple[int, int]:
    """float32 exponent fields where a tie of ``fmt`` exists: from half its smallest subnormal up to the
    binade of its largest finite value (whose last tie, ``max + ulp/2``, is the first overflow point)."""
    lo = max(0 if fmt.exp_bits == 8 else 1, 127 - fmt.bias - fmt.man_bits)
    return lo, min(254, 127 - fmt.bias + fmt.max_exp_field)


def _dropped_bits(e: int, fmt: FloatFormat) -> int:
    """float32 mantissa bits (counting the implicit 1 as bit 23) that ``fmt`` drops at exponent field e."""
    t_field = max(e, 1) - 127 + fmt.bias                           # a float32 subnormal scales like e = 1
    return 23 - fmt.man_bits + max(0, 1 - t_field)


def _pattern(cls: str, fmts: tuple[FloatFormat, ...]) -> st.SearchStrategy[int]:
    sign = st.integers(0, 1).map(lambda s: s << 31)
    if cls == "zero":
        return sign
    if cls == "subnormal":
        return st.tuples(sign, st.integers(1, 2**23 - 1)).map(sum)
    if cls == "normal":
        return st.tuples(sign, st.integers(1, 254).map(lambda e: e << 23), st.integers(0, 2**23 - 1)).map(sum)
    if cls == "max":
        return st.tuples(sign, st.sampled_from([0x7F7FFFFF, 0x7F7FFFFE])).map(sum)
    if cls == "inf":
        return sign.map(lambda s: s | 0x7F800000)
    if cls == "nan":
        return st.tuples(sign, st.integers(1, 2**23 - 1)).map(lambda t: t[0] | 0x7F800000 | t[1])
    if cls in ("tie", "near_tie"):
        ties = st.one_of(*[_ties(f) for f in fmts])
        if cls == "tie":
            return st.tuples(sign, ties).map(sum)
        return st.tuples(sign, ties, st.sampled_from([-1, 1])).map(lambda t: t[0] + t[1] + t[2])
    points = []
    for f in fmts:
        if cls == "min_normal":
            points += [_f32_bits(f.min_normal), _f32_bits(f.min_subnormal)]
        else:                                                       # overflow
            ulp = f.max - _below_max(f)
            points += [_f32_bits(v) for v in (f.max, f.max + ulp / 2, f.max + ulp) if v <= F32_MAX]
    delta = st.integers(-1, 1) if cls == "min_normal" else st.integers(-2, 2)
    return st.tuples(sign, st.sampled_from(sorted(set(points))), delta).map(lambda t: t[0] + t[1] + t[2])


def _below_max(fmt: FloatFormat) -> float:
    """The value just below ``fmt.max`` (its largest finite value), from the bit pattern."""
    return float(decode(np.array([fmt.max_bits - 1], np.uint32).astype(fmt.storage_dtype), fmt)[0])


def _ties(fmt: FloatFormat) -> st.SearchStrategy[int]:
    """Positive float32 patterns exactly halfway between two neighbours of ``fmt``."""
    lo, hi = _tie_exponents(fmt)

    @st.composite
    def tie(draw: Any) -> int:
        e = draw(st.integers(lo, hi))
        d = _dropped_bits(e, fmt)
        if d == 24:                                                 # halfway between 0 and the smallest subnormal
            return e << 23
        kept = draw(st.integers(0, 2 ** (23 - d) - 1))
        return (e << 23) | (kept << d) | (1 << (d - 1))

    first_overflow = _f32_bits(fmt.max + (fmt.max - _below_max(fmt)) / 2)
    return tie().filter(lambda p: p <= first_overflow)      # E4M3: past 464 lie NaN patterns, not ties

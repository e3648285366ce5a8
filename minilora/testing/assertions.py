"""Assertions that hold a quantizer's output to minilora's proven error bounds and name the worst element.

* :func:`assert_within_bound` — ``|x − x̂|`` against :func:`minilora.quant.bounds.error_bound` for absmax
  int-b (tensor, axis, block), NF4 / FP4 (also with double quantization), the 8-bit dynamic map and int8
  vector-wise quantization;
* :func:`assert_matmul_within_bound` — an LLM.int8 product against
  :func:`minilora.quant.bounds.int8_matmul_bound`;
* :func:`assert_rounds_like` — a float-format cast against the correctly rounded result: round to nearest,
  ties to even, subnormals kept, overflow and NaN as docs/facts.md §1 says.

The bounds are computed from ``x`` alone (the group statistics as bitsandbytes stores them), never from
the kernel's own state, so a kernel cannot loosen its own bound. A failure raises ``AssertionError`` with
the index, ``x``, ``x̂``, ``|error|``, the bound and by how much it was exceeded — a shrunk hypothesis
example is then a ready bug report. Misuse (an unknown method, mismatched shapes, a missing state) raises
``ValueError`` / ``TypeError`` instead, so it is never mistaken for a bug in the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from minilora.formats import FloatFormat, decode, get_format
from minilora.quant import bounds
from minilora.quant.absmax import qmax_for
from minilora.quant.double_quant import create_dynamic_map
from minilora.quant.nf4 import get_4bit_code
from minilora.testing._arrays import (
    excess_text,
    f32_text,
    float_input,
    host,
    index_of,
    num,
    output_like,
    worst_index,
)

__all__ = ["assert_within_bound", "assert_matmul_within_bound", "assert_rounds_like", "METHODS"]

#: the methods :func:`assert_within_bound` knows ("nf4+dq" / "fp4+dq" are accepted for the ``_dq`` names)
METHODS = bounds.METHODS
_BLOCKWISE = ("nf4", "fp4", "nf4_dq", "fp4_dq", "dynamic")
_TITLE = {"absmax": "absmax int{bits}", "nf4": "NF4", "fp4": "FP4", "nf4_dq": "NF4 + double quantization",
          "fp4_dq": "FP4 + double quantization", "dynamic": "8-bit dynamic map",
          "int8_vectorwise": "int8 vector-wise"}


def _method(method: Any) -> str:
    m = method.replace("+", "_") if isinstance(method, str) else method
    if m not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return m


def _field(state: Any, key: str) -> Any:
    return state.get(key) if isinstance(state, Mapping) else getattr(state, key, None)


def _resolve_state(method: str, state: Any, blocksize: int | None) -> tuple[int | None, Any]:
    """``(blocksize, offset)`` from the arguments and a QuantState (minilora's, bitsandbytes', or a dict)."""
    if state is None:
        if method.endswith("_dq"):
            raise ValueError(f"method {method!r} needs state=, the QuantState the kernel returned: its offset "
                             f"(the mean subtracted from absmax before the second-level quantization) is part "
                             f"of the bound")
        return blocksize, None
    if method not in _BLOCKWISE:
        raise ValueError(f"state= is for the block-wise methods {_BLOCKWISE}, not {method!r}")
    sb = _field(state, "blocksize")
    if sb is not None:
        sb = int(sb)
        if blocksize is not None and int(blocksize) != sb:
            raise ValueError(f"blocksize={blocksize!r} but state.blocksize is {sb}")
        blocksize = sb
    qt = _field(state, "quant_type")
    want = method[:3] if method != "dynamic" else None
    if qt in ("nf4", "fp4") and qt != want:
        raise ValueError(f"state.quant_type is {qt!r} but method is {method!r}")
    nested = _field(state, "state2") is not None
    if nested and not method.endswith("_dq"):
        raise ValueError(f"state is double-quantized (state.state2 is set): use method {method[:3] + '_dq'!r}")
    if method.endswith("_dq"):
        if not nested or _field(state, "offset") is None:
            raise ValueError(f"method {method!r} needs a double-quantized state (with offset and state2); this "
                             f"state has none — was it made with compress_statistics=True?")
        return blocksize, float(host(_field(state, "offset"), "state.offset"))
    return blocksize, None


def _check_state_absmax(state: Any, scale: np.ndarray, x: np.ndarray, blocksize: int) -> None:
    """A non-nested state's absmax must be the true block statistics (what the bound is built on)."""
    got = _field(state, "absmax")
    if got is None:
        return
    got = host(got, "state.absmax").astype(np.float32).reshape(-1)
    want = scale.reshape(-1)[::blocksize]
    if got.shape != want.shape:
        raise ValueError(f"state.absmax has {got.size} values but x ({x.size} elements) at blocksize "
                         f"{blocksize} has {want.size} blocks")
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    if bad.size:
        b = int(bad[0])
        raise AssertionError(
            f"state.absmax is not max |x| per block: {bad.size} of {want.size} blocks differ; first, block {b} "
            f"(flat elements {b * blocksize}…{min((b + 1) * blocksize, x.size) - 1}):\n"
            f"  state.absmax[{b}] = {f32_text(got[b])}\n"
            f"  max |x| of block  = {f32_text(want[b])}")


def _bound_text(method: str, scale: float, bits: int, offset: Any) -> str:
    if method == "absmax":
        return f"absmax / (2·{qmax_for(bits)}) + 4u·absmax, absmax = {num(scale)}"
    if method == "int8_vectorwise":
        return f"row absmax × (1/254 + 8u), row absmax = {num(scale)}"
    code = create_dynamic_map() if method == "dynamic" else get_4bit_code(method[:3])
    text = f"absmax × (e + 8u), absmax = {num(scale)}, e = {bounds.code_max_error(code):.6g}"
    if method.endswith("_dq"):
        text += f", plus the double-quantization error of the absmax (offset {num(offset)})"
    return text


def _where_text(method: str, flat: int, shape: tuple[int, ...], blocksize: int | None, axis: Any) -> str:
    if method == "int8_vectorwise":
        return f"row {index_of(flat, shape)[0]}"
    if blocksize is not None:
        b = flat // blocksize
        last = min((b + 1) * blocksize, int(np.prod(shape))) - 1
        return f"flat {flat}; block {b} = flat elements {b * blocksize}…{last}"
    if axis is not None:
        idx = list(np.unravel_index(flat, shape))
        idx[int(axis) % len(shape)] = ":"
        return f"flat {flat}; scaled by the absmax of x[{', '.join(str(i) for i in idx)}]"
    return f"flat {flat}; absmax of the whole tensor"


def assert_within_bound(x: Any, x_hat: Any, method: str, *, blocksize: int | None = None, state: Any = None,
                        bits: int = 8, axis: int | None = None, threshold: float = 0.0,
                        output_format: Any = None) -> float:
    """Assert ``|x − x_hat| ≤ bound`` element-wise, the bound that ``method`` guarantees for ``x``.

    Parameters
    ----------
    x : float16 / float32 array (or a torch / CuPy one), any shape — what the kernel quantized
    x_hat : float array of ``x``'s shape — the kernel's dequantized result
    method : one of :data:`METHODS`: ``"absmax"``, ``"nf4"``, ``"fp4"``, ``"nf4_dq"``, ``"fp4_dq"``,
        ``"dynamic"`` (8-bit dynamic map), ``"int8_vectorwise"`` (x 2-D)
    blocksize : block length of the block-wise methods (default 64 for 4-bit, 4096 for ``"dynamic"``, or
        ``state.blocksize``); for ``"absmax"``, flat blocks instead of a per-tensor scale
    state : the kernel's QuantState (minilora's, bitsandbytes', or a dict with the same keys). Required for
        ``*_dq`` (its ``offset`` enters the bound); for the others optional, and then its ``blocksize`` and
        ``quant_type`` must agree and its ``absmax`` must be the true block maxima.
    bits, axis : absmax int-``bits`` and the reduced axis (``axis=-1``: one scale per row)
    threshold : ``"int8_vectorwise"``: columns with any ``|x| ≥ threshold`` go to the 16-bit path and are
        not checked
    output_format : the format ``x_hat`` was delivered in, when not float32 (``"fp16"``, ``"bf16"``: a kernel
        that dequantizes to the compute dtype); its rounding is added to the bound

    Returns
    -------
    float : the largest ``|error| / bound`` (≤ 1 when the assertion passes) — how tight the bound was.

    Raises
    ------
    AssertionError naming the worst element; ValueError / TypeError for misuse.

    >>> import numpy as np
    >>> from minilora.quant import quantize_4bit, dequantize_4bit
    >>> x = np.linspace(-1, 1, 200, dtype=np.float32)
    >>> packed, st = quantize_4bit(x, quant_type="nf4")
    >>> assert_within_bound(x, dequantize_4bit(packed, st), "nf4", state=st) <= 1
    True
    """
    method = _method(method)
    xf = float_input(x)
    y = output_like(x_hat, xf.shape)
    blocksize, offset = _resolve_state(method, state, blocksize)
    if method in _BLOCKWISE and blocksize is None:
        blocksize = bounds.DEFAULT_BLOCKSIZE[method]
    bound, scale = bounds.error_bound(xf, method, bits=bits, axis=axis, blocksize=blocksize, threshold=threshold,
                                      offset=offset, output_format=output_format, return_scale=True)
    if state is not None and not method.endswith("_dq"):
        _check_state_absmax(state, scale, xf, blocksize)
    err = np.abs(xf.astype(np.float64) - y)
    bad = ~(err <= bound)                                            # NaN errors fail too
    if not bad.any():
        finite = np.isfinite(bound)
        return float((err[finite] / bound[finite]).max(initial=0.0))
    i = worst_index(err, bound, bad)
    e, b = float(err.reshape(-1)[i]), float(bound.reshape(-1)[i])
    title = _TITLE[method].format(bits=bits) + (f" (output in {get_format(output_format).name})"
                                                 if output_format is not None else "")
    grouping = "" if method in ("absmax", "int8_vectorwise") and blocksize is None else f", blocksize {blocksize}"
    raise AssertionError(
        f"{title}{grouping}: {int(bad.sum())} of {xf.size} elements exceed the error bound; the worst:\n"
        f"  index    {index_of(i, xf.shape)}   [{_where_text(method, i, xf.shape, blocksize, axis)}]\n"
        f"  x        = {f32_text(xf.reshape(-1)[i])}\n"
        f"  x_hat    = {float(y.reshape(-1)[i]):.9g}\n"
        f"  |error|  = {num(e)}\n"
        f"  bound    = {num(b)}  ({_bound_text(method, float(scale.reshape(-1)[i]), bits, offset)})\n"
        f"  exceeded by {excess_text(e, b)}")


def assert_matmul_within_bound(x: Any, w: Any, y: Any, threshold: float = 6.0) -> float:
    """Assert an LLM.int8 product ``y ≈ x @ w.T`` is within :func:`~minilora.quant.bounds.int8_matmul_bound`.

    Parameters
    ----------
    x : float array (..., k) — activations (FP16-representable range, |x| < 65520)
    w : float array (n, k) — weights, PyTorch layout (out_features, in_features)
    y : float array (..., n) — the kernel's product
    threshold : outlier threshold α (0: pure vector-wise int8), as the kernel used it

    Returns the largest ``|error| / bound``; raises AssertionError naming the worst output element.
    """
    xf, wf = float_input(x, "x"), float_input(w, "w")
    if wf.ndim != 2 or xf.ndim < 1 or xf.shape[-1] != wf.shape[1]:
        raise ValueError(f"need x (..., k) and w (n, k), got x {tuple(xf.shape)} and w {tuple(wf.shape)}")
    for name, v in (("x", xf), ("w", wf)):
        if v.size and float(np.abs(v).max()) >= 65520:
            raise ValueError(f"{name} holds values beyond FP16's range (|v| >= 65520); LLM.int8 runs in FP16")
    shape = (*xf.shape[:-1], wf.shape[0])
    yf = output_like(y, shape, "y")
    exact = xf.astype(np.float64) @ wf.astype(np.float64).T
    bound = np.asarray(bounds.int8_matmul_bound(xf, wf, threshold), np.float64)
    err = np.abs(yf - exact)
    bad = ~(err <= bound)
    if not bad.any():
        with np.errstate(invalid="ignore"):                     # 0 / 0 where x or w is all zeros
            return float(np.nan_to_num(err / bound).max(initial=0.0))
    i = worst_index(err, bound, bad)
    idx = index_of(i, shape)
    row = np.unravel_index(i, shape)[:-1]
    j = int(np.unravel_index(i, shape)[-1])
    e, b = float(err.reshape(-1)[i]), float(bound.reshape(-1)[i])
    raise AssertionError(
        f"LLM.int8 matmul (threshold {threshold}): {int(bad.sum())} of {err.size} outputs exceed the error "
        f"bound; the worst:\n"
        f"  index    {idx}   [row {tuple(int(r) for r in row) if len(row) != 1 else int(row[0])} of x, "
        f"row {j} of w, k = {wf.shape[1]}]\n"
        f"  exact    = {float(exact.reshape(-1)[i]):.9g}   (x @ w.T in float64)\n"
        f"  y        = {float(yf.reshape(-1)[i]):.9g}\n"
        f"  |error|  = {num(e)}\n"
        f"  bound    = {num(b)}  (FP16 and int8 rounding of x and w at their row scales, summed over k)\n"
        f"  exceeded by {excess_text(e, b)}")


# ----------------------------------------------------------------------------- float-format casts

@lru_cache(maxsize=8)
def _magnitudes(fmt: FloatFormat) -> np.ndarray:
    """Every non-negative finite value of ``fmt`` in pattern order (increasing), float64, and one more: the
    value the next pattern would have with an unbounded exponent (``max + ulp``), so overflow is a rounding."""
    pats = np.arange(fmt.max_bits + 1, dtype=np.uint32).astype(fmt.storage_dtype)
    vals = decode(pats, fmt).astype(np.float64)
    if not np.all(np.diff(vals) > 0):
        raise AssertionError(f"decode({fmt.name}) is not increasing in the pattern")  # cannot happen
    return np.append(vals, 2 * vals[-1] - vals[-2])


def correctly_rounded(x: Any, fmt: FloatFormat | str, saturate: bool = False) -> np.ndarray:
    """The bit patterns a correct cast of float32 ``x`` to ``fmt`` must give (uint64, ``x``'s shape).

    Found independently of :func:`minilora.formats.encode`: a binary search of ``|x|`` among every finite
    value of the format (decoded), the nearer neighbour chosen in exact float64 arithmetic (the two
    distances are exact by Sterbenz's lemma), a tie going to the even pattern; a value past the largest
    finite one overflows (to ±inf, or NaN for E4M3, or ±max with ``saturate``), as docs/facts.md §1 says.
    """
    fmt = get_format(fmt)
    xf = host(x, "x")
    if xf.dtype != np.float32:
        raise TypeError(f"x must be the float32 input of the cast, got dtype {xf.dtype}")
    u = xf.view(np.uint32).astype(np.uint64)
    sign = (u >> np.uint64(31)) << np.uint64(fmt.bits - 1)
    nan_bits, max_bits = np.uint64(fmt.nan_bits), np.uint64(fmt.max_bits)
    if fmt.bits == 32:
        mag = np.where(np.isnan(xf), nan_bits, u & np.uint64(0x7FFFFFFF))
        return (mag | sign).astype(np.uint64)
    over_bits = max_bits if saturate else np.uint64(fmt.inf_bits if fmt.ieee_specials else fmt.nan_bits)
    inf_to = np.uint64(fmt.inf_bits) if fmt.ieee_specials else (max_bits if saturate else nan_bits)
    ext = _magnitudes(fmt)
    with np.errstate(invalid="ignore"):                        # signalling NaNs
        a = np.abs(xf.astype(np.float64))
    fin = np.isfinite(a)
    af = np.where(fin, a, 0.0)
    hi = np.minimum(np.searchsorted(ext, af, side="left"), ext.size - 1)     # ext[hi - 1] < a <= ext[hi]
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = af - ext[lo], ext[hi] - af
    pick = np.where((d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0)), hi, lo).astype(np.uint64)
    over = (pick > max_bits) | (af > ext[-1])
    mag = np.where(over, over_bits, pick)
    mag = np.where(fin, mag, np.where(np.isnan(xf), nan_bits, inf_to))
    return (mag | sign).astype(np.uint64)


def _pattern_bits(bits: Any, fmt: FloatFormat, shape: tuple[int, ...]) -> np.ndarray:
    b = host(bits, "bits")
    if b.dtype.kind not in "ui":
        raise TypeError(f"bits must be an integer array of {fmt.name} patterns (e.g. {fmt.storage_dtype}, or a "
                        f"signed view of it), got dtype {b.dtype}")
    if tuple(b.shape) != tuple(shape):
        raise ValueError(f"bits has shape {tuple(b.shape)} but x has shape {tuple(shape)}")
    if b.dtype.kind == "i" and b.dtype.itemsize * 8 == fmt.bits:
        b = b.view(np.dtype(f"u{b.dtype.itemsize}"))            # torch's int16 view of bfloat16, say
    b = b.astype(np.int64)
    if b.size and (b.min() < 0 or b.max() >= 1 << fmt.bits):
        raise ValueError(f"bits hold values outside [0, 2**{fmt.bits}): not {fmt.name} patterns")
    return b.astype(np.uint64)


def _hex(p: int, fmt: FloatFormat) -> str:
    return f"0x{p:0{fmt.bits // 4}x}"


def _value_text(p: int, fmt: FloatFormat) -> str:
    v = float(decode(np.array([p], np.uint64).astype(fmt.storage_dtype), fmt)[0])
    return f"{_hex(p, fmt)} = {v:.9g}"


def assert_rounds_like(bits: Any, x: Any, fmt: FloatFormat | str, *, saturate: bool = False,
                       nan: str = "canonical") -> None:
    """Assert ``bits`` is the correctly rounded cast of float32 ``x`` to ``fmt``, pattern for pattern.

    Parameters
    ----------
    bits : integer array of ``fmt`` bit patterns, ``x``'s shape (uint16 for FP16/BF16, uint8 for FP8;
        a signed view such as torch's ``.view(torch.int16)`` is fine)
    x : float32 array — the input of the cast
    fmt : ``FP16``, ``BF16``, ``FP8_E4M3``, ``FP8_E5M2`` (or ``FP32``), or a name
    saturate : overflow gives ±max instead of ±inf (E4M3: instead of NaN, and ±inf gives ±max), as torch's
        E4M3 cast does
    nan : ``"canonical"`` — a NaN input gives the format's quiet NaN with the input's sign (ml_dtypes,
        minilora: docs/facts.md §1); ``"any"`` — any NaN pattern is accepted (libraries differ in payloads)

    Rule: round to nearest, ties to even; subnormal results kept; ±0 keep their sign; overflow at and
    beyond ``max + ulp/2`` (a tie that goes up for the IEEE formats and down for E4M3, whose next pattern
    would be odd). Raises AssertionError naming the worst element.
    """
    if nan not in ("canonical", "any"):
        raise ValueError(f"nan must be 'canonical' or 'any', got {nan!r}")
    fmt = get_format(fmt)
    xf = host(x, "x")
    want = correctly_rounded(xf, fmt, saturate)
    got = _pattern_bits(bits, fmt, xf.shape)
    sign_bit = np.uint64(1 << (fmt.bits - 1))
    mag_mask = np.uint64((1 << (fmt.bits - 1)) - 1)

    def is_nan(p: np.ndarray) -> np.ndarray:
        m = p & mag_mask
        if fmt.ieee_specials:
            return m > np.uint64(fmt.inf_bits)
        return m == np.uint64(fmt.nan_bits)

    ok = got == want
    if nan == "any":
        ok |= is_nan(want) & is_nan(got)
    if ok.all():
        return
    bad = np.flatnonzero(~ok.reshape(-1))
    g, w = got.reshape(-1)[bad], want.reshape(-1)[bad]
    vals = _magnitudes(fmt)
    finite = lambda p: (p & mag_mask) <= np.uint64(fmt.max_bits)          # noqa: E731
    both = finite(g) & finite(w)
    a = np.abs(xf.reshape(-1)[bad].astype(np.float64))
    with np.errstate(invalid="ignore"):
        gv = np.where(both, vals[np.minimum(g & mag_mask, np.uint64(fmt.max_bits)).astype(np.int64)], np.nan)
        wv = np.where(both, vals[np.minimum(w & mag_mask, np.uint64(fmt.max_bits)).astype(np.int64)], np.nan)
        spacing = np.maximum(np.abs(gv - wv), vals[1])
        rank = np.where(both & ((g & sign_bit) == (w & sign_bit)), (np.abs(a - gv) - np.abs(a - wv)) / spacing,
                        np.inf)
    k = int(np.argmax(np.nan_to_num(rank, nan=np.inf)))
    i = int(bad[k])
    pg, pw = int(g[k]), int(w[k])
    xv = float(xf.reshape(-1)[i])
    lines = [f"cast to {fmt.name} (nearest, ties to even{', saturating' if saturate else ''}): {bad.size} of "
             f"{xf.size} patterns differ from the correctly rounded ones; the worst:",
             f"  index     {index_of(i, xf.shape)}",
             f"  x         = {f32_text(xf.reshape(-1)[i])}",
             f"  got       = {_value_text(pg, fmt)}",
             f"  expected  = {_value_text(pw, fmt)}"]
    if bool(both[k]):
        ax = abs(xv)
        eg, ew = abs(ax - gv[k]), abs(ax - wv[k])
        lines += [f"  |error|   = {num(eg)}",
                  f"  bound     = {num(ew)}  (the error of the correctly rounded value)",
                  f"  exceeded by {num(eg - ew)}"]
        if (pg & int(sign_bit)) != (pw & int(sign_bit)):
            lines.append("  the sign is wrong (a cast keeps the sign, also of zero)")
        elif eg == ew:
            lo_p, hi_p = sorted((pg & int(mag_mask), pw & int(mag_mask)))
            lines.append(f"  x is exactly halfway between {_hex(lo_p, fmt)} and {_hex(hi_p, fmt)}: a tie goes to "
                         f"the even pattern, {_hex(pw, fmt)}")
    else:
        ulp = vals[-1] - vals[-2]
        first = vals[-2] + ulp / 2
        if np.isnan(xv):
            lines.append(f"  x is NaN: expected the canonical quiet NaN of {fmt.name} with x's sign "
                         f"(pass nan='any' to accept any NaN pattern)")
        elif abs(xv) >= first:
            lines.append(f"  |x| is at or beyond {fmt.name}'s first overflow point {first:.9g} (max + ulp/2)")
        else:
            lines.append(f"  |x| is below {fmt.name}'s first overflow point {first:.9g} (max + ulp/2): "
                         f"it must round to a finite value")
    raise AssertionError("\n".join(lines))

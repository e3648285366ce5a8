"""Reference oracles for bit-exactness: the codes a conforming kernel must produce, and where it differs.

An error bound cannot see a wrong tie rule: rounding a midpoint up instead of down errs by exactly half a
step, which is within the bound. Where the question is "does my kernel agree with bitsandbytes bit for
bit", compare codes: :func:`expected_codes` gives the codes (and absmax) minilora produces — minilora's
quantizers are checked bit for bit against golden vectors made by bitsandbytes' pure-PyTorch kernels
(docs/facts.md §2–4) — and :func:`diff_codes` / :func:`assert_codes_equal` say which elements differ and
why (an exact tie, a value one float32 ulp from a midpoint, or simply not the nearest code).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from minilora.quant import absmax_quantize, int8_vectorwise_quant, quantize_4bit, quantize_blockwise
from minilora.quant.absmax import qmax_for
from minilora.quant.blockwise import midpoints, scale_blocks, unpack_nibbles
from minilora.quant.double_quant import create_dynamic_map
from minilora.quant.nf4 import get_4bit_code
from minilora.testing._arrays import f32_text, float_input, host, index_of

__all__ = ["expected_codes", "ExpectedCodes", "diff_codes", "CodeDiff", "assert_codes_equal", "CODE_METHODS"]

#: methods with codes to compare
CODE_METHODS = ("nf4", "fp4", "dynamic", "absmax", "int8_vectorwise")
_DEFAULT_BS = {"nf4": 64, "fp4": 64, "dynamic": 4096}


class ExpectedCodes(NamedTuple):
    """What a conforming kernel produces for ``x`` (see :func:`expected_codes`)."""

    codes: np.ndarray                  # x.shape: uint8 (nf4, fp4, dynamic) or int8 (absmax, int8_vectorwise)
    absmax: np.ndarray                 # float32 per group: (nblocks,), (), x.shape without axis, or (rows,)
    scaled: np.ndarray                 # float32, x.shape: the value that was rounded to a code
    packed: np.ndarray | None = None   # nf4 / fp4: bitsandbytes' bytes, (ceil(n / 2),), high nibble first
    outlier_cols: np.ndarray | None = None   # int8_vectorwise: sorted outlier columns


def _method(method: Any) -> str:
    m = method.replace("+", "_") if isinstance(method, str) else method
    m = {"nf4_dq": "nf4", "fp4_dq": "fp4"}.get(m, m)           # double quantization keeps the 4-bit codes
    if m not in CODE_METHODS:
        raise ValueError(f"method must be one of {CODE_METHODS} (or nf4_dq / fp4_dq), got {method!r}")
    return m


def expected_codes(x: Any, method: str = "nf4", *, blocksize: int | None = None, bits: int = 8,
                   axis: int | None = None, threshold: float = 0.0) -> ExpectedCodes:
    """The codes and scales a conforming kernel must produce for ``x``.

    Parameters
    ----------
    x : float16 / float32 array, any shape (2-D for ``"int8_vectorwise"``)
    method : ``"nf4"``, ``"fp4"`` (bitsandbytes ``quantize_4bit``; ``"nf4_dq"`` gives the same codes),
        ``"dynamic"`` (``quantize_blockwise`` with the 8-bit dynamic map), ``"absmax"`` (int-``bits``, per
        tensor / ``axis`` / ``blocksize``), ``"int8_vectorwise"`` (LLM.int8's ``int8_vectorwise_quant``)
    blocksize : default 64 (4-bit) / 4096 (dynamic)

    Returns
    -------
    :class:`ExpectedCodes` ``(codes, absmax, scaled, packed, outlier_cols)``.

    >>> import numpy as np
    >>> e = expected_codes(np.array([0.5, -1.0, 1.0], np.float32), "nf4")
    >>> e.codes.tolist(), [hex(b) for b in e.packed.tolist()], e.absmax.tolist()
    ([12, 0, 15], ['0xc0', '0xf7'], [1.0])
    """
    method = _method(method)
    xf = float_input(x)
    if method != "absmax" and axis is not None:
        raise ValueError(f"axis is only for method 'absmax', got axis={axis!r} with method {method!r}")
    if method in ("nf4", "fp4", "dynamic"):
        bs = _DEFAULT_BS[method] if blocksize is None else blocksize
        if method == "dynamic":
            q, st = quantize_blockwise(xf, blocksize=bs)
            codes, packed = np.asarray(q).reshape(xf.shape), None
        else:
            packed, st = quantize_4bit(xf, blocksize=bs, quant_type=method)
            codes = unpack_nibbles(packed, xf.size).reshape(xf.shape)
        scaled = scale_blocks(xf.reshape(-1), st.blocksize)[1].reshape(xf.shape)
        return ExpectedCodes(codes, np.asarray(st.absmax), scaled, packed)
    if method == "absmax":
        q, a = absmax_quantize(xf, bits=bits, axis=axis, blocksize=blocksize)
        return ExpectedCodes(q, a, _absmax_scaled(xf, a, bits, axis, blocksize))
    ca, sca, cols = int8_vectorwise_quant(xf, threshold)
    kept = np.where((threshold > 0) & (np.abs(xf) >= threshold), np.float32(0), xf)     # outliers zeroed first
    with np.errstate(divide="ignore", over="ignore"):
        scale = np.where(sca > 0, (np.float32(1) / sca) * np.float32(127), np.float32(0)).astype(np.float32)
    return ExpectedCodes(ca, sca, (kept * scale[:, None]).astype(np.float32), outlier_cols=cols)


def _absmax_scaled(x: np.ndarray, absmax: np.ndarray, bits: int, axis: Any, blocksize: Any) -> np.ndarray:
    """``float32(x / absmax) · qmax``: the value absmax int-b rounds half to even."""
    if blocksize is not None:
        a = np.repeat(absmax, blocksize)[: x.size].reshape(x.shape)
    elif axis is not None:
        a = np.expand_dims(absmax, axis)
    else:
        a = absmax
    safe = np.where(a > 0, a, np.float32(1)).astype(np.float32)
    return ((x / safe) * np.float32(qmax_for(bits))).astype(np.float32)


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 ulps (patterns in between, across zero too)."""
    def ordered(v: np.ndarray) -> np.ndarray:
        i = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(ordered(a) - ordered(b))


class CodeDiff(NamedTuple):
    """Where a kernel's codes differ from :func:`expected_codes` (flat indices into ``x``)."""

    method: str
    n: int                      # elements compared
    index: np.ndarray           # (k,) flat indices of the differing codes
    got: np.ndarray             # (k,) the kernel's codes there
    expected: np.ndarray        # (k,) the conforming codes
    scaled: np.ndarray          # (k,) the scaled values that were rounded
    tie_ulps: np.ndarray        # (k,) float32 ulps from the scaled value to the nearest tie (0: exactly on it)

    @property
    def count(self) -> int:
        return int(self.index.size)

    def __repr__(self) -> str:
        ties = int((self.tie_ulps == 0).sum())
        near = int(((self.tie_ulps > 0) & (self.tie_ulps <= 2)).sum())
        return (f"CodeDiff({self.method}: {self.count} of {self.n} codes differ; {ties} at exact ties, "
                f"{near} within 2 ulps of one, {self.count - ties - near} elsewhere)")


def _ties_of(method: str, scaled: np.ndarray) -> np.ndarray:
    """The tie (midpoint) nearest to each scaled value, float32."""
    if method in ("absmax", "int8_vectorwise"):
        return (np.floor(scaled.astype(np.float64)) + 0.5).astype(np.float32)
    mid, _ = midpoints(create_dynamic_map() if method == "dynamic" else get_4bit_code(method))
    j = np.clip(np.searchsorted(mid, scaled), 1, mid.size - 1)
    lo, hi = mid[j - 1], mid[j]
    return np.where(np.abs(scaled - lo) <= np.abs(hi - scaled), lo, hi)


def diff_codes(x: Any, codes: Any = None, method: str = "nf4", *, packed: Any = None, blocksize: int | None = None,
               bits: int = 8, axis: int | None = None, threshold: float = 0.0) -> CodeDiff:
    """Compare a kernel's codes (``codes`` of ``x``'s size, or nf4/fp4 ``packed`` bytes) with the conforming ones.

    Returns a :class:`CodeDiff`; ``diff.count == 0`` means bit-exact codes.
    """
    method = _method(method)
    exp = expected_codes(x, method, blocksize=blocksize, bits=bits, axis=axis, threshold=threshold)
    n = exp.codes.size
    if (codes is None) == (packed is None):
        raise ValueError("give exactly one of codes= (one code per element of x) or packed= (nf4/fp4 bytes)")
    if packed is not None:
        if method not in ("nf4", "fp4"):
            raise ValueError(f"packed= is for nf4 / fp4 codes, not {method!r}; pass codes=")
        p = host(packed, "packed").reshape(-1)
        if p.dtype != np.uint8 or p.size != -(-n // 2):
            raise ValueError(f"packed must be {-(-n // 2)} uint8 bytes for {n} elements, got {p.size} of {p.dtype}")
        got = unpack_nibbles(p, n)
    else:
        got = host(codes, "codes")
        if got.dtype.kind not in "iu":
            raise TypeError(f"codes must be an integer array, got dtype {got.dtype}")
        if got.size != n:
            raise ValueError(f"codes has {got.size} values but x has {n} elements")
        got = got.reshape(-1)
    want = exp.codes.reshape(-1)
    idx = np.flatnonzero(got.astype(np.int64) != want.astype(np.int64))
    s = exp.scaled.reshape(-1)[idx]
    return CodeDiff(method, n, idx, got[idx], want[idx], s, _ulps(s, _ties_of(method, s)))


def _code_value(method: str, c: int, bits: int) -> float:
    if method in ("absmax", "int8_vectorwise"):
        return float(c)
    table = create_dynamic_map() if method == "dynamic" else get_4bit_code(method)
    return float(table[c])


def assert_codes_equal(x: Any, codes: Any = None, method: str = "nf4", *, packed: Any = None, absmax: Any = None,
                       blocksize: int | None = None, bits: int = 8, axis: int | None = None,
                       threshold: float = 0.0) -> None:
    """Assert a kernel's codes (and, if given, its absmax) equal the conforming ones bit for bit.

    The failure message names the first differing scale, or the differing code farthest from the expected
    one, with the scaled value and the reason: an exact tie (say which rule applies), a value within a few
    ulps of a midpoint (a kernel that scales differently lands on the other side), or not the nearest code.
    """
    method = _method(method)
    xf = float_input(x)
    exp = expected_codes(xf, method, blocksize=blocksize, bits=bits, axis=axis, threshold=threshold)
    if absmax is not None:
        ga = host(absmax, "absmax").astype(np.float32).reshape(-1)
        wa = np.asarray(exp.absmax, np.float32).reshape(-1)
        if ga.shape != wa.shape:
            raise ValueError(f"absmax has {ga.size} values, expected {wa.size}")
        bad = np.flatnonzero(ga.view(np.uint32) != wa.view(np.uint32))
        if bad.size:
            b = int(bad[0])
            raise AssertionError(f"{method}: {bad.size} of {wa.size} scales differ; first, group {b}:\n"
                                 f"  got      absmax = {f32_text(ga[b])}\n  expected absmax = {f32_text(wa[b])}")
    d = diff_codes(xf, codes, method, packed=packed, blocksize=blocksize, bits=bits, axis=axis,
                   threshold=threshold)
    if d.count == 0:
        return
    gv = np.array([_code_value(method, int(c), bits) for c in d.got])
    wv = np.array([_code_value(method, int(c), bits) for c in d.expected])
    k = int(np.argmax(np.abs(gv - wv) + (d.tie_ulps > 2) * 1e9))   # a plain wrong code first, then the widest
    i, s, t = int(d.index[k]), float(d.scaled[k]), int(d.tie_ulps[k])
    rule = ("round half to even" if method in ("absmax", "int8_vectorwise")
            else "a value on a midpoint takes the lower code (bitsandbytes)")
    if t == 0:
        why = f"the scaled value is exactly a tie between two codes: {rule}"
    elif t <= 2:
        why = (f"the scaled value is {t} float32 ulp{'s' * (t > 1)} from a tie: a kernel that scales differently "
               f"(x / absmax vs x · (1/absmax), or another summation order) rounds to the other side")
    else:
        why = (f"the got code is not the nearest: |s − {gv[k]:.9g}| = {abs(s - gv[k]):.6g} > "
               f"|s − {wv[k]:.9g}| = {abs(s - wv[k]):.6g}")
    ties = int((d.tie_ulps == 0).sum())
    near = int(((d.tie_ulps > 0) & (d.tie_ulps <= 2)).sum())
    integer = method in ("absmax", "int8_vectorwise")
    got = f"code {int(d.got[k])}" + ("" if integer else f" ({gv[k]:.9g})")
    want = f"code {int(d.expected[k])}" + ("" if integer else f" ({wv[k]:.9g})")
    raise AssertionError(
        f"{method}: {d.count} of {d.n} codes differ from the conforming ones ({ties} at exact ties, {near} "
        f"within 2 ulps of one); the worst:\n"
        f"  index     {index_of(i, xf.shape)}\n"
        f"  x         = {f32_text(xf.reshape(-1)[i])}\n"
        f"  scaled    = {f32_text(s)}\n"
        f"  got       {got}\n"
        f"  expected  {want}\n"
        f"  {why}")

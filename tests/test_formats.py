"""minilora.formats against golden vectors from ml_dtypes / PyTorch / NumPy, plus properties."""

import hashlib
import math
import sys

import numpy as np
import pytest
from conftest import ROOT, load_golden
from hypothesis import given
from hypothesis import strategies as st

from minilora.formats import (
    BF16,
    FORMATS,
    FP8_E4M3,
    FP8_E5M2,
    FP16,
    FP32,
    decode,
    encode,
    fields,
    round_to,
    running_sum,
)

sys.path.insert(0, str(ROOT / "tools"))
from golden._inputs import random_float32_bits  # noqa: E402

G = load_golden("formats")
LOW = {"fp16": FP16, "bf16": BF16, "fp8_e4m3": FP8_E4M3, "fp8_e5m2": FP8_E5M2}
# golden key -> (format, saturate)
ENCODINGS = {**{k: (f, False) for k, f in LOW.items()}, "fp8_e4m3_sat": (FP8_E4M3, True)}


def _first_mismatch(got, want, x):
    i = np.flatnonzero(got != want)
    if i.size == 0:
        return ""
    j = i[:5]
    return (f"{i.size} mismatches, e.g. x={x[j]!r} bits={x[j].view(np.uint32)!r}: "
            f"got {got[j]!r}, want {want[j]!r}")


# ---- constants are computed from the fields and equal docs/facts.md §1 ----------------------------------

@pytest.mark.parametrize("fmt, mx, min_normal, min_sub, eps", [
    (FP32, 3.4028234663852886e38, 2.0**-126, 2.0**-149, 2.0**-23),
    (BF16, 3.3895313892515355e38, 2.0**-126, 2.0**-133, 2.0**-7),
    (FP16, 65504.0, 2.0**-14, 2.0**-24, 2.0**-10),
    (FP8_E4M3, 448.0, 2.0**-6, 2.0**-9, 2.0**-3),
    (FP8_E5M2, 57344.0, 2.0**-14, 2.0**-16, 2.0**-2),
], ids=lambda v: getattr(v, "name", ""))
def test_constants(fmt, mx, min_normal, min_sub, eps):
    assert (fmt.max, fmt.min_normal, fmt.min_subnormal, fmt.eps) == (mx, min_normal, min_sub, eps)
    # and they are what decode gives for the corresponding bit patterns
    assert float(decode(np.array([fmt.max_bits], np.uint32).astype(fmt.storage_dtype), fmt)[0]) == mx
    assert float(decode(np.array([1], fmt.storage_dtype), fmt)[0]) == min_sub
    assert float(decode(np.array([1 << fmt.man_bits], fmt.storage_dtype), fmt)[0]) == min_normal


def test_repr_names_the_layout():
    assert "1/5/10" in repr(FP16) and "65504" in repr(FP16)


# ---- decode: every bit pattern ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LOW))
def test_decode_every_pattern(name):
    fmt = LOW[name]
    want = G[f"decode_{name}"]
    pats = np.arange(1 << fmt.bits, dtype=np.uint32).astype(fmt.storage_dtype)
    got = decode(pats, fmt)
    assert got.dtype == np.float32
    nan = np.isnan(want.view(np.float32))
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got.view(np.uint32)[~nan], want[~nan]), _first_mismatch(
        got.view(np.uint32)[~nan], want[~nan], pats[~nan])
    # NaNs keep their sign
    assert np.array_equal(np.signbit(got[nan]), np.signbit(want.view(np.float32)[nan]))


# ---- encode: 2^20 random patterns + edge cases -----------------------------------------------------

@pytest.fixture(scope="module")
def random_x():
    x = random_float32_bits().view(np.float32)
    assert hashlib.sha256(x.tobytes()).digest() == bytes(G["random_sha256"]), (
        "the random inputs no longer match the golden file (NumPy's generator changed?)")
    return x


@pytest.mark.parametrize("key", list(ENCODINGS))
def test_encode_random(key, random_x):
    fmt, saturate = ENCODINGS[key]
    got = encode(random_x, fmt, saturate=saturate)
    assert got.dtype == fmt.storage_dtype and got.shape == random_x.shape
    stored = G[f"encode_random_{key}"]
    n = stored.size
    assert np.array_equal(got[:n], stored), _first_mismatch(got[:n], stored, random_x[:n])
    assert hashlib.sha256(got.tobytes()).digest() == bytes(G[f"encode_random_{key}_sha256"])


@pytest.mark.parametrize("key", list(ENCODINGS))
def test_encode_edge_cases(key):
    fmt, saturate = ENCODINGS[key]
    x = G["edge_inputs"].view(np.float32)
    got = encode(x, fmt, saturate=saturate)
    want = G[f"encode_edge_{key}"]
    assert np.array_equal(got, want), _first_mismatch(got, want, x)


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
def test_special_values(fmt):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan], np.float32)
    b = encode(x, fmt).astype(np.uint32)
    sign = 1 << (fmt.bits - 1)
    assert b[0] == 0 and b[1] == sign
    if fmt.inf_bits is not None:
        assert b[2] == fmt.inf_bits and b[3] == sign | fmt.inf_bits
    else:  # E4M3 has no inf: NaN, or ±448 when saturating
        assert b[2] == fmt.nan_bits and b[3] == sign | fmt.nan_bits
        sat = encode(x[2:4], fmt, saturate=True).astype(np.uint32)
        assert list(sat) == [fmt.max_bits, sign | fmt.max_bits]
    assert b[4] == fmt.nan_bits and b[5] == sign | fmt.nan_bits


@pytest.mark.parametrize("fmt, first_overflow", [(FP16, 65520.0), (BF16, 3.3961775e38), (FP8_E5M2, 61440.0)],
                         ids=["fp16", "bf16", "e5m2"])
def test_first_overflow_point(fmt, first_overflow):
    x = np.float32(first_overflow)
    below = np.nextafter(x, np.float32(0))
    assert np.isinf(round_to(x, fmt)) and round_to(below, fmt) == np.float32(fmt.max)
    assert round_to(x, fmt, saturate=True) == np.float32(fmt.max)


def test_e4m3_overflow_rule():
    x = np.array([448, 460, 464, np.nextafter(np.float32(464), np.float32(1e9)), 1e6], np.float32)
    assert list(round_to(x, FP8_E4M3)[:3]) == [448, 448, 448]
    assert np.isnan(round_to(x, FP8_E4M3)[3:]).all()
    assert list(round_to(x, FP8_E4M3, saturate=True)) == [448] * 5


def test_blog_examples():
    # 1 + 2^-11 is exactly half-way between 1 and the next FP16 number: ties to even gives 1
    assert round_to(np.float32(1 + 2**-11), FP16) == 1.0
    assert round_to(np.float32(1 + 2**-10), FP16) == np.float32(1 + 2**-10)
    # BF16 keeps FP32's range: 1e38 is finite in BF16 and inf in FP16
    assert np.isfinite(round_to(np.float32(1e38), BF16)) and np.isinf(round_to(np.float32(1e38), FP16))


def test_fields():
    s, e, m = fields(np.array([-1.5, 2.0**-24, 65504], np.float32), FP16)
    assert list(s) == [1, 0, 0] and list(e) == [15, 0, 30] and list(m) == [512, 1, 1023]
    s, e, m = fields(np.float32(1.0), FP32)
    assert (int(s), int(e), int(m)) == (0, 127, 0)


def test_fp32_is_identity_except_nan():
    x = random_float32_bits(4096, seed=1).view(np.float32)
    b = encode(x, FP32)
    ok = ~np.isnan(x)
    assert np.array_equal(b[ok], x.view(np.uint32)[ok])
    assert np.array_equal(decode(b, FP32)[ok].view(np.uint32), b[ok])


# ---- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.array([1.0]), np.array([1], np.int32), 1.0, np.array([1], np.float16)],
                         ids=["float64", "int32", "python-float", "float16"])
def test_encode_rejects_non_float32(bad):
    with pytest.raises(TypeError, match="float32"):
        encode(bad, FP16)


def test_unknown_format():
    with pytest.raises(ValueError, match="allowed: fp32, fp16, bf16"):
        encode(np.float32(1), "fp12")
    assert encode(np.float32(1), "BF16") == 0x3F80  # names work, case-insensitively


def test_decode_rejects_out_of_range_and_floats():
    with pytest.raises(ValueError, match="outside"):
        decode(np.array([256], np.int32), FP8_E5M2)
    with pytest.raises(TypeError, match="integer"):
        decode(np.array([1.0], np.float32), FP16)


def test_shapes_preserved_and_empty():
    x = np.zeros((2, 3, 0), np.float32)
    assert encode(x, BF16).shape == (2, 3, 0)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert round_to(x, FP16).shape == (2, 3, 4)


# ---- properties: nearest, idempotent, monotonic ----------------------------------------------------

finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
LOWP = [FP16, BF16, FP8_E4M3, FP8_E5M2]


def _neighbours(r: float, fmt) -> tuple[float, float]:
    """The representable values just below and above r (float64), from the bit pattern."""
    b = int(encode(np.float32(r), fmt, saturate=True))
    pats = np.array([b - 1 if b else b, b + 1], np.uint32).astype(fmt.storage_dtype)
    lo, hi = (float(v) for v in decode(pats, fmt))
    return lo, hi


@given(x=finite_f32, fmt=st.sampled_from(LOWP))
def test_round_to_is_nearest(x, fmt):
    r = float(round_to(np.float32(x), fmt))
    if math.isinf(r) or math.isnan(r):  # only beyond the overflow point
        assert abs(x) >= fmt.max
        return
    if x == 0 or r == 0 and abs(x) <= fmt.min_subnormal / 2:
        assert abs(x) <= fmt.min_subnormal / 2
        return
    # no representable value is nearer than r: check r's neighbours on the same side of zero
    mag = abs(r)
    lo, hi = _neighbours(mag, fmt)
    ax = abs(x)
    assert abs(ax - mag) <= abs(ax - lo) and (math.isnan(hi) or math.isinf(hi) or abs(ax - mag) <= abs(ax - hi))
    # within half a spacing
    spacing = max(hi - mag if math.isfinite(hi) else mag - lo, mag - lo)
    assert abs(ax - mag) <= spacing / 2


@given(x=finite_f32, fmt=st.sampled_from(LOWP))
def test_round_to_is_idempotent(x, fmt):
    r = round_to(np.float32(x), fmt)
    assert np.array_equal(round_to(r, fmt), r, equal_nan=True)


@given(a=finite_f32, b=finite_f32, fmt=st.sampled_from(LOWP), sat=st.booleans())
def test_round_to_is_monotonic(a, b, fmt, sat):
    lo, hi = sorted([a, b])
    rl, rh = (float(v) for v in round_to(np.array([lo, hi], np.float32), fmt, saturate=sat))
    if math.isnan(rl) or math.isnan(rh):  # E4M3 overflow without saturation
        return
    assert rl <= rh


def test_running_sum_stalls_where_spacing_exceeds_twice_the_addend():
    x = np.full(3000, 1.0, np.float32)
    assert running_sum(x, FP16)[-1] == 2048  # 2049 is not an FP16 number: 2048 + 1 is a tie → 2048
    assert running_sum(x, BF16)[-1] == 256
    assert running_sum(x, FP32)[-1] == 3000
    np.testing.assert_array_equal(running_sum(x[:100], FP16), np.arange(1, 101, dtype=np.float32))


def test_running_sum_axis_and_independent_rows():
    x = np.ones((3, 5), np.float32)
    s = running_sum(x, FP16, axis=1)
    assert s.shape == (3, 5) and (s[:, -1] == 5).all()
    np.testing.assert_array_equal(running_sum(x, FP16, axis=0)[-1], np.full(5, 3, np.float32))


def test_golden_file_records_its_provenance():
    from golden._meta import read_meta

    info = read_meta(G)
    assert info["generator"] == "tools/golden/formats.py" and not info["dirty"]
    assert {"ml_dtypes", "torch", "numpy"} <= set(info["libraries"])


# ---- out=: write into the caller's array, as NumPy ufuncs do -----------------------------------------

N_OUT = 3 * (1 << 16) + 5          # several cache blocks and a partial one


@pytest.fixture(scope="module")
def out_x():
    return random_float32_bits(N_OUT, seed=3).view(np.float32)


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
@pytest.mark.parametrize("saturate", [False, True])
def test_encode_out(fmt, saturate, out_x):
    want = encode(out_x, fmt, saturate=saturate)
    out = np.full(out_x.shape, 0xAB, fmt.storage_dtype)
    got = encode(out_x, fmt, saturate=saturate, out=out)
    assert got is out and np.array_equal(out, want)
    x2 = out_x[:24].reshape(2, 3, 4)                          # any shape; 0-d too
    o2 = np.empty((2, 3, 4), fmt.storage_dtype)
    assert np.array_equal(encode(x2, fmt, out=o2), encode(x2, fmt))
    o0 = np.empty((), fmt.storage_dtype)
    assert encode(np.float32(1.5), fmt, out=o0) is o0 and o0 == encode(np.float32(1.5), fmt)


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
def test_decode_and_round_to_out(fmt, out_x):
    bits = encode(out_x, fmt)
    out = np.full(bits.shape, np.nan, np.float32)
    assert decode(bits, fmt, out=out) is out
    assert np.array_equal(out.view(np.uint32), decode(bits, fmt).view(np.uint32))
    out = np.empty_like(out_x)
    assert round_to(out_x, fmt, out=out) is out
    assert np.array_equal(out.view(np.uint32), round_to(out_x, fmt).view(np.uint32))


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
def test_out_may_overlap_the_input(fmt, out_x):
    """As with ufuncs, an ``out`` sharing memory with the input gives the result of separate arrays."""
    want = encode(out_x, fmt)
    x = out_x.copy()
    out = x.view(fmt.storage_dtype)[: x.size]                 # the first bytes of x itself
    assert np.array_equal(encode(x, fmt, out=out), want)
    x = out_x.copy()
    assert np.array_equal(round_to(x, fmt, out=x).view(np.uint32), round_to(out_x, fmt).view(np.uint32))
    buf = np.empty(out_x.size, np.float32)                     # decode into the buffer holding the bits
    bits = buf.view(fmt.storage_dtype)[-out_x.size:]
    bits[...] = want
    assert np.array_equal(decode(bits, fmt, out=buf).view(np.uint32), decode(want, fmt).view(np.uint32))


@pytest.mark.parametrize("func", ["encode", "decode", "round_to"])
def test_out_is_validated(func):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    arg = encode(x, BF16) if func == "decode" else x
    call = {"encode": lambda out: encode(arg, BF16, out=out), "decode": lambda out: decode(arg, BF16, out=out),
            "round_to": lambda out: round_to(arg, BF16, out=out)}[func]
    dtype = np.uint16 if func == "encode" else np.float32
    wrong_dtype = np.float32 if func == "encode" else np.float64
    with pytest.raises(TypeError, match=rf"out must have dtype {np.dtype(dtype)}.*got {np.dtype(wrong_dtype)}"):
        call(np.empty((3, 4), wrong_dtype))
    with pytest.raises(ValueError, match=r"out must have shape \(3, 4\), got \(4, 3\)"):
        call(np.empty((4, 3), dtype))
    with pytest.raises(ValueError, match="C-contiguous"):
        call(np.empty((3, 8), dtype)[:, ::2])
    ro = np.empty((3, 4), dtype)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        call(ro)
    with pytest.raises(TypeError, match="out must be an array"):
        call([[0] * 4] * 3)
    before = np.full((4, 3), 7, dtype)
    with pytest.raises(ValueError):
        call(before)
    assert np.all(before == 7)                                  # nothing half-written

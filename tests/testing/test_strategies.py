"""minilora.testing.strategies: the strategies draw what they promise, and refuse bad arguments."""

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from minilora.formats import BF16, FP8_E4M3, FP8_E5M2, FP16
from minilora.quant.blockwise import scale_blocks
from minilora.testing import BIT_CLASSES, blocksizes, code_midpoints, float32_bits, tensors
from minilora.testing.assertions import _magnitudes

FIND = settings(max_examples=2000, database=None, deadline=None)


@given(x=tensors())
def test_tensors_are_finite_float32_within_the_default_limits(x):
    assert x.dtype == np.float32 and 1 <= x.ndim <= 3 and 1 <= x.size <= 2000
    assert np.all(np.isfinite(x))


@given(x=tensors(dtype="float16"))
def test_float16_tensors(x):
    assert x.dtype == np.float16 and np.all(np.isfinite(x))


@given(x=tensors(dtype="bfloat16"))
def test_bfloat16_tensors_are_float32_holding_bfloat16_values(x):
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    assert np.all(x.view(np.uint32) & np.uint32(0xFFFF) == 0)       # the low half of every pattern is zero


@given(x=tensors(shape=(3, 5)))
def test_fixed_shape(x):
    assert x.shape == (3, 5)


@given(x=tensors(min_dims=0, max_dims=4, max_size=50, max_side=6))
def test_shape_limits(x):
    assert 0 <= x.ndim <= 4 and x.size <= 50 and all(s <= 6 for s in x.shape)


@given(x=tensors(scale=(1e-3, 1e2), kinds=("uniform",), outliers=False, midpoints=()))
def test_scale_range(x):
    assert float(np.abs(x).max(initial=0)) <= 1e2                      # uniform in [-1, 1] times 10^e, e <= 2


def _has_exact_midpoint(x, blocksize, code):
    s = scale_blocks(np.asarray(x, np.float32).reshape(-1), blocksize)[1]
    return bool(np.isin(s, code_midpoints(code)).any())


@pytest.mark.parametrize("code", ["nf4", "fp4", "dynamic"])
def test_tensors_plant_exact_code_midpoints(code):
    x = find(tensors(blocksize=64, midpoints=(code,)), lambda x: _has_exact_midpoint(x, 64, code), settings=FIND)
    assert x.size > 1


def test_tensors_plant_int8_ties_exact_in_x():
    """x · (127 / absmax) = k + ½ exactly, with absmax the row's: a tie for a one-rounding int8 kernel."""
    def tie(x):
        a = np.abs(x).max(axis=-1, keepdims=True).astype(np.float64)
        s = x.astype(np.float64) * 127 / np.where(a > 0, a, 1)
        return bool(np.any((s - np.floor(s) == 0.5) & (np.abs(s) < 127)))
    find(tensors(min_dims=2, max_dims=2, midpoints=("int8",)), tie, settings=FIND)


@pytest.mark.parametrize("feature, predicate", [
    ("an all-zero block of 64", lambda x: x.size >= 128 and np.any(
        np.abs(x.reshape(-1)[: x.size // 64 * 64].reshape(-1, 64)).max(axis=1) == 0)),
    ("a float32 subnormal", lambda x: np.any((x != 0) & (np.abs(x) < np.finfo(np.float32).tiny))),
    ("a value beyond 1e36", lambda x: np.any(np.abs(x) > 1e36)),
    ("an outlier 1000x the median magnitude", lambda x: x.size > 20 and np.abs(x).max() > 1000 * np.median(np.abs(x))
     > 0),
    ("a last dimension that is a multiple of 16", lambda x: x.ndim == 2 and x.shape[0] > 1 and x.shape[1] % 16 == 0),
])
def test_tensors_reach_the_hostile_cases(feature, predicate):
    find(tensors(blocksize=64), predicate, settings=FIND)


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": "float64"}, "dtype must be one of"),
    ({"kinds": ("gamma",)}, "kinds must be"),
    ({"midpoints": ("nf3",)}, "unknown codebook"),
    ({"scale": (0, 1)}, "scale must be"),
    ({"min_dims": -1}, "min_dims"),
    ({"blocksize": 0}, "blocksize"),
])
def test_tensors_reject_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tensors(**kwargs)


def test_code_midpoints():
    assert code_midpoints("int2").tolist() == [-0.5, 0.5]
    assert code_midpoints("nf4").size == 15 and code_midpoints("dynamic").size == 255
    assert code_midpoints("fp4").size == 14                           # two zeros: 15 distinct levels


@given(bs=blocksizes())
def test_blocksizes_default_is_bitsandbytes_set(bs):
    assert bs in (32, 64, 128, 256, 512, 1024, 2048, 4096)


@given(bs=blocksizes(1, 100, powers_of_two=False))
def test_blocksizes_any_integer(bs):
    assert 1 <= bs <= 100


def test_blocksizes_reject_an_empty_range():
    with pytest.raises(ValueError, match="no power of two"):
        blocksizes(33, 63)


# ---- float32_bits ------------------------------------------------------------------------------------

def _is_tie(v, fmt):
    """|v| exactly halfway between two neighbouring magnitudes of fmt (exact in float64), element-wise."""
    ext = _magnitudes(fmt)
    a = np.abs(np.asarray(v, np.float64))
    hi = np.searchsorted(ext, a)
    ok = (hi > 0) & (hi < ext.size)
    hi = np.clip(hi, 1, ext.size - 1)
    return ok & (ext[hi] - a == a - ext[hi - 1])


@pytest.mark.parametrize("fmt", [FP16, BF16, FP8_E4M3, FP8_E5M2], ids=lambda f: f.name)
@given(data=st.data())
def test_ties_are_exact_ties(fmt, data):
    bits = data.draw(float32_bits((fmt,), classes=("tie",)))
    assert bits.dtype == np.uint32
    assert np.all(_is_tie(bits.view(np.float32), fmt))


@pytest.mark.parametrize("fmt", [FP16, BF16, FP8_E4M3, FP8_E5M2], ids=lambda f: f.name)
def test_ties_reach_the_subnormal_range_and_the_tie_with_zero(fmt):
    sub = find(float32_bits((fmt,), classes=("tie",), max_size=1),
               lambda b: abs(float(b.view(np.float32)[0])) < fmt.min_normal, settings=FIND)
    assert _is_tie(sub.view(np.float32)[0], fmt)
    zero_tie = find(float32_bits((fmt,), classes=("tie",), max_size=1),
                    lambda b: abs(float(b.view(np.float32)[0])) == fmt.min_subnormal / 2, settings=FIND)
    assert zero_tie.size == 1


@pytest.mark.parametrize("cls, predicate", [
    ("zero", lambda v: np.all(v == 0)),
    ("subnormal", lambda v: np.all((v != 0) & (np.abs(v) < np.finfo(np.float32).tiny))),
    ("inf", lambda v: np.all(np.isinf(v))),
    ("nan", lambda v: np.all(np.isnan(v))),
    ("max", lambda v: np.all(np.abs(v) >= np.nextafter(np.finfo(np.float32).max, 0))),
    ("overflow", lambda v: np.all(np.isfinite(v))),
])
@given(data=st.data())
def test_bit_classes(cls, predicate, data):
    v = data.draw(float32_bits(classes=(cls,))).view(np.float32)
    assert predicate(v)


def test_overflow_class_reaches_every_first_overflow_point():
    for fmt, first in [(FP16, 65520.0), (BF16, 3.3961775e38), (FP8_E5M2, 61440.0), (FP8_E4M3, 464.0)]:
        bits = int(np.array(first, np.float32).view(np.uint32))
        find(float32_bits((fmt,), classes=("overflow",), max_size=1), lambda b, p=bits: int(b[0]) == p,
             settings=FIND)


def test_nan_class_has_signalling_payloads():
    find(float32_bits(classes=("nan",), max_size=1), lambda b: not int(b[0]) & 0x400000, settings=FIND)


def test_float32_bits_reject_bad_arguments():
    with pytest.raises(ValueError, match="classes must be"):
        float32_bits(classes=("denormal",))
    with pytest.raises(ValueError, match="narrower than float32"):
        float32_bits(("fp32",))
    with pytest.raises(ValueError, match="need at least one target format"):
        float32_bits((), classes=("tie",))
    assert set(BIT_CLASSES) >= {"tie", "near_tie", "nan"}

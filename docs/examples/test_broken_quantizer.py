"""A quantizer someone else wrote, tested with minilora's kit (the worked example of docs/testing.md).

``quantize`` / ``dequantize`` are a plain per-row absmax int8 quantizer (one scale per row, as LLM.int8
quantizes activations), written here for the example. Three variants each make one classic mistake:

* ``quantize_half_away`` rounds with C's ``roundf`` (ties away from zero) instead of half to even;
* ``quantize_wrong_axis`` takes the absmax over the columns instead of the rows;
* ``fake_quant`` quantizes and dequantizes in one step (as quantization-aware training does) and forgets
  that a row can be exactly zero: 0 / 0.

Run ``pytest docs/examples/test_broken_quantizer.py`` and hypothesis finds each mistake and shrinks it to a
few elements (``tests/testing/test_docs_example.py`` checks that it does, and that docs/testing.md shows
the real reports).
"""

import numpy as np
from hypothesis import given

from minilora.testing import assert_codes_equal, assert_within_bound, tensors

# 2-D float32 arrays: any scale, heavy tails, outliers, all-zero rows, exact int8 ties
matrices = tensors(min_dims=2, max_dims=2, midpoints=("int8",))


def quantize(x):
    """Per-row absmax int8: ``q = round_half_even(x / absmax · 127)``; a zero row gets q = 0."""
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    safe = np.where(absmax > 0, absmax, np.float32(1))
    return np.rint(x / safe * np.float32(127)).astype(np.int8), absmax


def dequantize(q, absmax):
    return q * (absmax / np.float32(127))


def quantize_half_away(x):
    """Mistake 1: ``trunc(s + ½·sign(s))`` — C's roundf — sends every tie away from zero."""
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    s = x / np.where(absmax > 0, absmax, np.float32(1)) * np.float32(127)
    return np.trunc(s + np.copysign(np.float32(0.5), s)).astype(np.int8), absmax


def quantize_wrong_axis(x):
    """Mistake 2: ``axis=0`` — one scale per column, while the caller stores and expects one per row."""
    absmax = np.abs(x).max(axis=0, keepdims=True)
    safe = np.where(absmax > 0, absmax, np.float32(1))
    return np.rint(x / safe * np.float32(127)).astype(np.int8), absmax


def fake_quant(x):
    """Mistake 3: quantize → dequantize in one step, with no case for an all-zero row (0 / 0 = NaN)."""
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    return np.rint(x / absmax * np.float32(127)) * (absmax / np.float32(127))


# ---- the tests a user writes: an error bound, and bit-exact codes ----------------------------------------

@given(x=matrices)
def test_bound(x):
    assert_within_bound(x, dequantize(*quantize(x)), "absmax", axis=-1)


@given(x=matrices)
def test_codes(x):
    q, absmax = quantize(x)
    assert_codes_equal(x, q, "absmax", axis=-1, absmax=absmax)


@given(x=matrices)
def test_half_away_bound(x):            # passes: a tie rounded the wrong way errs by exactly half a step
    assert_within_bound(x, dequantize(*quantize_half_away(x)), "absmax", axis=-1)


@given(x=matrices)
def test_half_away_codes(x):            # fails: the codes oracle sees the tie rule
    q, absmax = quantize_half_away(x)
    assert_codes_equal(x, q, "absmax", axis=-1)


@given(x=matrices)
def test_wrong_axis_bound(x):           # fails
    assert_within_bound(x, dequantize(*quantize_wrong_axis(x)), "absmax", axis=-1)


@given(x=matrices)
def test_fake_quant_bound(x):           # fails
    with np.errstate(invalid="ignore", divide="ignore"):
        x_hat = fake_quant(x)
    assert_within_bound(x, x_hat, "absmax", axis=-1)

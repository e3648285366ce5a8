"""The blog's toy walkthrough and absmax int-b quantization (tensor, axis, block)."""

import numpy as np
import pytest

from minilora.quant import absmax_dequantize, absmax_quantize, bounds, quantize_to_levels, toy_walkthrough


def test_toy_walkthrough_every_step():
    s = toy_walkthrough()
    assert s.x.tolist() == [3, 1, 2, 3]
    np.testing.assert_allclose(s.normalized, [4, 4 / 3, 8 / 3, 4], rtol=1e-15)   # the blog: 4, 1.33, 2.66, 4
    assert s.quantized.tolist() == [4, 2, 2, 4]
    assert s.unit.tolist() == [1, 0.5, 0.5, 1]
    assert s.rescaled.tolist() == [3, 1.5, 1.5, 3]
    assert s.restored.tolist() == [3, 2, 2, 3]


def test_quantize_to_levels_ties():
    assert quantize_to_levels([1.5, 0.5, 2.4, -9, 9], [0, 1, 2, 3]).tolist() == [2, 1, 2, 0, 3]
    assert quantize_to_levels([1.5, 0.5], [0, 1, 2, 3], ties="down").tolist() == [1, 0]
    with pytest.raises(ValueError, match="ties"):
        quantize_to_levels([1.0], [0, 1], ties="even")
    with pytest.raises(ValueError, match="increasing"):
        quantize_to_levels([1.0], [1, 0])


def test_absmax_int8_tensor_wise_example():
    x = np.array([[0.5, -1.0], [2.0, -0.25]], np.float32)
    q, a = absmax_quantize(x)
    assert a.shape == () and a == 2.0 and q.dtype == np.int8
    assert q.tolist() == [[32, -64], [127, -16]]            # 31.75 → 32, 63.5 → 64 (half to even), 15.875 → 16
    np.testing.assert_array_equal(absmax_dequantize(q, a), q * np.float32(2 / 127))


def test_round_half_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, 3.0], np.float32)   # with absmax 3 and qmax 3, q = x exactly
    q, _ = absmax_quantize(x, bits=3)
    assert q.tolist() == [0, 2, 2, 0, 3]


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_axis_means_the_reduced_axis(axis):
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    q, a = absmax_quantize(x, axis=axis)
    np.testing.assert_array_equal(a, np.abs(x).max(axis=axis))
    assert q.shape == x.shape
    assert np.all(np.abs(q).max(axis=axis) == 127)          # every row/column reaches ±qmax
    err = np.abs(absmax_dequantize(q, a, axis=axis) - x)
    assert np.all(err <= np.expand_dims(bounds.absmax_bound(a, bits=8), axis))        # per row / column


def test_blocks_cross_rows_and_last_partial():
    x = np.arange(1, 11, dtype=np.float32).reshape(2, 5)      # blocks of 4: [1..4], [5..8], [9, 10]
    q, a = absmax_quantize(x, bits=4, blocksize=4)
    assert a.tolist() == [4, 8, 10]
    y = absmax_dequantize(q, a, bits=4, blocksize=4)
    assert y.shape == (2, 5)
    err = np.abs(y - x).reshape(-1)
    assert np.all(err <= bounds.per_element(bounds.absmax_bound(a, bits=4), x.size, 4))


def test_outlier_hurts_tensor_more_than_blocks():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4096).astype(np.float32)
    x[100] = 60.0
    err = {}
    for mode, kw in {"tensor": {}, "block": {"blocksize": 64}}.items():
        q, a = absmax_quantize(x, bits=4, **kw)
        err[mode] = np.abs(absmax_dequantize(q, a, bits=4, **kw) - x).mean()
    assert err["block"] < err["tensor"] / 3


def test_zero_and_empty():
    q, a = absmax_quantize(np.zeros(5, np.float32))
    assert a == 0 and np.all(q == 0) and np.all(absmax_dequantize(q, a) == 0)
    q, a = absmax_quantize(np.zeros(0, np.float32))
    assert q.shape == (0,) and a == 0
    q, a = absmax_quantize(np.zeros((0, 3), np.float32), axis=0)
    assert q.shape == (0, 3) and a.shape == (3,)
    q, a = absmax_quantize(np.zeros(0, np.float32), blocksize=4)
    assert q.shape == (0,) and a.shape == (0,)


def test_bad_input():
    with pytest.raises(TypeError, match="floating"):
        absmax_quantize(np.arange(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        absmax_quantize(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        absmax_quantize(np.array([[1.0, np.inf]]), axis=1)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\], got 9"):
        absmax_quantize(np.ones(3), bits=9)
    with pytest.raises(ValueError, match="not both"):
        absmax_quantize(np.ones(3), axis=0, blocksize=2)
    with pytest.raises(ValueError, match="blocksize"):
        absmax_quantize(np.ones(3), blocksize=0)
    q, a = absmax_quantize(np.ones(8), blocksize=4)
    with pytest.raises(ValueError, match="absmax must have shape"):
        absmax_dequantize(q, a[:1], blocksize=4)

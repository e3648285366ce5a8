"""LLM.int8: vector-wise quantization and the outlier decomposition (docs/facts.md §4)."""

import numpy as np
import pytest

from minilora.formats import FP16, round_to
from minilora.quant import int8_matmul, int8_matmul_parts, int8_vectorwise_dequant, int8_vectorwise_quant
from minilora.quant.int8 import BNB_INV_127_SQ, INV_127, INV_127_SQ


def test_constants():
    assert INV_127 == np.float32(7.874015718698502e-3)
    assert INV_127_SQ == np.float32(6.2000124e-05)
    rel = (float(BNB_INV_127_SQ) - 1 / 127**2) * 127**2
    assert 1.7e-5 < rel < 1.9e-5                           # bitsandbytes' typo: 1.8e-5 too large


def test_threshold_and_column_zeroing():
    x = np.array([[1.0, 6.0, 0.5], [2.0, 0.1, -0.2]], np.float32)
    ca, sca, cols = int8_vectorwise_quant(x, threshold=6.0)
    assert cols.tolist() == [1]                            # |x| >= threshold: 6.0 itself is an outlier
    assert sca.tolist() == [1.0, 2.0]                      # the outlier is removed before the statistics
    assert ca[:, 1].tolist() == [0, 0]                     # the whole column is zeroed
    ca0, sca0, cols0 = int8_vectorwise_quant(x)
    assert cols0.size == 0 and sca0[0] == 6.0


def test_single_row_keeps_non_outlier_columns():
    x = np.array([[1.0, 9.0, 0.5]], np.float32)
    ca, sca, cols = int8_vectorwise_quant(x, threshold=6.0)
    assert cols.tolist() == [1] and ca.tolist() == [[127, 0, 64]]   # 63.5 → 64


def test_zero_row_and_empty():
    ca, sca, _ = int8_vectorwise_quant(np.zeros((2, 3), np.float32))
    assert np.all(ca == 0) and np.all(sca == 0)
    assert np.all(int8_vectorwise_dequant(ca, sca) == 0)
    ca, sca, cols = int8_vectorwise_quant(np.zeros((0, 3), np.float32), 6.0)
    assert ca.shape == (0, 3) and sca.shape == (0,) and cols.size == 0


def test_decomposition_recovers_outlier_features():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 256)).astype(np.float32)
    x[:, [10, 200]] *= 60                                  # two outlier features
    w = (rng.standard_normal((64, 256)) * 0.05).astype(np.float32)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    err_plain = np.abs(int8_matmul(x, w, threshold=0.0) - exact).mean()
    p = int8_matmul_parts(x, w, threshold=6.0)
    err_dec = np.abs(p.y - exact).mean()
    assert set(p.outlier_cols.tolist()) >= {10, 200}
    assert err_dec < err_plain / 3
    np.testing.assert_array_equal(p.y, (p.int_part + p.outlier_part).astype(np.float32))
    assert "outlier_cols" in repr(p)


def test_leading_dims_and_fp16_input_rounding():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 16)).astype(np.float32)
    w = rng.standard_normal((5, 16)).astype(np.float32)
    y = int8_matmul(x, w)
    assert y.shape == (2, 3, 5)
    p = int8_matmul_parts(x.reshape(6, 16), w)
    np.testing.assert_array_equal(y.reshape(6, 5), p.y)
    ca, _, _ = int8_vectorwise_quant(round_to(x.reshape(6, 16), FP16))
    assert np.array_equal(ca, p.CA)


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        int8_vectorwise_quant(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="floating"):
        int8_vectorwise_quant(np.ones((2, 2), np.int8))
    with pytest.raises(ValueError, match="NaN or Inf"):
        int8_vectorwise_quant(np.array([[1.0, np.inf]]), threshold=6.0)   # an inf must not hide as an outlier
    with pytest.raises(ValueError, match="threshold"):
        int8_vectorwise_quant(np.ones((2, 2)), threshold=-1)
    with pytest.raises(ValueError, match="need x"):
        int8_matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="FP16"):
        int8_matmul(np.full((2, 3), 70000.0), np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"rescale must be one of \('bitsandbytes', 'exact'\), got '1/127'"):
        int8_matmul(np.ones((2, 3)), np.ones((4, 3)), rescale="1/127")

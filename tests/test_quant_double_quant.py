"""8-bit block-wise quantization with the dynamic map, and double quantization of absmax."""

import numpy as np
import pytest

from minilora.quant import QuantState, create_dynamic_map, dequantize_blockwise, quantize_4bit, quantize_blockwise
from minilora.quant.double_quant import compress_absmax, decompress_absmax, exact_mean_f32


def test_dynamic_map_float64_scaling_differs():
    """FACTS §3: scaling the midpoints in float64 instead of float32 changes 30 values."""
    from minilora.quant.blockwise import linspace_f32

    vals = []
    for i in range(7):
        b = linspace_f32(0.1, 1, 2**i + 1)
        m = ((b[:-1] + b[1:]) / np.float32(2)).astype(np.float64)
        vals += [m * 10.0 ** (i - 6), -m * 10.0 ** (i - 6)]
    f64 = np.sort(np.concatenate(vals + [np.array([0.0, 1.0])]).astype(np.float32))
    assert (f64 != create_dynamic_map()).sum() == 30


def test_blockwise_zero_gets_code_127():
    q, st = quantize_blockwise(np.array([0.0, 1.0, -0.5], np.float32))
    m = create_dynamic_map()
    assert q[0] == 127 and m[q[1]] == 1.0 and st.quant_type == "dynamic"
    np.testing.assert_allclose(dequantize_blockwise(q, st), [0, 1, -0.5], atol=0.004)


def test_blockwise_custom_code_and_errors():
    code = np.array([-1, -0.25, 0.25, 1], np.float32)
    q, st = quantize_blockwise(np.array([0.0, 0.6, -1.0, 0.7]), blocksize=32, code=code)
    assert q.tolist() == [1, 2, 0, 3]                      # 0 is a tie → lower; 0.6/0.7 = 0.857 → 1
    with pytest.raises(ValueError, match="code must be 1-D"):
        quantize_blockwise(np.ones(4), code=np.zeros(300, np.float32))
    with pytest.raises(ValueError, match="power of two"):
        quantize_blockwise(np.ones(4), blocksize=100)
    with pytest.raises(TypeError, match="uint8"):
        dequantize_blockwise(q.astype(np.int32), st)
    with pytest.raises(ValueError, match="needs 4"):
        dequantize_blockwise(q[:3], st)
    bad = QuantState(st.absmax[:0], st.shape, st.dtype, st.blocksize, st.quant_type, st.code)
    with pytest.raises(ValueError, match="absmax has 0 values"):
        dequantize_blockwise(q, bad)


def test_exact_mean_is_correctly_rounded():
    a = np.random.default_rng(0).uniform(0, 3, 100_003).astype(np.float32)
    exact = np.float32(np.sum(a.astype(np.float64)) / a.size)
    assert exact_mean_f32(a) == exact


def test_compress_round_trip():
    absmax = np.random.default_rng(1).uniform(0.01, 0.2, 1000).astype(np.float32)
    q, offset, st2 = compress_absmax(absmax)
    assert q.dtype == np.uint8 and q.shape == (1000,) and st2.absmax.shape == (4,) and st2.blocksize == 256
    rec = decompress_absmax(q, offset, st2)
    assert rec.dtype == np.float32
    assert np.abs(rec - absmax).max() <= 0.2 * 0.0071


def test_double_quant_keeps_4bit_codes():
    x = np.random.default_rng(2).standard_normal((100, 100)).astype(np.float32)
    p1, s1 = quantize_4bit(x, quant_type="nf4")
    p2, s2 = quantize_4bit(x, quant_type="nf4", compress_statistics=True)
    assert np.array_equal(p1, p2) and s2.nested and not s1.nested
    assert s2.offset == exact_mean_f32(s1.absmax)

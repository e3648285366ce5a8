"""minilora.quant.compare: the four 4-bit choices side by side."""

import numpy as np
import pytest

from minilora.quant import absmax_dequantize, absmax_quantize
from minilora.quant.compare import METHODS, code_usage, reconstruction_error, roundtrip


def test_roundtrip_matches_the_quantizers():
    x = np.random.default_rng(0).standard_normal((40, 50)).astype(np.float32)
    q, a = absmax_quantize(x, bits=4, blocksize=64)
    assert np.array_equal(roundtrip(x, "int4"), absmax_dequantize(q, a, bits=4, blocksize=64))
    for m in METHODS:
        assert roundtrip(x, m).shape == x.shape
    with pytest.raises(ValueError, match="method"):
        roundtrip(x, "int3")


def test_nf4_beats_int4_and_fp4_on_normal_weights():
    x = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)
    e = reconstruction_error(x, blocksizes=(64, 1024))
    for bs in (64, 1024):
        assert e[("nf4", bs)] < e[("int4", bs)] and e[("nf4", bs)] < e[("fp4", bs)]
        assert abs(e[("nf4+dq", bs)] / e[("nf4", bs)] - 1) < 0.01
    assert e[("nf4", 64)] < e[("nf4", 1024)]
    with pytest.raises(ValueError, match="metric"):
        reconstruction_error(x, metric="mse")


def test_code_usage_counts_every_element():
    x = np.random.default_rng(2).standard_normal(1001).astype(np.float32)
    u = code_usage(x, "nf4")
    assert u.shape == (16,) and u.sum() == 1001 and np.all(u > 0)

"""Property tests: minilora's quantizers stay within the bounds of minilora.quant.bounds, for arbitrary finite
inputs, checked with the testing kit (minilora.testing: one strategy, one set of assertions).

Inputs: random shapes, scales from 1e-40 (subnormal) to 1e34, planted outliers, all-zero groups, exact code
midpoints and their float32 neighbours, every blocksize. The "ci" profile in conftest runs each property on
200 examples.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.quant import (
    absmax_dequantize,
    absmax_quantize,
    bounds,
    dequantize_4bit,
    dequantize_blockwise,
    int8_matmul,
    int8_vectorwise_dequant,
    int8_vectorwise_quant,
    quantize_4bit,
    quantize_blockwise,
)
from minilora.quant.double_quant import decompress_absmax
from minilora.testing import assert_matmul_within_bound, assert_within_bound, blocksizes, tensors

#: the largest |error| / bound seen by each property (reported by test_bounds_are_tight below)
TIGHTNESS: dict[str, float] = {}


def _record(name: str, ratio: float) -> None:
    TIGHTNESS[name] = max(TIGHTNESS.get(name, 0.0), ratio)


@given(data=st.data(), bits=st.integers(2, 8), mode=st.sampled_from(["tensor", "axis0", "axis-1", "block"]))
def test_absmax_bound(data, bits, mode):
    blocksize = data.draw(blocksizes(1, 100, powers_of_two=False)) if mode == "block" else None
    x = data.draw(tensors(midpoints=(f"int{bits}",), blocksize=blocksize))
    kw = {"tensor": {}, "axis0": {"axis": 0}, "axis-1": {"axis": -1}, "block": {"blocksize": blocksize}}[mode]
    q, a = absmax_quantize(x, bits=bits, **kw)
    _record("absmax", assert_within_bound(x, absmax_dequantize(q, a, bits=bits, **kw), "absmax", bits=bits, **kw))


@given(data=st.data(), blocksize=blocksizes(), qt=st.sampled_from(["nf4", "fp4"]))
def test_4bit_bound(data, blocksize, qt):
    x = data.draw(tensors(blocksize=blocksize))
    packed, state = quantize_4bit(x, blocksize=blocksize, quant_type=qt)
    # state= also checks that the stored absmax is max |x| of each block
    _record("4bit", assert_within_bound(x, dequantize_4bit(packed, state), qt, state=state))


@given(data=st.data(), blocksize=st.sampled_from([32, 64, 256]), qt=st.sampled_from(["nf4", "fp4"]))
def test_double_quant_bounds(data, blocksize, qt):
    x = data.draw(tensors(max_size=12000, blocksize=blocksize))
    packed, s1 = quantize_4bit(x, blocksize=blocksize, quant_type=qt)
    _, s2 = quantize_4bit(x, blocksize=blocksize, quant_type=qt, compress_statistics=True)
    # the extra error on absmax: the reconstructed scales against the true ones (an array of scales is a tensor
    # like any other, so the kit's assertion takes it with the double-quantization bound as the "bound")
    rec = decompress_absmax(s2.absmax, s2.offset, s2.state2)
    da = bounds.double_quant_absmax_bound(s1.absmax, s2.offset, s2.state2.absmax, s2.state2.code)
    err = np.abs(rec.astype(np.float64) - s1.absmax.astype(np.float64))
    assert np.all(err <= da), f"absmax error exceeds its bound by {float((err - da).max())}"
    _record("double_quant", assert_within_bound(x, dequantize_4bit(packed, s2), f"{qt}_dq", state=s2))


@given(data=st.data(), blocksize=blocksizes())
def test_blockwise_8bit_bound(data, blocksize):
    x = data.draw(tensors(blocksize=blocksize))
    q, state = quantize_blockwise(x, blocksize=blocksize)
    _record("dynamic", assert_within_bound(x, dequantize_blockwise(q, state), "dynamic", state=state))


@given(x=tensors(min_dims=2, max_dims=2, scale=(1e-30, 1e34), midpoints=("int8",)),
       threshold=st.sampled_from([0.0, 6.0]))
def test_int8_vectorwise_bound(x, threshold):
    ca, sca, cols = int8_vectorwise_quant(x, threshold)
    # outlier columns go to the 16-bit path: the assertion leaves them out
    _record("int8_vectorwise", assert_within_bound(x, int8_vectorwise_dequant(ca, sca), "int8_vectorwise",
                                                   threshold=threshold))


@given(data=st.data(), threshold=st.sampled_from([0.0, 6.0]))
def test_int8_matmul_bound(data, threshold):
    x = data.draw(tensors(min_dims=2, max_dims=2, max_size=400, scale=(1e-3, 1e2), midpoints=("int8",)))
    w = data.draw(tensors(min_dims=2, max_dims=2, max_size=400, scale=(1e-3, 1e1), midpoints=("int8",)))
    w = np.resize(w, (max(1, w.shape[0]), x.shape[1]))          # same k as x
    x, w = np.clip(x, -6e4, 6e4), np.clip(w, -6e4, 6e4)          # LLM.int8 runs in FP16: stay in range
    _record("int8_matmul", assert_matmul_within_bound(x, w, int8_matmul(x, w, threshold), threshold))


@pytest.mark.parametrize("name", ["absmax", "4bit", "double_quant", "dynamic", "int8_vectorwise", "int8_matmul"])
def test_bounds_are_tight(name):
    """The bounds are tight: on the same examples, some error comes close to the bound (runs after the
    properties above, in file order; skipped when a property was deselected)."""
    if name not in TIGHTNESS:
        pytest.skip(f"the {name} property did not run in this session")
    floor = 0.5 if name == "int8_matmul" else 0.9          # measured: 0.977 for the matmul, > 0.998 for the rest
    assert TIGHTNESS[name] > floor, f"{name}: worst |error| / bound only {TIGHTNESS[name]:.4f}"

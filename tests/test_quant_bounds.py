"""Property tests: every bound in minilora.quant.bounds holds for arbitrary finite inputs.

Inputs: random shapes, scales from 1e-40 (subnormal) to 1e34, planted outliers, every blocksize.
The profile in conftest runs each test on 200 examples.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minilora.quant import (
    absmax_dequantize,
    absmax_quantize,
    bounds,
    create_dynamic_map,
    dequantize_4bit,
    dequantize_blockwise,
    int8_matmul,
    int8_vectorwise_dequant,
    int8_vectorwise_quant,
    quantize_4bit,
    quantize_blockwise,
)
from minilora.quant.double_quant import decompress_absmax
from minilora.quant.nf4 import get_4bit_code

F32_MAX = float(np.finfo(np.float32).max)


@st.composite
def tensors(draw, max_size=2000, min_exp=-40, max_exp=34, ndim=None):
    """A finite float32 array: normal, uniform or heavy-tailed values at a random scale, with outliers."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    nd = draw(st.integers(1, 3)) if ndim is None else ndim
    size_cap = max(1, int(round(max_size ** (1 / nd))))
    shape = tuple(draw(st.lists(st.integers(1, size_cap), min_size=nd, max_size=nd)))
    kind = draw(st.sampled_from(["normal", "uniform", "cauchy", "sparse"]))
    n = int(np.prod(shape))
    base = {"normal": rng.standard_normal(n), "uniform": rng.uniform(-1, 1, n),
            "cauchy": rng.standard_cauchy(n), "sparse": rng.standard_normal(n) * (rng.random(n) < 0.1)}[kind]
    x = base * 10.0 ** draw(st.integers(min_exp, max_exp))
    k = draw(st.integers(0, 3))
    if k:
        x[rng.choice(n, min(k, n), replace=False)] *= draw(st.sampled_from([6.0, 60.0, 1e3]))
    return np.clip(x, -F32_MAX, F32_MAX).astype(np.float32).reshape(shape)


def err(a, b):
    return np.abs(a.astype(np.float64) - b.astype(np.float64))


@given(x=tensors(), bits=st.integers(2, 8), mode=st.sampled_from(["tensor", "axis0", "axis-1", "block"]),
       blocksize=st.integers(1, 100))
def test_absmax_bound(x, bits, mode, blocksize):
    kw = {"tensor": {}, "axis0": {"axis": 0}, "axis-1": {"axis": -1}, "block": {"blocksize": blocksize}}[mode]
    q, a = absmax_quantize(x, bits=bits, **kw)
    y = absmax_dequantize(q, a, bits=bits, **kw)
    b = bounds.absmax_bound(a, bits)
    if mode == "block":
        b = bounds.per_element(b, x.size, blocksize).reshape(x.shape)
    elif mode.startswith("axis"):
        b = np.expand_dims(b, kw["axis"])
    assert np.all(err(x, y) <= b)


@given(x=tensors(), blocksize=st.sampled_from([32, 64, 128, 256, 4096]), qt=st.sampled_from(["nf4", "fp4"]))
def test_4bit_bound(x, blocksize, qt):
    packed, state = quantize_4bit(x, blocksize=blocksize, quant_type=qt)
    y = dequantize_4bit(packed, state)
    b = bounds.per_element(bounds.codebook_bound(state.absmax, get_4bit_code(qt)), x.size, blocksize)
    assert np.all(err(x, y).reshape(-1) <= b)
    assert np.array_equal(bounds.block_absmax(x, blocksize), state.absmax)


@given(x=tensors(max_size=12000), blocksize=st.sampled_from([32, 64, 256]), qt=st.sampled_from(["nf4", "fp4"]))
def test_double_quant_bounds(x, blocksize, qt):
    packed, s1 = quantize_4bit(x, blocksize=blocksize, quant_type=qt)
    _, s2 = quantize_4bit(x, blocksize=blocksize, quant_type=qt, compress_statistics=True)
    rec = decompress_absmax(s2.absmax, s2.offset, s2.state2)
    da = bounds.double_quant_absmax_bound(s1.absmax, s2.offset, s2.state2.absmax, s2.state2.code)
    assert np.all(err(rec, s1.absmax) <= da)                    # the extra error on absmax
    y = dequantize_4bit(packed, s2)
    b = bounds.nf4_double_quant_bound(s1.absmax, da, get_4bit_code(qt))
    assert np.all(err(x, y).reshape(-1) <= bounds.per_element(b, x.size, blocksize))


@given(x=tensors(), blocksize=st.sampled_from([32, 64, 256, 1024, 4096]))
def test_blockwise_8bit_bound(x, blocksize):
    q, state = quantize_blockwise(x, blocksize=blocksize)
    y = dequantize_blockwise(q, state)
    b = bounds.per_element(bounds.codebook_bound(state.absmax, create_dynamic_map()), x.size, blocksize)
    assert np.all(err(x, y).reshape(-1) <= b)


@given(x=tensors(min_exp=-30, ndim=2), threshold=st.sampled_from([0.0, 6.0]))
def test_int8_vectorwise_bound(x, threshold):
    ca, sca, cols = int8_vectorwise_quant(x, threshold)
    y = int8_vectorwise_dequant(ca, sca)
    keep = np.ones(x.shape, bool)
    keep[:, cols] = False                                       # outlier columns go to the 16-bit path
    b = np.broadcast_to(bounds.int8_vectorwise_bound(sca)[:, None], x.shape)
    assert np.all(err(x, y)[keep] <= b[keep])


@given(data=st.data(), threshold=st.sampled_from([0.0, 6.0]))
def test_int8_matmul_bound(data, threshold):
    x = data.draw(tensors(max_size=400, min_exp=-3, max_exp=2, ndim=2))
    w = data.draw(tensors(max_size=400, min_exp=-3, max_exp=1, ndim=2))
    w = np.resize(w, (max(1, w.shape[0]), x.shape[1]))          # same k as x
    x, w = np.clip(x, -6e4, 6e4), np.clip(w, -6e4, 6e4)          # LLM.int8 runs in FP16: stay in range
    y = int8_matmul(x, w, threshold)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.all(np.abs(y - exact) <= bounds.int8_matmul_bound(x, w, threshold))

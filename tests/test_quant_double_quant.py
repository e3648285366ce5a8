"""8-bit block-wise quantization with the dynamic map, and double quantization of absmax."""

from fractions import Fraction

import numpy as np
import pytest

from minilora.quant import (
    QuantState,
    bounds,
    create_dynamic_map,
    dequantize_blockwise,
    quantize_4bit,
    quantize_blockwise,
)
from minilora.quant.double_quant import compress_absmax, decompress_absmax, exact_mean_f32


def test_dynamic_map_float64_scaling_differs():
    """docs/facts.md §3: scaling the midpoints in float64 instead of float32 changes 30 values."""
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
    err = np.abs(dequantize_blockwise(q, st) - np.array([0, 1, -0.5], np.float32))
    assert np.all(err <= bounds.codebook_bound(st.absmax, m)) and err[0] == 0 and err[1] == 0


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


def _exact_sum(a: np.ndarray) -> Fraction:
    """The exact sum of float32 values, in rationals: each float32 is an integer multiple of 2^-149."""
    scaled = a.astype(np.float64) * 2.0**149                      # exact: a power-of-two scaling
    return Fraction(sum(int(v) for v in scaled.tolist()), 2**149)


def _is_correctly_rounded(f: np.float32, q: Fraction) -> bool:
    """``f`` is the float32 nearest to ``q`` (ties: the even mantissa), checked against both neighbours."""
    d = abs(Fraction(float(f)) - q)
    for g in (np.nextafter(f, np.float32(-np.inf)), np.nextafter(f, np.float32(np.inf))):
        dg = abs(Fraction(float(g)) - q)
        if dg < d or (dg == d and int(np.float32(f).view(np.uint32)) & 1):
            return False
    return True


@pytest.mark.parametrize("seed", range(4))
def test_exact_mean_is_correctly_rounded(seed):
    """Against exact rational arithmetic, not against the function's own float64 formula."""
    rng = np.random.default_rng(seed)
    a = (rng.uniform(0, 3, 100_003) * rng.choice([1e-3, 1, 1e3], 100_003)).astype(np.float32)
    q = _exact_sum(a) / a.size
    assert _is_correctly_rounded(exact_mean_f32(a), q)


def test_float32_means_are_not_always_correctly_rounded():
    """The check above has teeth: the plain float32 means (pairwise, sequential) miss the nearest float32."""
    a = np.random.default_rng(0).uniform(0, 3, 100_003).astype(np.float32)
    q = _exact_sum(a) / a.size
    sequential = np.add.accumulate(a, dtype=np.float32)[-1] / np.float32(a.size)
    assert not _is_correctly_rounded(sequential, q)


def test_compress_round_trip():
    absmax = np.random.default_rng(1).uniform(0.01, 0.2, 1000).astype(np.float32)
    q, offset, st2 = compress_absmax(absmax)
    assert q.dtype == np.uint8 and q.shape == (1000,) and st2.absmax.shape == (4,) and st2.blocksize == 256
    rec = decompress_absmax(q, offset, st2)
    assert rec.dtype == np.float32
    assert np.all(np.abs(rec - absmax) <= bounds.double_quant_absmax_bound(absmax, offset, st2.absmax, st2.code))


def test_double_quant_keeps_4bit_codes():
    x = np.random.default_rng(2).standard_normal((100, 100)).astype(np.float32)
    p1, s1 = quantize_4bit(x, quant_type="nf4")
    p2, s2 = quantize_4bit(x, quant_type="nf4", compress_statistics=True)
    assert np.array_equal(p1, p2) and s2.nested and not s1.nested
    assert s2.offset == exact_mean_f32(s1.absmax)

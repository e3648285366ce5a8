"""NF4 / FP4: rules of docs/facts.md §2, the shared block-wise machinery, QuantState byte accounting, bad input."""

import numpy as np
import pytest

from minilora.quant import (
    QuantState,
    bounds,
    dequantize_4bit,
    dequantize_fp4,
    dequantize_nf4,
    fp4_code,
    nf4_code,
    quantize_4bit,
    quantize_fp4,
    quantize_nf4,
)
from minilora.quant.blockwise import linspace_f32, midpoints, nearest_code, pack_nibbles, unpack_nibbles
from minilora.quant.double_quant import create_dynamic_map


def test_nf4_table_facts():
    c = nf4_code()
    assert c.dtype == np.float32 and c.size == 16 and np.all(np.diff(c) > 0)
    assert c[0] == -1 and c[7] == 0 and c[15] == 1 and (c < 0).sum() == 7 and (c > 0).sum() == 8
    assert c.view(np.uint32)[8] == 0x3DA2FAFF


def test_fp4_table_and_order():
    c = fp4_code()
    np.testing.assert_array_equal(c[:8] * 12, [0, 0.0625, 8, 12, 4, 6, 2, 3])
    assert np.array_equal(c[8:], -c[:8] + 0)
    _, order = midpoints(c)
    assert order.tolist() == [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3]


def test_torch_linspace_rule():
    assert linspace_f32(0.9677083, 0.5, 9)[0] == np.float32(0.9677082896232605)
    pts = linspace_f32(0.1, 1, 65)
    assert pts[0] == np.float32(0.1) and pts[-1] == np.float32(1)


@pytest.mark.parametrize("code", [nf4_code(), fp4_code(), create_dynamic_map()], ids=["nf4", "fp4", "dyn"])
def test_table_path_equals_searchsorted(code):
    """The 16-bit-key table is only a faster way to the same count of midpoints strictly below."""
    mid, order = midpoints(code)
    rng = np.random.default_rng(0)
    s = np.concatenate([mid, np.nextafter(mid, 2), np.nextafter(mid, -2), code, [-1, 1, 0, -0.0],
                        rng.uniform(-1, 1, 20000), rng.standard_normal(5000) * 1e-6]).astype(np.float32)
    s = np.clip(s, -1, 1)
    big = np.tile(s, 2)                                     # > 4096 elements: the table path
    expect = order[np.searchsorted(mid, big, side="left")]
    assert np.array_equal(nearest_code(big, code), expect)
    assert np.array_equal(nearest_code(s[:100], code), expect[:100])     # the plain path


def test_midpoint_tie_takes_lower_code():
    c = nf4_code()
    mid = (c[:-1] + c[1:]) / np.float32(2)
    x = np.concatenate([[1.0], mid]).astype(np.float32)      # absmax 1: scaled = x
    packed, _ = quantize_4bit(x, quant_type="nf4")
    q = unpack_nibbles(packed, x.size)
    assert q[1:].tolist() == list(range(15))


def test_packing_high_nibble_first_and_pad():
    assert pack_nibbles(np.array([1, 2, 3, 4], np.uint8)).tolist() == [0x12, 0x34]
    x = np.array([-1, 1, 0], np.float32)                     # NF4 codes 0, 15, 7 + pad code(0.0) = 7
    packed, st = quantize_4bit(x, quant_type="nf4")
    assert packed.tolist() == [0x0F, 0x77]
    packed, _ = quantize_4bit(x, quant_type="fp4")            # FP4: -1 is code 11, 1 is 3, 0 is 0
    assert packed.tolist() == [0xB3, 0x00]


def test_last_partial_block_rules():
    x = np.ones(65, np.float32)
    x[64] = 0.0                                              # a partial block of zeros
    _, st = quantize_4bit(x, quant_type="nf4")
    assert st.absmax[1] == np.float32(1e-38)
    x = np.zeros(128, np.float32)                            # full zero blocks keep absmax 0
    packed, st = quantize_4bit(x, quant_type="nf4")
    assert np.all(st.absmax == 0) and np.all(dequantize_4bit(packed, st) == 0)


@pytest.mark.parametrize("shape", [(1,), (63,), (3, 5, 7), (2, 3, 4, 5)])
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
def test_round_trip_shapes(shape, qt):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    packed, st = quantize_4bit(x, blocksize=32, quant_type=qt)
    assert packed.shape == ((x.size + 1) // 2,)
    y = dequantize_4bit(packed, st)
    assert y.shape == shape and y.dtype == np.float32
    bound = bounds.per_element(bounds.codebook_bound(st.absmax, st.code), x.size, 32)
    assert np.all(np.abs(y - x).reshape(-1) <= bound)


def test_input_dtypes():
    x = np.random.default_rng(2).standard_normal(100)
    p64, s64 = quantize_4bit(x, quant_type="nf4")
    p32, _ = quantize_4bit(x.astype(np.float32), quant_type="nf4")
    assert np.array_equal(p64, p32) and s64.dtype == np.float64
    p16, s16 = quantize_4bit(x.astype(np.float16), quant_type="nf4")
    assert s16.dtype == np.float16 and p16.shape == p32.shape


def test_quant_state_bits_per_param():
    x = np.zeros((256, 256), np.float32)                    # n = 65536 = 64 · 256 · 4
    _, st = quantize_4bit(x, quant_type="nf4")
    assert st.bits_per_param == 4.5
    assert st.const_nbytes == 64 and st.nbytes == 65536 // 2 + 1024 * 4 + 64
    _, dq = quantize_4bit(x, quant_type="nf4", compress_statistics=True)
    assert dq.bits_per_param == 4.126953125 == 4 + 8 / 64 + 32 / (64 * 256)
    assert dq.const_nbytes == 64 + 4 + 1024                  # NF4 table, offset, 8-bit map
    assert dq.bits_per_param_total == 8 * dq.nbytes / x.size
    assert dq.absmax.dtype == np.uint8 and dq.state2.absmax.dtype == np.float32
    assert "bits_per_param=4.12695" in repr(dq) and "state2" in repr(dq)


def test_empty_input():
    packed, st = quantize_4bit(np.zeros((0, 8), np.float32))
    assert packed.shape == (0,) and st.absmax.shape == (0,) and st.bits_per_param == 0.0
    assert dequantize_4bit(packed, st).shape == (0, 8)
    packed, st = quantize_4bit(np.zeros(0, np.float32), compress_statistics=True)
    assert st.offset == 0 and st.absmax.shape == (0,) and dequantize_4bit(packed, st).shape == (0,)


def test_bad_input():
    with pytest.raises(TypeError, match="floating"):
        quantize_4bit(np.arange(64))
    with pytest.raises(TypeError, match="floating"):
        quantize_4bit(np.ones(64, bool))
    x = np.ones(200, np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        x[150] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            quantize_4bit(x)
    for bs in (16, 48, 100, 8192, 64.0, True):
        with pytest.raises(ValueError, match=r"power of two in \[32, 4096\]"):
            quantize_4bit(np.ones(64, np.float32), blocksize=bs)
    with pytest.raises(ValueError, match=r"one of \('nf4', 'fp4'\), got 'int4'"):
        quantize_4bit(np.ones(64, np.float32), quant_type="int4")


def test_mismatched_state():
    packed, st = quantize_4bit(np.ones((10, 10), np.float32), quant_type="nf4")
    with pytest.raises(ValueError, match="packed has 49 bytes"):
        dequantize_4bit(packed[:-1], st)
    bad = QuantState(st.absmax, (20, 10), st.dtype, st.blocksize, "nf4", st.code)
    with pytest.raises(ValueError, match="needs 100"):
        dequantize_4bit(packed, bad)
    bad = QuantState(st.absmax[:1], st.shape, st.dtype, st.blocksize, "nf4", st.code)
    with pytest.raises(ValueError, match="absmax has 1 values, expected 2"):
        dequantize_4bit(packed, bad)
    bad = QuantState(st.absmax, st.shape, st.dtype, st.blocksize, "af4", st.code)
    with pytest.raises(ValueError, match="quant_type"):
        dequantize_4bit(packed, bad)
    with pytest.raises(TypeError, match="uint8"):
        dequantize_4bit(packed.astype(np.int16), st)


# ---- QuantState equality: bitsandbytes' QuantState.__eq__ -------------------------------------------

def _copy(st):
    import copy

    return copy.deepcopy(st)


@pytest.mark.parametrize("nested", [False, True])
def test_quant_state_equality_compares_the_arrays(nested):
    x = np.random.default_rng(3).standard_normal((40, 70)).astype(np.float32)
    _, st = quantize_4bit(x, quant_type="nf4", compress_statistics=nested)
    other = _copy(st)
    assert st == other and not (st != other)
    # absmax and code: allclose(rtol=1e-5, atol=1e-6) as in bitsandbytes, so a last-bit change is equal
    if not nested:
        other.absmax = np.nextafter(other.absmax, np.float32(np.inf))
        assert st == other
        other.absmax = other.absmax * np.float32(1.001)
        assert st != other
    other = _copy(st)
    other.code = other.code + np.float32(1e-3)
    assert st != other
    for field, value in (("shape", (70, 40)), ("blocksize", 128), ("quant_type", "fp4"), ("dtype", np.float16)):
        other = _copy(st)
        setattr(other, field, value)
        assert st != other, field


def test_quant_state_equality_nested_state2_and_offset():
    x = np.random.default_rng(4).standard_normal(70_000).astype(np.float32)
    _, st = quantize_4bit(x, quant_type="nf4", compress_statistics=True)
    _, flat = quantize_4bit(x, quant_type="nf4")
    assert st != flat and flat != st                               # nested vs not: state2 None on one side
    other = _copy(st)
    other.offset = np.nextafter(st.offset, np.float32(1))          # the offset is compared exactly
    assert st != other
    other = _copy(st)
    other.state2.absmax = other.state2.absmax * np.float32(1.01)   # the nested state is compared too
    assert st != other
    other = _copy(st)
    other.absmax = other.absmax.copy()
    other.absmax[0] ^= np.uint8(1)                                  # one 8-bit code
    assert st != other


def test_quant_state_equality_other_objects_and_shapes():
    _, st = quantize_4bit(np.ones(100, np.float32), quant_type="nf4")
    assert st != "a state" and st != None  # noqa: E711
    other = _copy(st)
    other.absmax = other.absmax[:1]                                 # a different number of blocks: unequal
    assert st != other
    with pytest.raises(TypeError, match="unhashable"):
        hash(st)


# ---- bitsandbytes' defaults and named variants -----------------------------------------------------

def test_quantize_4bit_defaults_to_fp4_as_bitsandbytes():
    import inspect

    x = np.random.default_rng(5).standard_normal(300).astype(np.float32)
    assert inspect.signature(quantize_4bit).parameters["quant_type"].default == "fp4"
    packed, st = quantize_4bit(x)
    ref, st_ref = quantize_4bit(x, quant_type="fp4")
    assert st.quant_type == "fp4" and np.array_equal(packed, ref) and st == st_ref
    assert quantize_4bit(x, blocksize=None)[1].blocksize == 64                 # bitsandbytes: None means 64


@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True])
def test_named_variants_are_quantize_4bit(qt, nested):
    x = np.random.default_rng(6).standard_normal((30, 50)).astype(np.float32)
    quantize, dequantize = {"nf4": (quantize_nf4, dequantize_nf4), "fp4": (quantize_fp4, dequantize_fp4)}[qt]
    packed, st = quantize(x, blocksize=128, compress_statistics=nested)
    ref, st_ref = quantize_4bit(x, blocksize=128, quant_type=qt, compress_statistics=nested)
    assert np.array_equal(packed, ref) and st == st_ref and st.quant_type == qt and st.nested == nested
    assert np.array_equal(dequantize(packed, st), dequantize_4bit(ref, st_ref))


def test_named_dequantize_refuses_the_other_type():
    x = np.ones(64, np.float32)
    packed, st = quantize_fp4(x)
    with pytest.raises(ValueError, match=r"dequantize_nf4 needs a QuantState with quant_type 'nf4', got 'fp4'"):
        dequantize_nf4(packed, st)
    packed, st = quantize_nf4(x)
    with pytest.raises(ValueError, match="dequantize_fp4"):
        dequantize_fp4(packed, st)
    with pytest.raises(TypeError):
        quantize_nf4(x, 64)                         # blocksize is keyword-only (bitsandbytes' 2nd is absmax)

"""minilora.testing.oracles: the expected codes are bitsandbytes' (golden vectors), and a differing code is
named with its reason (a tie, a near tie, or not the nearest)."""

import numpy as np
import pytest
from conftest import load_golden

from minilora.quant import bounds, dequantize_4bit, nf4_code, quantize_4bit
from minilora.testing import assert_codes_equal, assert_within_bound, diff_codes, expected_codes

G = load_golden("quant")
FOUR_BIT = sorted(k[: -len("_x")] for k in G if k.endswith("_x") and k[:4] in ("nf4_", "fp4_"))
BW8 = sorted(k[: -len("_x")] for k in G if k.endswith("_x") and k.startswith("bw8_"))
I8 = sorted(k[: -len("_x")] for k in G if k.endswith("_x") and k.startswith("i8_"))


@pytest.mark.parametrize("case", FOUR_BIT)
def test_expected_4bit_codes_are_bitsandbytes(case):
    x, bs, qt = G[f"{case}_x"], int(G[f"{case}_bs"]), case[:3]
    e = expected_codes(x, qt, blocksize=bs)
    assert np.array_equal(e.packed, G[f"{case}_packed"])
    assert np.array_equal(e.absmax.view(np.uint32), G[f"{case}_absmax"].view(np.uint32))
    assert e.codes.shape == x.shape and e.scaled.shape == x.shape
    # the kit accepts bitsandbytes' own output, packed or unpacked
    assert_codes_equal(x, method=qt, packed=G[f"{case}_packed"], absmax=G[f"{case}_absmax"], blocksize=bs)
    assert_codes_equal(x, e.codes, qt, blocksize=bs)
    assert diff_codes(x, method=qt, packed=G[f"{case}_packed"], blocksize=bs).count == 0


@pytest.mark.parametrize("case", BW8)
def test_expected_8bit_codes_are_bitsandbytes(case):
    """bitsandbytes' pure-PyTorch kernel: the exact nearest code (its native CPU kernel is not, see
    tests/testing/test_bitsandbytes_bounds.py)."""
    x, bs = G[f"{case}_x"], int(G[f"{case}_bs"])
    e = expected_codes(x, "dynamic", blocksize=bs)
    assert np.array_equal(e.codes, G[f"{case}_q"])
    assert_codes_equal(x, G[f"{case}_q"], "dynamic", absmax=G[f"{case}_absmax"], blocksize=bs)


@pytest.mark.parametrize("case", I8)
def test_expected_int8_codes_are_bitsandbytes(case):
    x, thr = G[f"{case}_x"], float(case.rsplit("_t", 1)[1])
    e = expected_codes(x, "int8_vectorwise", threshold=thr)
    assert np.array_equal(e.codes, G[f"{case}_CA"]) and np.array_equal(e.outlier_cols, G[f"{case}_cols"])
    assert_codes_equal(x, G[f"{case}_CA"], "int8_vectorwise", absmax=G[f"{case}_SCA"], threshold=thr)


def _edge():
    return G["nf4_edge_bs64_x"], G["nf4_edge_bs64_packed"]


def test_a_tie_rounded_up_is_named():
    """Row 1 of the edge case holds every NF4 midpoint exactly (absmax 1): ties take the lower code. Rounding
    them up stays within the error bound — only the codes show it."""
    x, packed = _edge()
    e = expected_codes(x, "nf4")
    codes = e.codes.copy()
    row = codes[1]
    mids = np.isin(x[1], (nf4_code()[:-1] + nf4_code()[1:]) / np.float32(2)) & (x[1] > 0)
    row[mids] += 1                                                      # the upper code at each positive midpoint
    y = (nf4_code()[codes] * np.repeat(e.absmax, 64).reshape(x.shape)).astype(np.float32)
    assert assert_within_bound(x, y, "nf4") <= 1                        # invisible to the bound
    d = diff_codes(x, codes, "nf4")
    assert d.count == int(mids.sum()) == 8 and np.all(d.tie_ulps == 0)
    assert "8 of 448 codes differ; 8 at exact ties" in repr(d)
    with pytest.raises(AssertionError) as err:
        assert_codes_equal(x, codes, "nf4")
    msg = str(err.value)
    assert "nf4: 8 of 448 codes differ from the conforming ones (8 at exact ties, 0 within 2 ulps of one)" in msg
    assert "exactly a tie between two codes: a value on a midpoint takes the lower code" in msg


def test_a_near_tie_and_a_wrong_code_are_named():
    x, _ = _edge()
    codes = expected_codes(x, "nf4").codes.copy()
    codes[2, 1] += 1                                                    # row 2: the float32 neighbours of midpoints
    with pytest.raises(AssertionError, match="1 float32 ulp from a tie"):
        assert_codes_equal(x, codes, "nf4")
    codes = expected_codes(x, "nf4").codes.copy()
    codes[6, 0] = 15 if codes[6, 0] < 8 else 0                          # far from anything
    with pytest.raises(AssertionError, match="the got code is not the nearest"):
        assert_codes_equal(x, codes, "nf4")


def test_absmax_int8_tie_rule():
    x = np.array([[1.0, 0.5 / 127, -1.5 / 127]], np.float32)            # scaled: 127, 0.5, -1.5
    e = expected_codes(x, "absmax", axis=-1)
    assert e.scaled.tolist() == [[127.0, 0.5, -1.5]] and e.codes.tolist() == [[127, 0, -2]]
    with pytest.raises(AssertionError, match="round half to even"):
        assert_codes_equal(x, np.array([[127, 1, -2]], np.int8), "absmax", axis=-1)


def test_scale_mismatch_is_named_first():
    x, packed = _edge()
    absmax = expected_codes(x, "nf4").absmax.copy()
    absmax[3] = np.nextafter(absmax[3], np.float32(2))
    with pytest.raises(AssertionError, match="1 of 7 scales differ; first, group 3"):
        assert_codes_equal(x, method="nf4", packed=packed, absmax=absmax)


def test_double_quantization_keeps_the_codes():
    x = G["nf4_m300x129_bs64_x"]
    packed, st = quantize_4bit(x, quant_type="nf4", compress_statistics=True)
    assert_codes_equal(x, method="nf4_dq", packed=packed)
    assert assert_within_bound(x, dequantize_4bit(packed, st), "nf4_dq", state=st) <= 1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"method": "int4"}, ValueError, "method must be one of"),
    ({}, ValueError, r"exactly one of codes= \(one code per element of x\) or packed="),
    ({"codes": np.zeros(3, np.uint8)}, ValueError, "codes has 3 values"),
    ({"codes": np.zeros(448, np.float32)}, TypeError, "integer array"),
    ({"packed": np.zeros(3, np.uint8)}, ValueError, "packed must be 224 uint8 bytes"),
    ({"method": "dynamic", "packed": np.zeros(224, np.uint8)}, ValueError, "packed= is for nf4 / fp4"),
])
def test_misuse(kwargs, error, match):
    x, _ = _edge()
    with pytest.raises(error, match=match):
        diff_codes(x, **kwargs)


def test_expected_codes_axis_only_for_absmax():
    with pytest.raises(ValueError, match="axis is only for method 'absmax'"):
        expected_codes(np.ones((2, 2), np.float32), "nf4", axis=0)
    assert bounds.METHODS[0] == "absmax"

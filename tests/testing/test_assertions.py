"""minilora.testing.assertions: pass on conforming output, fail naming the worst element, refuse misuse."""

import re
import sys

import numpy as np
import pytest
from conftest import ROOT, load_golden
from hypothesis import given

from minilora.formats import BF16, FP8_E4M3, FP8_E5M2, FP16, decode, encode
from minilora.quant import (
    absmax_dequantize,
    absmax_quantize,
    bounds,
    dequantize_4bit,
    int8_matmul,
    int8_vectorwise_dequant,
    int8_vectorwise_quant,
    quantize_4bit,
)
from minilora.testing import (
    assert_matmul_within_bound,
    assert_rounds_like,
    assert_within_bound,
    correctly_rounded,
    float32_bits,
)

sys.path.insert(0, str(ROOT / "tools"))
from golden._inputs import random_float32_bits  # noqa: E402

RNG = np.random.default_rng(0)
X = (RNG.standard_normal((6, 70)) * 0.5).astype(np.float32)


def _nf4(x=X, **kw):
    packed, state = quantize_4bit(x, **{"quant_type": "nf4", **kw})
    return dequantize_4bit(packed, state), state


def test_passes_and_reports_how_tight():
    y, state = _nf4()
    ratio = assert_within_bound(X, y, "nf4", state=state)
    assert 0.5 < ratio <= 1.0


def test_failure_names_the_worst_element():
    y, _ = _nf4()
    bound = bounds.error_bound(X, "nf4")
    y = y.copy()
    y[2, 5] = X[2, 5] + 3 * bound[2, 5]                              # the worst: 3x the bound
    y[4, 1] = X[4, 1] + 1.5 * bound[4, 1]
    with pytest.raises(AssertionError) as e:
        assert_within_bound(X, y, "nf4")
    msg = str(e.value)
    assert "NF4, blocksize 64: 2 of 420 elements exceed the error bound" in msg
    assert "index    (2, 5)" in msg and "flat 145; block 2 = flat elements 128…191" in msg
    for field in ("x        = ", "x_hat    = ", "|error|  = ", "bound    = ", "exceeded by "):
        assert field in msg
    assert re.search(r"\|error\| = 3(\.0*)? × bound", msg)
    assert f"{float(X[2, 5]):.9g}" in msg


def test_nan_output_fails():
    y, _ = _nf4()
    y = y.copy()
    y[0, 0] = np.nan
    with pytest.raises(AssertionError, match="x_hat    = nan"):
        assert_within_bound(X, y, "nf4")


@pytest.mark.parametrize("mode", [{}, {"axis": 0}, {"axis": -1}, {"blocksize": 7}])
def test_absmax_modes(mode):
    q, a = absmax_quantize(X, bits=4, **mode)
    y = absmax_dequantize(q, a, bits=4, **mode)
    assert assert_within_bound(X, y, "absmax", bits=4, **mode) <= 1
    with pytest.raises(AssertionError, match="absmax int4"):
        assert_within_bound(X, y * 1.1, "absmax", bits=4, **mode)


def test_absmax_axis_message_shows_the_slice():
    q, a = absmax_quantize(X, axis=-1)
    y = absmax_dequantize(q, a, axis=-1).copy()
    y[3, 9] += 1
    with pytest.raises(AssertionError, match=r"scaled by the absmax of x\[3, :\]"):
        assert_within_bound(X, y, "absmax", axis=-1)


def test_double_quant_needs_the_state():
    packed, st = quantize_4bit(X, quant_type="nf4", compress_statistics=True)
    y = dequantize_4bit(packed, st)
    assert assert_within_bound(X, y, "nf4_dq", state=st) <= 1
    assert assert_within_bound(X, y, "nf4+dq", state=st) <= 1          # compare.METHODS' spelling
    assert assert_within_bound(X, y, "nf4_dq", state={"offset": st.offset, "state2": st.state2}) <= 1
    with pytest.raises(ValueError, match="needs state="):
        assert_within_bound(X, y, "nf4_dq")
    with pytest.raises(ValueError, match="use method 'nf4_dq'"):
        assert_within_bound(X, y, "nf4", state=st)
    _, plain = quantize_4bit(X, quant_type="nf4")
    with pytest.raises(ValueError, match="compress_statistics=True"):
        assert_within_bound(X, y, "nf4_dq", state=plain)


def test_state_must_agree():
    y, st = _nf4(blocksize=128)
    assert assert_within_bound(X, y, "nf4", state=st) <= 1             # blocksize taken from the state
    with pytest.raises(ValueError, match="blocksize=64 but state.blocksize is 128"):
        assert_within_bound(X, y, "nf4", blocksize=64, state=st)
    with pytest.raises(ValueError, match="quant_type is 'nf4' but method is 'fp4'"):
        assert_within_bound(X, y, "fp4", state=st)
    with pytest.raises(ValueError, match="state= is for the block-wise"):
        assert_within_bound(X, y, "absmax", state=st)
    st.absmax = st.absmax.copy()
    st.absmax[1] *= 2                                                   # a wrong statistic would loosen a bound
    with pytest.raises(AssertionError, match=r"state.absmax is not max \|x\| per block: 1 of 4 blocks differ"):
        assert_within_bound(X, y, "nf4", state=st)


@pytest.mark.parametrize("call, error, match", [
    (lambda y: assert_within_bound(X, y, "nf5"), ValueError, "method must be one of"),
    (lambda y: assert_within_bound(X, y[:3], "nf4"), ValueError, r"x_hat has shape \(3, 70\) but x has shape"),
    (lambda y: assert_within_bound(X.astype(np.float64) + 1e-12, y, "nf4"), ValueError, "float32 cannot hold"),
    (lambda y: assert_within_bound(X.astype(np.int32), y, "nf4"), TypeError, "floating-point"),
    (lambda y: assert_within_bound(np.where(X > 1, np.inf, X), y, "nf4"), ValueError, "NaN or Inf"),
    (lambda y: assert_within_bound(X, y, "nf4", axis=0), ValueError, "axis is only for method 'absmax'"),
    (lambda y: assert_within_bound(X, y, "absmax", axis=0, blocksize=4), ValueError, "not both"),
    (lambda y: assert_within_bound(X, y, "nf4", blocksize=0), ValueError, "blocksize must be a positive"),
    (lambda y: assert_within_bound(X[0], y[0], "int8_vectorwise"), ValueError, "must be 2-D"),
])
def test_misuse_is_a_clear_error(call, error, match):
    y, _ = _nf4()
    with pytest.raises(error, match=match):
        call(y)


def test_float64_input_holding_float32_values_is_fine():
    y, st = _nf4()
    assert assert_within_bound(X.astype(np.float64), y.astype(np.float64), "nf4", state=st) <= 1


def test_float16_input():
    x16 = X.astype(np.float16)
    y, st = _nf4(x16)
    assert assert_within_bound(x16, y, "nf4", state=st) <= 1


@pytest.mark.parametrize("fmt", [BF16, FP16], ids=lambda f: f.name)
def test_output_format_adds_its_rounding(fmt):
    y, st = _nf4()
    y16 = decode(encode(y, fmt), fmt)
    assert assert_within_bound(X, y16, "nf4", state=st, output_format=fmt.name) <= 1
    widened = bounds.error_bound(X, "nf4", output_format=fmt)
    assert np.all(widened > bounds.error_bound(X, "nf4"))


def test_int8_vectorwise_leaves_outlier_columns_out():
    x = X.copy()
    x[:, 3] *= 40                                                       # an outlier feature
    ca, sca, cols = int8_vectorwise_quant(x, 6.0)
    assert 3 in cols
    y = int8_vectorwise_dequant(ca, sca)                                # column 3 is 0 there: the 16-bit path
    assert assert_within_bound(x, y, "int8_vectorwise", threshold=6.0) <= 1
    with pytest.raises(AssertionError, match="int8 vector-wise"):
        assert_within_bound(x, y, "int8_vectorwise")                   # without the threshold it is an error


def test_int8_vectorwise_refuses_rows_whose_scale_overflows():
    t = bounds.INT8_MIN_ROW_ABSMAX
    assert 3.7e-37 < t < 3.8e-37
    ok = np.array([[t, -t / 3]], np.float32)
    ca, sca, _ = int8_vectorwise_quant(ok)
    assert assert_within_bound(ok, int8_vectorwise_dequant(ca, sca), "int8_vectorwise") <= 1
    tiny = np.array([[1e-37, 5e-38, -3e-38]], np.float32)
    ca, sca, _ = int8_vectorwise_quant(tiny)                            # 1/SCA · 127 overflows float32 here
    y = int8_vectorwise_dequant(ca, sca)
    assert np.all(np.abs(y) == np.float32(1e-37))                       # so every element comes back as ±SCA
    with pytest.raises(ValueError, match="scale 127/absmax overflows float32"):
        assert_within_bound(tiny, y, "int8_vectorwise")


# ---- LLM.int8 matmul ----------------------------------------------------------------------------------

W = (RNG.standard_normal((24, 70)) * 0.05).astype(np.float32)


def test_matmul_passes_and_fails_naming_the_output():
    x = X.copy()
    x[:, 5] *= 20
    y = int8_matmul(x, W, 6.0)
    assert 0 < assert_matmul_within_bound(x, W, y, 6.0) <= 1
    y = y.copy()
    y[1, 7] += 0.5
    with pytest.raises(AssertionError) as e:
        assert_matmul_within_bound(x, W, y, 6.0)
    msg = str(e.value)
    assert "1 of 144 outputs exceed" in msg and "index    (1, 7)" in msg and "row 1 of x, row 7 of w, k = 70" in msg


def test_matmul_misuse():
    y = int8_matmul(X, W, 6.0)
    with pytest.raises(ValueError, match="need x"):
        assert_matmul_within_bound(X, W[:, :5], y)
    with pytest.raises(ValueError, match=r"y has shape \(6, 23\)"):
        assert_matmul_within_bound(X, W, y[:, :23])
    with pytest.raises(ValueError, match="FP16's range"):
        assert_matmul_within_bound(X * 1e5, W, y)


# ---- float casts --------------------------------------------------------------------------------------

G = load_golden("formats")
CASTS = {"fp16": (FP16, False), "bf16": (BF16, False), "fp8_e4m3": (FP8_E4M3, False),
         "fp8_e4m3_sat": (FP8_E4M3, True), "fp8_e5m2": (FP8_E5M2, False)}


@pytest.mark.parametrize("key", list(CASTS))
def test_the_cast_oracle_agrees_with_ml_dtypes(key):
    """The kit's oracle (a search among every value of the format, not minilora.formats.encode) accepts the
    golden vectors ml_dtypes made — so it can judge other casts."""
    fmt, sat = CASTS[key]
    edge = G["edge_inputs"].view(np.float32)
    assert_rounds_like(G[f"encode_edge_{key}"], edge, fmt, saturate=sat)
    rand = random_float32_bits().view(np.float32)[: G[f"encode_random_{key}"].size]
    assert_rounds_like(G[f"encode_random_{key}"], rand, fmt, saturate=sat)


@given(bits=float32_bits())
def test_minilora_casts_round_like_the_oracle(bits):
    """The project's own property: minilora.formats.encode on every class of float32 pattern."""
    x = bits.view(np.float32)
    for fmt in (FP16, BF16, FP8_E4M3, FP8_E5M2):
        assert_rounds_like(encode(x, fmt), x, fmt)
    assert_rounds_like(encode(x, FP8_E4M3, saturate=True), x, FP8_E4M3, saturate=True)


def _x(*v):
    return np.array(v, np.float32)


def test_cast_failure_at_a_tie():
    x = _x(1.0, 1 + 2**-11, 3.0)                                        # 1 + 2^-11: halfway between 1 and 1 + 2^-10
    bad = encode(x, FP16).copy()
    bad[1] += 1                                                         # rounded up: to the odd pattern
    with pytest.raises(AssertionError) as e:
        assert_rounds_like(bad, x, FP16)
    msg = str(e.value)
    assert "1 of 3 patterns differ" in msg and "index     1" in msg
    assert "got       = 0x3c01 = 1.00097656" in msg and "expected  = 0x3c00 = 1" in msg
    assert "exactly halfway between 0x3c00 and 0x3c01: a tie goes to the even pattern, 0x3c00" in msg


def test_cast_failure_at_overflow_sign_and_nan():
    x = _x(65520.0, -0.0, np.nan, -1e-30)
    good = encode(x, FP16)
    assert list(good) == [0x7C00, 0x8000, 0x7E00, 0x8000]
    for i, wrong, match in [(0, 0x7BFF, "first overflow point 65520"), (1, 0x0000, "the sign is wrong"),
                            (2, 0x7E01, "canonical quiet NaN"), (3, 0x0000, "the sign is wrong")]:
        bad = good.copy()
        bad[i] = wrong
        with pytest.raises(AssertionError, match=match):
            assert_rounds_like(bad, x, FP16)
    bad = good.copy()
    bad[2] = 0x7E01
    assert_rounds_like(bad, x, FP16, nan="any")


def test_cast_e4m3_overflow_rules():
    x = _x(464.0, np.nextafter(np.float32(464), np.float32(1e9)), np.inf)
    assert correctly_rounded(x, FP8_E4M3).tolist() == [0x7E, 0x7F, 0x7F]          # 464 is a tie: to 448
    assert correctly_rounded(x, FP8_E4M3, saturate=True).tolist() == [0x7E, 0x7E, 0x7E]
    with pytest.raises(AssertionError, match="first overflow point 464"):
        assert_rounds_like(np.array([0x7E, 0x7E, 0x7F], np.uint8), x, FP8_E4M3)


def test_cast_accepts_a_signed_view_and_refuses_misuse():
    x = _x(1.5, -2.0)
    assert_rounds_like(encode(x, BF16).view(np.int16), x, BF16)           # torch's .view(torch.int16)
    with pytest.raises(TypeError, match="float32 input"):
        assert_rounds_like(encode(x, BF16), x.astype(np.float64), BF16)
    with pytest.raises(ValueError, match="shape"):
        assert_rounds_like(encode(x, BF16)[:1], x, BF16)
    with pytest.raises(ValueError, match="outside"):
        assert_rounds_like(np.array([70000, 1], np.int32), x, BF16)
    with pytest.raises(TypeError, match="integer array"):
        assert_rounds_like(x, x, BF16)
    with pytest.raises(ValueError, match="nan must be"):
        assert_rounds_like(encode(x, BF16), x, BF16, nan="quiet")

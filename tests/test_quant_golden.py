"""minilora.quant against golden vectors made by bitsandbytes 0.50.2 (tools/golden/quant.py).

The inputs are rebuilt by ``tools/golden/_inputs.py`` and checked against the SHA-256 the golden file pins.
"""

import json
import sys

import numpy as np
import pytest
from conftest import ROOT, load_golden

from minilora.quant import (
    create_dynamic_map,
    create_normal_map,
    dequantize_4bit,
    dequantize_blockwise,
    dequantize_fp4,
    dequantize_nf4,
    fp4_code,
    int8_matmul_parts,
    int8_vectorwise_dequant,
    int8_vectorwise_quant,
    nf4_code,
    quantize_4bit,
    quantize_blockwise,
    quantize_fp4,
    quantize_nf4,
)

sys.path.insert(0, str(ROOT / "tools"))
from golden._inputs import digest, quant_inputs  # noqa: E402

from minilora.quant.int8 import BNB_INV_127_SQ, INV_127_SQ  # noqa: E402

G = load_golden("quant")
X = quant_inputs(G["nf4_code"], G["fp4_code"], G["dynamic_map"])


def bits(a):
    """float32 bit patterns, so that equality is bit equality (−0.0 ≠ 0.0, NaN = NaN)."""
    return np.asarray(a, np.float32).view(np.uint32)


def cases(prefix):
    return sorted(k[: -len("_x_sha256")] for k in G if k.startswith(prefix) and k.endswith("_x_sha256"))


def test_inputs_match_the_golden_file():
    """The rebuilt inputs are the ones bitsandbytes was given (NumPy's generator has not changed)."""
    pinned = sorted(k[: -len("_x_sha256")] for k in G if k.endswith("_x_sha256"))
    assert len(pinned) == len(X) == 35
    for key in pinned:
        assert bytes(digest(X[key])) == bytes(G[f"{key}_x_sha256"]), key


FOUR_BIT = cases("nf4_") + cases("fp4_")
DQ = [c for c in FOUR_BIT if f"{c}_dq_q_exact" in G]


def test_tables_bit_equal():
    assert np.array_equal(bits(nf4_code()), bits(G["nf4_code"]))
    assert np.array_equal(bits(fp4_code()), bits(G["fp4_code"]))


def test_normal_map_bit_equal():
    ours = create_normal_map()
    lib = G["normal_map"]                                  # 256 values: 16 levels and 240 padding zeros
    assert np.array_equal(bits(np.unique(lib)), bits(ours))
    assert np.array_equal(bits(ours), bits(nf4_code()))
    sym = create_normal_map(use_extra_value=False)
    assert sym.size == 15 and np.array_equal(bits(np.unique(G["normal_map_sym"])), bits(sym))


def test_normal_map_float64_recipe_is_not_bit_equal():
    f64 = create_normal_map(recipe="float64")
    ulps = np.abs(bits(f64).astype(np.int64) - bits(nf4_code()).astype(np.int64))
    assert ulps.max() > 0                                  # a different table ...
    assert ulps.max() <= 8                                 # ... off by a few ulp only
    np.testing.assert_allclose(f64, nf4_code(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_bit_equal(signed):
    ref = G["dynamic_map" if signed else "dynamic_map_unsigned"]
    assert np.array_equal(bits(create_dynamic_map(signed=signed)), bits(ref))


DYNMAP_GRID = json.loads(str(G["dynmap_grid_json"]))


def _dynmap_id(row):
    return f"signed={row['signed']}-m={row['max_exponent_bits']!r}-bits={row['total_bits']!r}"


@pytest.mark.parametrize("row", DYNMAP_GRID, ids=_dynmap_id)
def test_dynamic_map_every_argument_combination(row):
    """Every (signed, max_exponent_bits, total_bits) of the grid: bitsandbytes' map, or an error where it errs."""
    args = (row["signed"], row["max_exponent_bits"], row["total_bits"])
    if "error" in row:                     # bitsandbytes: AssertionError / UnboundLocalError / TypeError
        with pytest.raises(TypeError if row["error"] == "TypeError" else ValueError, match="create_dynamic_map"):
            create_dynamic_map(*args)
        return
    m = create_dynamic_map(*args)
    assert m.dtype == np.float32 and m.shape == (row["size"],)
    assert bytes(digest(m)).hex() == row["sha256"]


def test_dynamic_map_grid_covers_the_cases():
    ok = [r for r in DYNMAP_GRID if "error" not in r]
    errors = {r["error"] for r in DYNMAP_GRID if "error" in r}
    assert errors == {"AssertionError", "UnboundLocalError", "TypeError"} and len(ok) > 100
    sizes = {(r["signed"], r["max_exponent_bits"], r["total_bits"]): r["size"] for r in ok}
    assert sizes[True, 8, 8] == 256 and sizes[True, 7, 16] == 65536 and sizes[True, 3, 4] == 256   # padded to 256


@pytest.mark.parametrize("key", sorted(k for k in G if k.startswith("dynmap_") and k != "dynmap_grid_json"))
def test_dynamic_map_in_full(key):
    signed, m, b = (int(v) for v in key.split("_")[1:])
    assert np.array_equal(bits(create_dynamic_map(bool(signed), m, b)), bits(G[key]))


def test_dynamic_map_numpy_integers_act_as_python_integers():
    ref = create_dynamic_map(True, 8, 8)
    assert np.array_equal(bits(create_dynamic_map(np.bool_(True), np.int64(8), np.int16(8))), bits(ref))


def test_dynamic_map_facts():
    m = create_dynamic_map()
    assert m.size == 256 and np.all(np.diff(m) >= 0)
    assert (m < 0).sum() == 127 and m[127] == 0 and m[255] == 1.0 and -1.0 not in m
    assert m[0] == np.float32(-0.99296874)
    assert np.abs(m[m != 0]).min() == np.float32(5.5000004e-07)


@pytest.mark.parametrize("case", FOUR_BIT)
def test_4bit_bytes_absmax_dequant(case):
    x, bs, qt = X[case], int(G[f"{case}_bs"]), case[:3]
    packed, state = quantize_4bit(x, blocksize=bs, quant_type=qt)
    assert packed.dtype == np.uint8 and np.array_equal(packed, G[f"{case}_packed"])
    assert np.array_equal(bits(state.absmax), bits(G[f"{case}_absmax"]))
    out = dequantize_4bit(packed, state)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.array_equal(bits(out), bits(G[f"{case}_deq"]))


@pytest.mark.parametrize("case", FOUR_BIT)
def test_named_4bit_functions(case):
    """quantize_nf4 / quantize_fp4 and their dequantize twins, as bitsandbytes names them."""
    qt, bs, dq = case[:3], int(G[f"{case}_bs"]), f"{case}_dq_q_exact" in G
    quantize, dequantize = {"nf4": (quantize_nf4, dequantize_nf4), "fp4": (quantize_fp4, dequantize_fp4)}[qt]
    packed, state = quantize(X[case], blocksize=bs, compress_statistics=dq)
    assert np.array_equal(packed, G[f"{case}_packed"])
    want = G[f"{case}_dq_deq_exact" if dq else f"{case}_deq"]
    assert np.array_equal(bits(dequantize(packed, state)), bits(want))


@pytest.mark.parametrize("case", DQ)
def test_4bit_double_quant(case):
    x, bs, qt = X[case], int(G[f"{case}_bs"]), case[:3]
    packed, state = quantize_4bit(x, blocksize=bs, quant_type=qt, compress_statistics=True)
    assert np.array_equal(packed, G[f"{case}_packed"])     # the 4-bit codes do not change
    # the offset: minilora's correctly rounded mean; bitsandbytes' float32 mean within a few ulp of it
    assert bits(state.offset) == bits(G[f"{case}_dq_offset_exact"])
    ulp = np.spacing(np.float32(state.offset))
    assert abs(float(state.offset) - float(G[f"{case}_dq_offset_bnb"])) <= 4 * ulp
    # with the same offset, bitsandbytes' codes, second-level absmax and reconstruction are equal bit for bit
    assert np.array_equal(state.absmax, G[f"{case}_dq_q_exact"])
    assert np.array_equal(bits(state.state2.absmax), bits(G[f"{case}_dq_absmax2_exact"]))
    assert np.array_equal(bits(dequantize_4bit(packed, state)), bits(G[f"{case}_dq_deq_exact"]))
    # and bitsandbytes' own result (its offset) agrees to float32 precision
    np.testing.assert_allclose(dequantize_4bit(packed, state), G[f"{case}_dq_deq_bnb"], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("case", cases("bw8_"))
def test_blockwise_8bit(case):
    x, bs = X[case], int(G[f"{case}_bs"])
    q, state = quantize_blockwise(x, blocksize=bs)
    assert np.array_equal(q, G[f"{case}_q"])
    assert np.array_equal(bits(state.absmax), bits(G[f"{case}_absmax"]))
    assert np.array_equal(bits(dequantize_blockwise(q, state)), bits(G[f"{case}_deq"]))


@pytest.mark.parametrize("case", [f"{c}_t{t}" for c in cases("i8_") for t in (0, 6)])
def test_int8_vectorwise(case):
    name, threshold = case.rsplit("_t", 1)
    ca, sca, cols = int8_vectorwise_quant(X[name].astype(np.float32), float(threshold))
    assert ca.dtype == np.int8 and np.array_equal(ca, G[f"{case}_CA"])
    assert np.array_equal(bits(sca), bits(G[f"{case}_SCA"]))
    assert np.array_equal(cols, G[f"{case}_cols"])
    assert np.array_equal(bits(int8_vectorwise_dequant(ca, sca)), bits(G[f"{case}_deq"]))


def test_int8_golden_covers_ties_and_threshold():
    x, cols = X["i8_m"], G["i8_m_t6_cols"]
    assert x[2, 7] == 6.0 and 7 in cols                    # exactly the threshold is an outlier
    assert G["i8_m_t0_CA"][7, 1] == 64 and G["i8_m_t0_CA"][7, 2] == -64    # 63.5 → 64: half to even
    assert np.all(G["i8_m_t0_CA"][6] == 0)                 # an all-zero row


MATMUL = sorted(k[: -len("_acc")] for k in G if k.startswith("mm") and k.endswith("_acc"))


@pytest.mark.parametrize("key", MATMUL)
def test_int8_matmul_pieces(key):
    case, threshold = key.rsplit("_t", 1)
    p = int8_matmul_parts(X[f"{case}_x"], X[f"{case}_w"], float(threshold))
    for name in ("SCA", "SCB", "acc") + (() if case == "mmbig" else ("CA", "CB")):   # mmbig: no codes stored
        assert np.array_equal(getattr(p, name), G[f"{key}_{name}"]), name
    assert np.array_equal(p.outlier_cols, G[f"{key}_cols"])
    # the int8 part is bitsandbytes' int8_mm_dequant bit for bit (its constant 6.200124e-05 is the default)
    assert np.array_equal(bits(p.int_part), bits(G[f"{key}_int_part"]))
    explicit = int8_matmul_parts(X[f"{case}_x"], X[f"{case}_w"], float(threshold), rescale="bitsandbytes")
    assert np.array_equal(bits(explicit.int_part), bits(p.int_part))
    # the outlier columns go through a float32 matmul: torch (MKL) and NumPy sum in different orders
    np.testing.assert_allclose(p.outlier_part, G[f"{key}_outlier_part"], rtol=1e-5, atol=1e-6)
    scale = np.abs(G[f"{key}_int_part"]) + np.abs(G[f"{key}_outlier_part"])
    assert np.all(np.abs(p.y - G[f"{key}_y"]) <= 1e-5 * scale)


def test_int8_matmul_golden_covers_the_cases():
    assert {"mm_t0", "mm_t6", "mmk1_t0", "mmk1_t6", "mmbig_t0"} <= set(MATMUL)
    assert len(G["mm_t6_cols"]) > 0 and len(G["mm_t0_cols"]) == 0
    acc = G["mmbig_t0_acc"].astype(np.int64)
    assert np.any(acc.astype(np.float32).astype(np.int64) != acc)      # sums float32 cannot hold exactly
    assert G["mmk1_t0_CA"].shape[1] == 1                              # k = 1 (torch._int_mm is avoided there)
    assert "mmbig_t0_CA" not in G and G["mmbig_t0_acc"].shape == (4, 6)


@pytest.mark.parametrize("key", MATMUL)
def test_int8_matmul_exact_rescale(key):
    """rescale="exact" multiplies by float32(1/127²): bitsandbytes' result times the ratio of the constants."""
    case, threshold = key.rsplit("_t", 1)
    p = int8_matmul_parts(X[f"{case}_x"], X[f"{case}_w"], float(threshold), rescale="exact")
    ratio = float(INV_127_SQ) / float(BNB_INV_127_SQ)                   # 1 − 1.8e-5
    want = G[f"{key}_int_part"].astype(np.float64) * ratio
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(p.int_part - want) <= 2 * ulp)
    assert not np.array_equal(p.int_part, G[f"{key}_int_part"]) or not np.any(G[f"{key}_int_part"])


def test_golden_file_records_its_provenance():
    from golden._meta import read_meta

    info = read_meta(G)
    assert info["generator"] == "tools/golden/quant.py" and not info["dirty"]
    assert info["libraries"]["bitsandbytes"] == "0.50.2" and info["libraries"]["torch"].startswith("2.13.0")

"""QuantState.as_dict / from_dict against bitsandbytes 0.50.2's dictionaries (tests/golden/quant.npz, qsd_*)."""

import json
import sys

import numpy as np
import pytest
from conftest import ROOT, load_golden

from minilora.formats import BF16, FP16, round_to
from minilora.quant import QuantState, dequantize_4bit, quantize_4bit, quantize_blockwise

sys.path.insert(0, str(ROOT / "tools"))
from golden._inputs import quant_inputs  # noqa: E402

G = load_golden("quant")
X = quant_inputs(G["nf4_code"], G["fp4_code"], G["dynamic_map"])
EXACT = sorted(k[4:-5] for k in G if k.startswith("qsd_") and k.endswith("_keys") and "native" not in k)
NATIVE = sorted(k[4:-5] for k in G if k.startswith("qsd_native_") and k.endswith("_keys"))


def bnb_dict(key):
    """bitsandbytes' as_dict(packed=True), in its key order, as NumPy arrays."""
    return {name: G[f"qsd_{key}@{name}"] for name in json.loads(str(G[f"qsd_{key}_keys"]))}


def minilora_state(key):
    """minilora's state for a golden case ``<qt>_<case>`` (``_dq``: with double quantization)."""
    nested = key.endswith("_dq")
    case = key[: -len("_dq")] if nested else key
    packed, st = quantize_4bit(X[case], blocksize=int(G[f"{case}_bs"]), quant_type=case[:3],
                               compress_statistics=nested)
    return case, packed, st


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def test_golden_covers_the_cases():
    assert len(EXACT) == 40 and sum(k.endswith("_dq") for k in EXACT) == 18
    assert {k[:3] for k in EXACT} == {"nf4", "fp4"}
    dtypes = {json.loads(bytes(d[k]))["dtype"] for d in map(bnb_dict, NATIVE) for k in d if "quant_state" in k}
    assert dtypes == {"float32", "float16", "bfloat16"} and len(NATIVE) == 7


@pytest.mark.parametrize("key", EXACT)
def test_as_dict_equals_bitsandbytes_key_for_key_byte_for_byte(key):
    _, _, st = minilora_state(key)
    ours, theirs = st.as_dict(packed=True), bnb_dict(key)
    assert list(ours) == list(theirs)                                   # same keys, same order
    for name, want in theirs.items():
        got = ours[name]
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), (name, bytes(got) if got.dtype == np.uint8 else "")


@pytest.mark.parametrize("key", EXACT)
def test_from_dict_of_bitsandbytes_dict_is_minilora_state(key):
    case, packed, st = minilora_state(key)
    read = QuantState.from_dict(bnb_dict(key))
    assert read == st and read.nested == key.endswith("_dq")
    assert np.array_equal(bits(dequantize_4bit(packed, read)),
                          bits(G[f"{case}_dq_deq_exact" if read.nested else f"{case}_deq"]))


@pytest.mark.parametrize("key", NATIVE)
def test_from_dict_reads_bitsandbytes_own_states(key):
    """States bitsandbytes.functional.quantize_4bit made (native kernels, torch's mean as the offset)."""
    st = QuantState.from_dict(bnb_dict(key))
    dtype = key.rsplit("_", 1)[1]
    assert (st.dtype if dtype == "bfloat16" else st.dtype.name) == dtype
    w = dequantize_4bit(G[f"qsd_{key}_packed"], st)
    assert w.dtype == np.float32 and w.shape == X[str(G[f"qsd_{key}_src"])].shape
    # bitsandbytes' dequantize_4bit returns the state's dtype: minilora's float32 rounded to it
    w = {"float32": w, "float16": round_to(w, FP16), "bfloat16": round_to(w, BF16)}[dtype]
    assert np.array_equal(bits(w), bits(G[f"qsd_{key}_deq"]))


@pytest.mark.parametrize("shape, bs, qt, nested, dtype", [
    ((33, 65), 128, "nf4", True, np.float32), ((7,), 32, "fp4", False, np.float16), ((), 64, "nf4", True, np.float64),
    ((0, 5), 64, "fp4", True, np.float32), ((300, 129), 64, "nf4", True, np.float32)])
@pytest.mark.parametrize("packed", [True, False])
def test_round_trip(shape, bs, qt, nested, dtype, packed):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    q, st = quantize_4bit(x, blocksize=bs, quant_type=qt, compress_statistics=nested)
    d = st.as_dict(packed=packed)
    back = QuantState.from_dict(d)
    assert back == st and back.dtype == np.dtype(dtype)
    assert np.array_equal(dequantize_4bit(q, back), dequantize_4bit(q, st))
    if packed:
        assert all(isinstance(v, np.ndarray) for v in d.values())
    else:
        assert d["shape"] == shape and d["dtype"] == np.dtype(dtype).name


def test_prefixes_are_stripped_and_the_input_is_not_modified():
    key = "nf4_m33x65_bs128_dq"
    d = {f"model.layers.0.mlp.up_proj.weight.{k}": v for k, v in bnb_dict(key).items()}
    before = dict(d)
    st = QuantState.from_dict(d)
    assert st == minilora_state(key)[2]
    assert d.keys() == before.keys() and all(d[k] is before[k] for k in d)


def test_as_dict_arrays_do_not_alias_the_state():
    _, st = quantize_4bit(np.ones(100, np.float32), quant_type="nf4")
    d = st.as_dict()
    d["absmax"][0] = 7
    assert st.absmax[0] == 1


def test_packed_as_dict_needs_a_4bit_state():
    _, st = quantize_blockwise(np.ones(100, np.float32))
    with pytest.raises(ValueError, match=r"4-bit states \(nf4, fp4\), got quant_type 'dynamic'"):
        st.as_dict(packed=True)
    assert st.as_dict()["quant_type"] == "dynamic"


# ---- bad dictionaries: a clear error naming the key -------------------------------------------------

KEY = "fp4_m33x65_bs128_dq"
PACKED = "quant_state.bitsandbytes__fp4"


def _json(d):
    return json.loads(bytes(d[PACKED]))


def _with_json(d, **changes):
    plain = {**_json(d), **changes}
    plain = {k: v for k, v in plain.items() if v is not None}
    return {**d, PACKED: np.frombuffer(json.dumps(plain).encode(), np.uint8).copy()}


def _bad(name):
    d = bnb_dict(KEY)
    return {
        "not a mapping": (list(d.items()), TypeError, "mapping"),
        "neither": ({"absmax": d["absmax"]}, ValueError, "found neither"),
        "two packed": ({**d, "x.quant_state.bitsandbytes__nf4": d[PACKED]}, ValueError, "exactly one"),
        "missing quant_map": ({k: v for k, v in d.items() if k != "quant_map"}, ValueError,
                              r"missing keys \['quant_map'\]"),
        "missing nested": ({k: v for k, v in d.items() if k != "nested_quant_map"}, ValueError,
                           r"missing keys \['nested_quant_map'\] \(a nested state needs all"),
        "unknown key": ({**d, "absmax2": d["absmax"]}, ValueError, r"unknown keys \['absmax2'\]"),
        "two keys one name": ({**d, "a.absmax": d["absmax"]}, ValueError, "two keys end in 'absmax'"),
        "absmax dtype": ({**d, "absmax": d["absmax"].astype(np.float32)}, ValueError,
                         r"'absmax' must be uint8 of shape \(17,\)"),
        "absmax length": ({**d, "absmax": d["absmax"][:-1]}, ValueError,
                          r"'absmax' must be uint8 of shape \(17,\) for shape \(33, 65\) at blocksize 128"),
        "quant_map dtype": ({**d, "quant_map": d["quant_map"].astype(np.float64)}, ValueError,
                            "'quant_map' must be float32"),
        "quant_map other": ({**d, "quant_map": G["nf4_code"]}, ValueError, "'quant_map' is not the fp4 table"),
        "nested_absmax shape": ({**d, "nested_absmax": np.ones(2, np.float32)}, ValueError,
                                r"'nested_absmax' must be float32 of shape \(1,\) for 17 blocks"),
        "nested NaN": ({**d, "nested_absmax": np.full(1, np.nan, np.float32)}, ValueError, "NaN or Inf"),
        "packed dtype": ({**d, PACKED: d[PACKED].astype(np.int8)}, ValueError, "1-D uint8 array of UTF-8 JSON"),
        "not utf-8": ({**d, PACKED: np.array([0xFF, 0xFE], np.uint8)}, ValueError, "is not UTF-8"),
        "bad json": ({**d, PACKED: d[PACKED][:-1]}, ValueError, "is not valid JSON"),
        "json list": ({**d, PACKED: np.frombuffer(b"[1, 2]", np.uint8).copy()}, ValueError, "a JSON object"),
        "type vs name": (_with_json(d, quant_type="nf4"), ValueError, "holds quant_type 'nf4', its name says 'fp4'"),
        "blocksize": (_with_json(d, blocksize=100), ValueError, r"'blocksize' must be a power of two"),
        "shape": (_with_json(d, shape=[33, -65]), ValueError, "'shape' must be a list of non-negative integers"),
        "shape mismatch": (_with_json(d, shape=[33, 66]), ValueError, r"'absmax' must be uint8 of shape \(18,\)"),
        "dtype": (_with_json(d, dtype="int8"), ValueError, r"'dtype' must be one of \('float32'"),
        "nested_offset": (_with_json(d, nested_offset="0.5"), ValueError, "'nested_offset' must be a finite number"),
        "nested_blocksize": (_with_json(d, nested_blocksize=300), ValueError, "'nested_blocksize' must be one of"),
        "missing in json": (_with_json(d, shape=None), ValueError, r"missing keys \['shape'\]"),
        "clash": ({**d, "blocksize": 128}, ValueError, r"\['blocksize'\] appear both"),
    }[name]


@pytest.mark.parametrize("name", ["not a mapping", "neither", "two packed", "missing quant_map", "missing nested",
                                  "unknown key", "two keys one name", "absmax dtype", "absmax length",
                                  "quant_map dtype", "quant_map other", "nested_absmax shape", "nested NaN",
                                  "packed dtype", "not utf-8", "bad json", "json list", "type vs name", "blocksize",
                                  "shape", "shape mismatch", "dtype", "nested_offset", "nested_blocksize",
                                  "missing in json", "clash"])
def test_bad_dicts(name):
    d, err, match = _bad(name)
    with pytest.raises(err, match=match):
        QuantState.from_dict(d)

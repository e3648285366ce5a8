"""bitsandbytes' own public CPU functions held to minilora's bounds and codes (skipped without bitsandbytes).

This is the testing kit used on code minilora did not write. Run it with a Python that has torch and
bitsandbytes (the golden-vector venv of the README)::

    TORCHDYNAMO_DISABLE=1 PYTHONPATH=$PWD python -m pytest -q tests/testing/test_bitsandbytes_bounds.py -s

(``-s`` prints what it finds). What it found on bitsandbytes 0.50.2 / torch 2.13 CPU (AVX-512), recorded in
docs/testing.md, "bitsandbytes on CPU":

* ``quantize_4bit`` runs bitsandbytes' pure-PyTorch kernel on CPU: codes and absmax bit-exact.
* ``dequantize_4bit`` runs a native kernel: bit-exact, except that on AVX-512 inputs of two or more rows whose
  last dimension is a multiple of 16 but not of the blocksize take some elements' scale from the wrong block
  and exceed the bound. And shapes: a 1-D input of even length comes back as (1, n), an input of at most two
  elements (one packed byte) transposed, a 3-D one of one packed byte raises.
* ``compress_statistics=True``: the offset is torch's float32 mean, up to an ulp from the correctly rounded
  one minilora takes, so many dequantized values differ from minilora's (half, on the data below) — all
  within the double-quantization bound: within the bound, not bit-exact.
* ``quantize_blockwise`` (native CPU kernel, a lookup table): a few codes per thousand are not the nearest,
  up to 4 codes away (0.0 gets code 131), and a few elements per ten thousand exceed the nearest-code bound,
  by a fraction of a percent. Its pure-PyTorch kernel is exact. ``dequantize_blockwise``: bit-exact.
* ``int8_vectorwise_quant`` (pure PyTorch on CPU), on FP16 input: within the bound, codes bit-exact.
"""

import os

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

torch = pytest.importorskip("torch")
bnb = pytest.importorskip("bitsandbytes")
F = pytest.importorskip("bitsandbytes.functional")

from minilora.quant import create_dynamic_map, dequantize_4bit, quantize_4bit  # noqa: E402
from minilora.testing import (  # noqa: E402
    assert_codes_equal,
    assert_within_bound,
    blocksizes,
    diff_codes,
    tensors,
)

AVX512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
KEYSET = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
#: what the properties saw, printed by test_report (and summarised in docs/testing.md)
FOUND: dict[str, list] = {"dequant_4bit_over_bound": [], "dequant_4bit_shape": [], "dequant_4bit_raises": []}


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def reference(name, *args):
    """bitsandbytes' pure-PyTorch kernel for op ``name`` (docs/facts.md §7)."""
    return getattr(torch.ops.bitsandbytes, name).default.redispatch(KEYSET, *args)


def native_dequant_quirk(shape, blocksize):
    """The shapes on which bitsandbytes' native AVX-512 4-bit dequantization is known to go wrong."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    n = shape[-1] if shape else 1
    return AVX512 and blocksize < 2048 and rows > 1 and n % 16 == 0 and n % blocksize != 0


# ---- 4-bit ------------------------------------------------------------------------------------------

@given(data=st.data(), bs=blocksizes(), qt=st.sampled_from(["nf4", "fp4"]))
def test_quantize_4bit_is_bit_exact(data, bs, qt):
    x = data.draw(tensors(blocksize=bs))
    packed, state = F.quantize_4bit(t(x), blocksize=bs, quant_type=qt)
    assert_codes_equal(x, method=qt, packed=packed.numpy().reshape(-1), absmax=state.absmax, blocksize=bs)


@given(data=st.data(), bs=blocksizes(), qt=st.sampled_from(["nf4", "fp4"]))
def test_dequantize_4bit_within_the_bound(data, bs, qt):
    x = data.draw(tensors(blocksize=bs))
    packed, state = F.quantize_4bit(t(x), blocksize=bs, quant_type=qt)
    try:
        y = F.dequantize_4bit(packed, state).numpy()
    except RuntimeError as e:                                    # 3-D inputs of one packed byte
        FOUND["dequant_4bit_raises"].append((x.shape, str(e)))
        assert x.ndim > 2 and packed.shape[0] == 1, f"dequantize_4bit raised on shape {x.shape}: {e}"
        return
    if y.shape != x.shape:
        FOUND["dequant_4bit_shape"].append((x.shape, y.shape))
        assert y.size == x.size and (x.ndim == 1 or packed.shape[0] == 1), f"{x.shape} came back as {y.shape}"
        y = y.reshape(x.shape)
    try:
        assert_within_bound(x, y, qt, state=state)
    except AssertionError:
        FOUND["dequant_4bit_over_bound"].append((x.shape, bs))
        assert native_dequant_quirk(x.shape, bs), f"a new failure: shape {x.shape}, blocksize {bs}"
        # the pure-PyTorch kernel on the same codes is right, bit for bit with minilora
        ref = reference("dequantize_4bit", packed, state.absmax, bs, qt, list(x.shape), torch.float32).numpy()
        assert assert_within_bound(x, ref, qt, state=state) <= 1
        mine = dequantize_4bit(*quantize_4bit(x, blocksize=bs, quant_type=qt))
        assert np.array_equal(ref.view(np.uint32), mine.view(np.uint32))


def test_native_dequant_quirk_is_caught():
    """A deterministic instance of the AVX-512 quirk, as the kit reports it."""
    if not AVX512:
        pytest.skip("the native kernel's quirk needs an AVX-512 CPU")
    x = np.random.default_rng(0).standard_normal((4, 80)).astype(np.float32)
    packed, state = F.quantize_4bit(t(x), blocksize=64, quant_type="nf4")
    with pytest.raises(AssertionError, match="exceed the error bound") as e:
        assert_within_bound(x, F.dequantize_4bit(packed, state).numpy(), "nf4", state=state)
    print("\n" + str(e.value))


@given(data=st.data(), bs=st.sampled_from([32, 64, 256]), qt=st.sampled_from(["nf4", "fp4"]))
def test_double_quantization_within_the_bound(data, bs, qt):
    x = data.draw(tensors(max_dims=1, max_size=12000, blocksize=bs))    # 1-D: clear of the native quirk
    packed, state = F.quantize_4bit(t(x), blocksize=bs, quant_type=qt, compress_statistics=True)
    y = F.dequantize_4bit(packed, state).numpy().reshape(x.shape)
    assert_within_bound(x, y, f"{qt}_dq", state=state)


def test_double_quantization_is_within_the_bound_but_not_bit_exact():
    rng = np.random.default_rng(3)
    differ, total, ulps = 0, 0, set()
    for _ in range(10):
        x = (rng.standard_normal(int(rng.integers(10_000, 200_000))) * rng.choice([0.02, 1, 50])).astype(np.float32)
        packed, state = F.quantize_4bit(t(x), blocksize=64, quant_type="nf4", compress_statistics=True)
        y = F.dequantize_4bit(packed, state).numpy().reshape(-1)
        mp, ms = quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert np.array_equal(packed.numpy().reshape(-1), mp)                   # the same 4-bit codes
        ulps.add(int(np.float32(state.offset.item()).view(np.int32)) - int(np.float32(ms.offset).view(np.int32)))
        differ += int(np.sum(y != dequantize_4bit(mp, ms)))
        total += x.size
        assert assert_within_bound(x, y, "nf4_dq", state=state) <= 1
    print(f"\ndouble quantization: offsets {sorted(ulps)} ulp from the correctly rounded mean; "
          f"{differ} of {total} values ({100 * differ / total:.1f}%) differ from minilora's, all within the bound")
    assert ulps <= {-2, -1, 0, 1, 2} and ulps != {0} and 0 < differ < total


# ---- 8-bit dynamic map ------------------------------------------------------------------------------

def test_quantize_blockwise_native_is_not_the_nearest_code():
    x = np.random.default_rng(1).standard_normal(1 << 20).astype(np.float32)
    code = create_dynamic_map()
    lines = []
    for bs in (64, 4096):
        q, state = F.quantize_blockwise(t(x), blocksize=bs)
        d = diff_codes(x, q.numpy(), "dynamic", blocksize=bs)
        steps = np.abs(d.got.astype(int) - d.expected.astype(int))
        with pytest.raises(AssertionError, match="exceed the error bound") as e:
            assert_within_bound(x, F.dequantize_blockwise(q, state).numpy(), "dynamic", state=state)
        over = int(str(e.value).split(" of ")[0].rsplit(" ", 1)[1])
        ratio = float(str(e.value).split("|error| = ")[-1].split(" × bound")[0])
        lines.append(f"blocksize {bs}: {d!r}, up to {steps.max()} codes away; {over} of {x.size} elements over "
                     f"the nearest-code bound, by up to {100 * (ratio - 1):.2f}%")
        assert 0 < d.count < 0.005 * x.size and steps.max() <= 8 and 1 < ratio < 1.01
        # dequantization itself is exact: code[q] · absmax
        deq = F.dequantize_blockwise(q, state).numpy()
        want = (code[q.numpy()] * np.repeat(state.absmax.numpy(), bs)[: x.size]).astype(np.float32)
        assert np.array_equal(deq.view(np.uint32), want.view(np.uint32))
        # and bitsandbytes' pure-PyTorch kernel is the exact nearest code
        rq, _ = reference("quantize_blockwise", t(x), t(code), bs)
        assert_codes_equal(x, rq.numpy(), "dynamic", blocksize=bs)
    z = np.zeros(64, np.float32)
    z[0] = 1
    q0 = int(F.quantize_blockwise(t(z), blocksize=64)[0][1])
    lines.append(f"0.0 gets code {q0} ({code[q0]:.6g}), the exact rule code 127 (0.0)")
    assert q0 != 127
    print("\nquantize_blockwise (native CPU): " + "\n  ".join(lines))


@given(data=st.data(), bs=blocksizes(64))
def test_quantize_blockwise_codes_are_within_a_few_of_the_nearest(data, bs):
    x = data.draw(tensors(blocksize=bs))
    q, state = F.quantize_blockwise(t(x), blocksize=bs)
    d = diff_codes(x, q.numpy(), "dynamic", blocksize=bs)
    zero = x.reshape(-1)[d.index] == 0
    steps = np.abs(d.got.astype(int) - d.expected.astype(int))[~zero]
    assert steps.max(initial=0) <= 8, f"a code {steps.max()} positions from the nearest"


# ---- int8 vector-wise ---------------------------------------------------------------------------------

@given(x=tensors(min_dims=2, max_dims=2, dtype="float16", midpoints=("int8",)), threshold=st.sampled_from([0.0, 6.0]))
def test_int8_vectorwise_within_the_bound_and_bit_exact(x, threshold):
    ca, sca, cols = F.int8_vectorwise_quant(t(x.copy()), threshold)
    y = F.int8_vectorwise_dequant(ca, sca).numpy()
    assert_within_bound(x, y, "int8_vectorwise", threshold=threshold)
    assert_codes_equal(x, ca.numpy(), "int8_vectorwise", absmax=sca, threshold=threshold)


def test_report():
    """Print what the 4-bit properties found (run after them, in file order)."""
    print("\ndequantize_4bit (public, CPU):")
    print(f"  over the bound on {len(FOUND['dequant_4bit_over_bound'])} examples, all of the known native-kernel "
          f"shapes, e.g. {sorted(set(FOUND['dequant_4bit_over_bound']))[:4]}")
    print(f"  shape changed: {sorted(set(FOUND['dequant_4bit_shape']))[:4]}")
    print(f"  raised: {sorted({s for s, _ in FOUND['dequant_4bit_raises']})[:4]}")
    if AVX512 and FOUND["dequant_4bit_over_bound"] == [] and FOUND["dequant_4bit_shape"] == []:
        pytest.skip("the 4-bit properties did not run in this session")
    assert all(native_dequant_quirk(s, bs) for s, bs in FOUND["dequant_4bit_over_bound"])

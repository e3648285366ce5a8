"""minilora's 4-bit files read by bitsandbytes itself (skipped without torch and bitsandbytes).

Run in the reference venv::

    TORCHDYNAMO_DISABLE=1 PYTHONPATH=$PWD /work/goldenv/bin/python -m pytest -q tests/test_quant_bnb_interop.py

bitsandbytes' ``QuantState.from_dict`` on minilora's ``as_dict(packed=True)``, then its ``dequantize_4bit``,
must give minilora's weight bit for bit. bitsandbytes' native CPU dequantize is wrong on AVX-512 machines for
2-D shapes whose last dimension is a multiple of 16 but not of the blocksize (docs/facts.md §2): there the
pure-PyTorch kernel (the reference) is compared, and the native result only where the bug cannot apply.
"""

import os
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
from bitsandbytes import functional as F  # noqa: E402

from minilora.formats import FP16, round_to  # noqa: E402
from minilora.quant import QuantState, dequantize_4bit, quantize_4bit  # noqa: E402

KEYSET = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


def default_dequantize(packed, st):
    """bitsandbytes' dequantize_4bit through its pure-PyTorch kernels."""
    absmax = st.absmax
    if st.nested:
        absmax = torch.ops.bitsandbytes.dequantize_blockwise.default.redispatch(
            KEYSET, absmax, st.state2.absmax, st.state2.code, st.state2.blocksize, torch.float32) + st.offset
    return torch.ops.bitsandbytes.dequantize_4bit.default.redispatch(
        KEYSET, packed, absmax, st.blocksize, st.quant_type, list(st.shape), st.dtype)


def native_bug_applies(shape, blocksize):
    return len(shape) == 2 and shape[-1] % 16 == 0 and shape[-1] % blocksize != 0


CASES = [((4096,), 64), ((37,), 64), ((33, 65), 128), ((3, 5, 7), 32), ((64, 48), 256), ((4, 80), 64),
         ((5001,), 4096), ((300, 129), 64), ((128, 96), 4096), ((1,), 32), ((2, 3, 4, 5), 512)]


@pytest.mark.parametrize("shape, blocksize", CASES, ids=[f"{s}-bs{b}" for s, b in CASES])
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_bitsandbytes_reads_minilora_states(shape, blocksize, qt, nested, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((shape, blocksize, qt, nested)).encode()))
    x = (rng.standard_normal(shape) * rng.choice([0.02, 1.0, 30.0])).astype(dtype)
    packed, st = quantize_4bit(x, blocksize=blocksize, quant_type=qt, compress_statistics=nested)
    ours = dequantize_4bit(packed, st)
    want = ours if dtype == np.float32 else round_to(ours, FP16)            # bitsandbytes returns the state's dtype
    qs = F.QuantState.from_dict({k: torch.from_numpy(v) for k, v in st.as_dict(packed=True).items()},
                                device=torch.device("cpu"))
    assert qs.quant_type == qt and tuple(qs.shape) == shape and qs.nested == nested
    tpacked = torch.from_numpy(packed).reshape(-1, 1)
    ref = default_dequantize(tpacked, qs).float().numpy()
    assert np.array_equal(ref.view(np.uint32), want.view(np.uint32))
    native = F.dequantize_4bit(tpacked, qs).float().numpy()
    if not native_bug_applies(shape, blocksize):
        bad = np.flatnonzero(native.view(np.uint32) != want.view(np.uint32))
        assert bad.size == 0, (bad.size, bad[:8], native.reshape(-1)[bad[:4]], want.reshape(-1)[bad[:4]])


def test_minilora_reads_what_bitsandbytes_quantizes():
    """The other way, for a fresh state (the golden tests hold fixed ones)."""
    x = torch.randn(70, 90)
    packed, qs = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    st = QuantState.from_dict({k: v.numpy() for k, v in qs.as_dict(packed=True).items()})
    ours = dequantize_4bit(packed.numpy().reshape(-1), st)
    assert np.array_equal(ours.view(np.uint32), default_dequantize(packed, qs).numpy().view(np.uint32))

"""Golden vectors for minilora.quant, made by bitsandbytes 0.50.2 (torch CPU).

Uses bitsandbytes' pure-PyTorch "default" kernels, reached by redispatching the custom ops on
CompositeExplicitAutograd (docs/facts.md §7): the native CPU 4-bit dequantize is wrong on AVX-512 machines for
2-D inputs whose last dimension is a multiple of 16 but not of the blocksize, and the native 8-bit
quantize approximates through a lookup table. Run with TORCHDYNAMO_DISABLE=1::

    TORCHDYNAMO_DISABLE=1 PYTHONPATH=. /work/goldenv/bin/python tools/make_golden.py quant

Writes tests/golden/quant.npz. The inputs come from ``tools/golden/_inputs.py`` (``quant_inputs``) and are
pinned by their SHA-256 (``<key>_x_sha256``): the tests rebuild them. The inputs earlier versions of this
file stored in full (``<case>_x``, ``i8_<name>_t<thr>_x``, ``mm_x``, ``mm_w``) are still stored, byte for byte
as before, for the tests that read them (tests/testing); new inputs are not. For double quantization
bitsandbytes takes torch's float32 mean as the offset while minilora takes the correctly rounded mean, so
the file holds both bitsandbytes' own result (``*_bnb``) and its result when fed minilora's offset
(``*_exact``). Further groups:

* ``dynmap_grid_json``: ``create_dynamic_map(signed, max_exponent_bits, total_bits)`` over a grid of
  arguments — for each, the error class bitsandbytes raises or the size and SHA-256 of its map — and a few
  maps in full (``dynmap_<signed>_<max_exponent_bits>_<total_bits>``);
* ``qsd_<case>@<key>`` + ``qsd_<case>_keys``: ``QuantState.as_dict(packed=True)`` of bitsandbytes states,
  key for key (``_keys`` is the JSON list of keys in bitsandbytes' order). ``qsd_<4bit case>`` (and
  ``..._dq``, nested) are the states of the ``*_exact`` vectors above; ``qsd_native_<case>`` are states
  made by ``bitsandbytes.functional.quantize_4bit`` itself (native kernels, torch's mean as offset), with
  their packed codes (``_packed``) and the weight bitsandbytes' pure-PyTorch kernels dequantize from them
  (``_deq``);
* ``{mm,mmk1,mmbig}_t<threshold>_*``: LLM.int8 matmul pieces; ``int_part`` is bitsandbytes'
  ``int8_mm_dequant`` (its constant 6.200124e-05).
"""

from __future__ import annotations

import json
from pathlib import Path

import bitsandbytes as bnb  # noqa: F401  (registers the ops)
import numpy as np
import torch
from bitsandbytes import functional as F

from golden._inputs import CASES_4BIT, CASES_BW8, digest, quant_inputs
from golden._meta import meta

KEYSET = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


def op(name: str, *args):
    return getattr(torch.ops.bitsandbytes, name).default.redispatch(KEYSET, *args)


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def n(a) -> np.ndarray:
    return a.detach().cpu().numpy().copy()


def put_x(out: dict, key: str, x: np.ndarray, stored: tuple[str, ...] = ()) -> None:
    """Pin an input by its digest (the tests rebuild it from tools/golden/_inputs.py); ``stored``: the keys
    under which earlier versions of this file also stored it in full (tests/testing reads them)."""
    out[f"{key}_x_sha256"] = digest(x)
    for name in stored:
        out[name] = x.astype(np.float32)


def put_state_dict(out: dict, key: str, qs_dict: dict) -> None:
    """Store ``QuantState.as_dict(packed=True)``: every tensor under ``qsd_<key>@<name>``, the key order."""
    names = list(qs_dict)
    assert all(isinstance(v, torch.Tensor) for v in qs_dict.values()), names
    out[f"qsd_{key}_keys"] = np.array(json.dumps(names))
    for name, v in qs_dict.items():
        out[f"qsd_{key}@{name}"] = n(v)


def dequant_default(packed: torch.Tensor, st: F.QuantState) -> torch.Tensor:
    """bitsandbytes' ``dequantize_4bit`` of a state, computed with its pure-PyTorch kernels."""
    absmax = st.absmax
    if st.nested:
        absmax = op("dequantize_blockwise", absmax, st.state2.absmax, st.state2.code, st.state2.blocksize,
                    torch.float32) + st.offset
    return op("dequantize_4bit", packed, absmax, st.blocksize, st.quant_type, list(st.shape), st.dtype)


def four_bit(out: dict, X: dict) -> None:
    code8 = F.create_dynamic_map().float()
    for qt in ("nf4", "fp4"):
        code = F.get_4bit_type(qt, device="cpu")
        out[f"{qt}_code"] = n(code)
        for name, shape, bs, dq in CASES_4BIT:
            key = f"{qt}_{name}"
            x = X[key]
            packed, absmax = op("quantize_4bit", t(x), bs, qt, torch.uint8)
            deq = op("dequantize_4bit", packed, absmax, bs, qt, list(shape), torch.float32)
            put_x(out, key, x, stored=(f"{key}_x",))
            out[f"{key}_bs"] = np.int64(bs)
            out[f"{key}_packed"], out[f"{key}_absmax"] = n(packed).reshape(-1), n(absmax)
            out[f"{key}_deq"] = n(deq)
            # the state bitsandbytes.functional.quantize_4bit builds around these kernels' output
            st = F.QuantState(absmax=absmax, shape=torch.Size(shape), dtype=torch.float32, blocksize=bs,
                              code=code, quant_type=qt)
            assert torch.equal(dequant_default(packed, st), deq)
            put_state_dict(out, key, st.as_dict(packed=True))
            if not dq:
                continue
            # bitsandbytes' own double quantization (functional.quantize_4bit with compress_statistics)
            _, st = F.quantize_4bit(t(x), blocksize=bs, compress_statistics=True, quant_type=qt)
            q8, _ = op("quantize_blockwise", absmax - st.offset, code8, 256)   # default kernel: exact nearest
            a2 = st.state2.absmax
            rec = op("dequantize_blockwise", q8, a2, code8, 256, torch.float32) + st.offset
            out[f"{key}_dq_offset_bnb"] = np.float32(st.offset.item())
            out[f"{key}_dq_q_bnb"], out[f"{key}_dq_absmax2_bnb"] = n(q8), n(a2)
            deq_bnb = op("dequantize_4bit", packed, rec, bs, qt, list(shape), torch.float32)
            out[f"{key}_dq_deq_bnb"] = n(deq_bnb)
            # the same with the correctly rounded offset minilora takes
            off = torch.tensor(np.float32(np.mean(n(absmax).astype(np.float64))))
            q8e, a2e = op("quantize_blockwise", absmax - off, code8, 256)
            rece = op("dequantize_blockwise", q8e, a2e, code8, 256, torch.float32) + off
            out[f"{key}_dq_offset_exact"] = np.float32(off.item())
            out[f"{key}_dq_q_exact"], out[f"{key}_dq_absmax2_exact"] = n(q8e), n(a2e)
            out[f"{key}_dq_absmax_exact"] = n(rece)
            deq_exact = op("dequantize_4bit", packed, rece, bs, qt, list(shape), torch.float32)
            out[f"{key}_dq_deq_exact"] = n(deq_exact)
            # that nested state as bitsandbytes.functional.quantize_4bit / quantize_blockwise build it
            state2 = F.QuantState(absmax=a2e, code=code8.clone(), blocksize=256, dtype=torch.float32)
            st = F.QuantState(absmax=q8e, shape=torch.Size(shape), dtype=torch.float32, blocksize=bs, code=code,
                              quant_type=qt, offset=off, state2=state2)
            assert torch.equal(dequant_default(packed, st), deq_exact)
            put_state_dict(out, f"{key}_dq", st.as_dict(packed=True))


#: states made by bitsandbytes.functional.quantize_4bit itself: (input, blocksize, quant_type, nested, dtype)
NATIVE = [("nf4_odd37_bs64", 64, "nf4", True, "float32"), ("fp4_m33x65_bs128", 128, "fp4", True, "float32"),
          ("nf4_t3x5x7_bs32", 32, "nf4", False, "float32"), ("nf4_m4x80_bs64", 64, "nf4", True, "float32"),
          ("fp4_zerotail_bs64", 64, "fp4", False, "float32"), ("nf4_m64x48_bs256", 256, "nf4", True, "float16"),
          ("fp4_edge_bs64", 64, "fp4", True, "bfloat16")]


def native_states(out: dict, X: dict) -> None:
    for src, bs, qt, nested, dtype in NATIVE:
        key = f"native_{src}_{'dq_' if nested else ''}{dtype}"
        x = t(X[src]).to(getattr(torch, dtype))
        packed, st = F.quantize_4bit(x, blocksize=bs, compress_statistics=nested, quant_type=qt)
        out[f"qsd_{key}_packed"] = n(packed).reshape(-1)
        out[f"qsd_{key}_deq"] = n(dequant_default(packed, st).float())       # exact in float32
        out[f"qsd_{key}_src"] = np.array(src)
        put_state_dict(out, key, st.as_dict(packed=True))


#: create_dynamic_map arguments beyond the grid: bigger maps, floats, bools
DYNMAP_EXTRA = [(True, 7, 12), (True, 4, 12), (True, 7, 16), (False, 11, 12), (False, 15, 16), (True, 7, 8.0),
                (False, 7, 8.0), (True, 7, 9.0), (True, 7, 8.5), (True, 7.0, 8), (True, True, 8), (False, 0, 1),
                (True, 1, 1), (True, 12, 8), (False, 2, 3)]
#: maps stored in full
DYNMAP_FULL = [(True, 8, 8), (True, 3, 4), (True, 1, 8), (False, 3, 4), (True, 12, 8)]


def dynamic_maps(out: dict) -> None:
    grid = [(s, m, b) for s in (True, False) for m in range(-1, 10) for b in range(0, 11)] + DYNMAP_EXTRA
    rows = []
    for signed, m, b in grid:
        row = {"signed": signed, "max_exponent_bits": m, "total_bits": b}
        try:
            v = n(F.create_dynamic_map(signed, m, b))
        except Exception as err:  # noqa: BLE001  (recording which error bitsandbytes raises)
            row["error"] = type(err).__name__
        else:
            row["size"], row["sha256"] = int(v.size), bytes(digest(v)).hex()
        rows.append(row)
    out["dynmap_grid_json"] = np.array(json.dumps(rows))
    for signed, m, b in DYNMAP_FULL:
        out[f"dynmap_{int(signed)}_{m}_{b}"] = n(F.create_dynamic_map(signed, m, b))


def maps(out: dict) -> None:
    out["normal_map"] = n(F.create_normal_map())
    out["normal_map_sym"] = n(F.create_normal_map(use_extra_value=False))
    out["dynamic_map"] = n(F.create_dynamic_map(signed=True))
    out["dynamic_map_unsigned"] = n(F.create_dynamic_map(signed=False))
    dynamic_maps(out)


def blockwise8(out: dict, X: dict) -> None:
    code = F.create_dynamic_map().float()
    for name, _shape, bs in CASES_BW8:
        key = f"bw8_{name}"
        x = X[key]
        q, absmax = op("quantize_blockwise", t(x), code, bs)
        deq = op("dequantize_blockwise", q, absmax, code, bs, torch.float32)
        put_x(out, key, x, stored=(f"{key}_x",))
        out[f"{key}_bs"], out[f"{key}_q"] = np.int64(bs), n(q)
        out[f"{key}_absmax"], out[f"{key}_deq"] = n(absmax), n(deq)


def int8(out: dict, X: dict) -> None:
    for name in ("m", "row", "plain"):
        x16 = X[f"i8_{name}"]
        put_x(out, f"i8_{name}", x16, stored=(f"i8_{name}_t0_x", f"i8_{name}_t6_x"))
        for thr in (0.0, 6.0):
            ca, sca, cols = op("int8_vectorwise_quant", t(x16.copy()), thr)
            key = f"i8_{name}_t{int(thr)}"
            out[f"{key}_CA"], out[f"{key}_SCA"] = n(ca), n(sca)
            out[f"{key}_cols"] = np.zeros(0, np.int64) if cols is None else n(cols).astype(np.int64)
            out[f"{key}_deq"] = n(op("int8_vectorwise_dequant", ca, sca))
    # LLM.int8 matmul pieces, y = x wᵀ (x float32, w (n, k)): outlier features; k = 1; sums above 2^24
    for case, thresholds in (("mm", (0.0, 6.0)), ("mmk1", (0.0, 6.0)), ("mmbig", (0.0,))):
        x, w = X[f"{case}_x"], X[f"{case}_w"]
        put_x(out, f"{case}_x", x, stored=("mm_x",) if case == "mm" else ())
        put_x(out, f"{case}_w", w, stored=("mm_w",) if case == "mm" else ())
        x16, w16 = t(x).half(), t(w).half()
        for thr in thresholds:
            ca, sca, cols = op("int8_vectorwise_quant", x16.clone(), thr)
            cb, scb, _ = op("int8_vectorwise_quant", w16.clone(), 0.0)
            acc = torch.matmul(ca.long(), cb.long().t()).to(torch.int32)          # exact (avoids _int_mm)
            int_part = op("int8_mm_dequant", acc, sca, scb, torch.float32, None)
            cols = torch.zeros(0, dtype=torch.long) if cols is None else cols
            outlier = t(x)[:, cols] @ op("int8_vectorwise_dequant", cb[:, cols].contiguous(), scb).t()
            key = f"{case}_t{int(thr)}"
            out[f"{key}_SCA"], out[f"{key}_cols"] = n(sca), n(cols).astype(np.int64)
            out[f"{key}_SCB"], out[f"{key}_acc"] = n(scb), n(acc)
            if case != "mmbig":            # its 40 kB of codes add nothing the other cases do not check
                out[f"{key}_CA"], out[f"{key}_CB"] = n(ca), n(cb)
            out[f"{key}_int_part"], out[f"{key}_outlier_part"] = n(int_part), n(outlier)
            out[f"{key}_y"] = n(int_part + outlier)


def make(out_dir: Path) -> list[Path]:
    codes = {qt: n(F.get_4bit_type(qt, device="cpu")) for qt in ("nf4", "fp4")}
    X = quant_inputs(codes["nf4"], codes["fp4"], n(F.create_dynamic_map()))
    out: dict[str, np.ndarray] = {}
    maps(out)
    four_bit(out, X)
    native_states(out, X)
    blockwise8(out, X)
    int8(out, X)
    path = Path(out_dir) / "quant.npz"
    np.savez_compressed(path, **out, **meta("tools/golden/quant.py"))
    return [path]

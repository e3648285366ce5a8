"""Golden vectors for minilora.quant, made by bitsandbytes 0.50.2 (torch CPU).

Uses bitsandbytes' pure-PyTorch "default" kernels, reached by redispatching the custom ops on
CompositeExplicitAutograd (FACTS §7): the native CPU 4-bit dequantize is wrong on AVX-512 machines for
2-D inputs whose last dimension is a multiple of 16 but not of the blocksize, and the native 8-bit
quantize approximates through a lookup table. Run with TORCHDYNAMO_DISABLE=1::

    TORCHDYNAMO_DISABLE=1 PYTHONPATH=. /work/goldenv/bin/python tools/make_golden.py quant

Writes tests/golden/quant.npz. For double quantization bitsandbytes takes torch's float32 mean as the
offset while minilora takes the correctly rounded mean, so the file holds both bitsandbytes' own result
(``*_bnb``) and its result when fed minilora's offset (``*_exact``).
"""

from __future__ import annotations

from pathlib import Path

import bitsandbytes as bnb  # noqa: F401  (registers the ops)
import numpy as np
import torch
from bitsandbytes import functional as F

KEYSET = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


def op(name: str, *args):
    return getattr(torch.ops.bitsandbytes, name).default.redispatch(KEYSET, *args)


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def n(a) -> np.ndarray:
    return a.detach().cpu().numpy().copy()


# (name, shape, blocksize, double-quantize): odd lengths, partial blocks, 1-D/2-D/3-D shapes
CASES_4BIT = [
    ("v4096_bs64", (4096,), 64, True),
    ("odd37_bs64", (37,), 64, True),
    ("m33x65_bs128", (33, 65), 128, True),
    ("t3x5x7_bs32", (3, 5, 7), 32, True),
    ("m64x48_bs256", (64, 48), 256, True),
    ("m4x80_bs64", (4, 80), 64, False),          # the AVX-512 native-kernel bug shape
    ("v5001_bs4096", (5001,), 4096, True),
    ("m128x96_bs4096", (128, 96), 4096, False),
    ("m300x129_bs64", (300, 129), 64, True),     # 605 blocks: 3 second-level blocks, the last partial
    ("edge_bs64", (7, 64), 64, True),            # zero block, midpoint ties, ±1, tiny values
    ("zerotail_bs64", (129,), 64, True),         # a partial block of one 0.0: absmax 1e-38
]


def make_x(name: str, shape: tuple[int, ...], code: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = int(np.prod(shape))
    if name.startswith("edge"):
        srt = np.sort(code)
        mid = ((srt[:-1] + srt[1:]) / np.float32(2)).astype(np.float32)
        rows = [
            np.zeros(64, np.float32),                                                         # absmax 0
            np.concatenate([[1.0], mid, -mid, np.zeros(64 - 1 - 2 * mid.size)]),      # exact midpoints
            np.concatenate([[1.0], np.nextafter(mid, 2), np.nextafter(mid, -2),
                            np.zeros(64 - 1 - 2 * mid.size)]),
            np.concatenate([[-1.0], srt, -srt, np.zeros(64 - 1 - 2 * srt.size)]),             # exact levels
            rng.standard_normal(64) * 1e-30,                                                  # tiny values
            rng.standard_normal(64) * 1e4,
            np.concatenate([rng.standard_normal(60) * 0.02, [0.9, -40.0, 0.0, 3.0]]),       # an outlier
        ]
        return np.stack(rows).astype(np.float32).reshape(shape)
    x = (rng.standard_normal(size) * rng.choice([0.02, 1.0, 7.0])).astype(np.float32)
    k = max(1, size // 500)
    x[rng.choice(size, k, replace=False)] *= np.float32(30)                   # planted outliers
    if name.startswith("zerotail"):
        x[-1] = 0.0
    return x.reshape(shape)


def four_bit(out: dict, rng: np.random.Generator) -> None:
    code8 = F.create_dynamic_map().float()
    for qt in ("nf4", "fp4"):
        code = n(F.get_4bit_type(qt, device="cpu"))
        out[f"{qt}_code"] = code
        for name, shape, bs, dq in CASES_4BIT:
            x = make_x(name, shape, code, rng)
            packed, absmax = op("quantize_4bit", t(x), bs, qt, torch.uint8)
            deq = op("dequantize_4bit", packed, absmax, bs, qt, list(shape), torch.float32)
            key = f"{qt}_{name}"
            out[f"{key}_x"], out[f"{key}_bs"] = x, np.int64(bs)
            out[f"{key}_packed"], out[f"{key}_absmax"] = n(packed).reshape(-1), n(absmax)
            out[f"{key}_deq"] = n(deq)
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


def maps(out: dict) -> None:
    out["normal_map"] = n(F.create_normal_map())
    out["normal_map_sym"] = n(F.create_normal_map(use_extra_value=False))
    out["dynamic_map"] = n(F.create_dynamic_map(signed=True))
    out["dynamic_map_unsigned"] = n(F.create_dynamic_map(signed=False))


def blockwise8(out: dict, rng: np.random.Generator) -> None:
    code = F.create_dynamic_map().float()
    srt = n(code)
    mid = ((srt[:-1] + srt[1:]) / np.float32(2)).astype(np.float32)
    cases = [("v10000_bs4096", (10000,), 4096), ("m3x1000_bs256", (3, 1000), 256), ("v513_bs64", (513,), 64),
             ("mid_bs4096", (2 * mid.size + 1,), 4096)]
    for name, shape, bs in cases:
        if name.startswith("mid"):
            x = np.concatenate([[1.0], mid, np.nextafter(mid, 2)]).astype(np.float32)
        else:
            x = (rng.standard_normal(int(np.prod(shape))) * 0.5).astype(np.float32).reshape(shape)
            x.reshape(-1)[::97] = 0.0
        q, absmax = op("quantize_blockwise", t(x), code, bs)
        deq = op("dequantize_blockwise", q, absmax, code, bs, torch.float32)
        key = f"bw8_{name}"
        out[f"{key}_x"], out[f"{key}_bs"], out[f"{key}_q"] = x, np.int64(bs), n(q)
        out[f"{key}_absmax"], out[f"{key}_deq"] = n(absmax), n(deq)


def int8_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = (rng.standard_normal((12, 40)) * 1.5).astype(np.float16)
    x[:, 3] *= 20                           # an outlier feature
    x[2, 7] = 6.0                           # exactly the threshold: an outlier
    x[4, 9] = np.float16(5.996)             # just below
    x[5, 11] = -6.0
    x[6] = 0.0                              # an all-zero row
    x[7] = np.clip(x[7], -3.9, 3.9)
    x[7, :4] = [4.0, 2.0, -2.0, 1.0]        # scale 31.75: ±2 → ±63.5, a tie (→ ±64, half to even)
    x[8] = np.clip(x[8], -1.9, 1.9)
    x[8, :3] = [2.0, 1.0, -1.0]             # scale 63.5: ±1 → ±63.5
    one_row = (rng.standard_normal((1, 24)) * 3).astype(np.float16)
    one_row[0, 5] = 9.0
    return {"m": x, "row": one_row, "plain": (rng.standard_normal((9, 33)) * 0.1).astype(np.float16)}


def int8(out: dict, rng: np.random.Generator) -> None:
    for name, x16 in int8_inputs(rng).items():
        for thr in (0.0, 6.0):
            ca, sca, cols = op("int8_vectorwise_quant", t(x16.copy()), thr)
            key = f"i8_{name}_t{int(thr)}"
            out[f"{key}_x"] = x16.astype(np.float32)
            out[f"{key}_CA"], out[f"{key}_SCA"] = n(ca), n(sca)
            out[f"{key}_cols"] = np.zeros(0, np.int64) if cols is None else n(cols).astype(np.int64)
            out[f"{key}_deq"] = n(op("int8_vectorwise_dequant", ca, sca))
    # LLM.int8 matmul pieces, y = x wᵀ (x float32 with outlier features, w (n, k))
    x = (rng.standard_normal((16, 64)) * 1.0).astype(np.float32)
    x[:, [5, 40]] *= 40.0
    x[3, 17] = 6.0
    w = (rng.standard_normal((24, 64)) * 0.05).astype(np.float32)
    x16, w16 = t(x).half(), t(w).half()
    for thr in (0.0, 6.0):
        ca, sca, cols = op("int8_vectorwise_quant", x16.clone(), thr)
        cb, scb, _ = op("int8_vectorwise_quant", w16.clone(), 0.0)
        acc = torch.matmul(ca.long(), cb.long().t()).to(torch.int32)          # exact (avoids _int_mm)
        int_part = op("int8_mm_dequant", acc, sca, scb, torch.float32, None)
        cols = torch.zeros(0, dtype=torch.long) if cols is None else cols
        outlier = t(x)[:, cols] @ op("int8_vectorwise_dequant", cb[:, cols].contiguous(), scb).t()
        key = f"mm_t{int(thr)}"
        out["mm_x"], out["mm_w"] = x, w
        out[f"{key}_CA"], out[f"{key}_SCA"], out[f"{key}_cols"] = n(ca), n(sca), n(cols).astype(np.int64)
        out[f"{key}_CB"], out[f"{key}_SCB"], out[f"{key}_acc"] = n(cb), n(scb), n(acc)
        out[f"{key}_int_part"], out[f"{key}_outlier_part"] = n(int_part), n(outlier)
        out[f"{key}_y"] = n(int_part + outlier)


def make(out_dir: Path) -> list[Path]:
    rng = np.random.default_rng(20240603)
    out: dict[str, np.ndarray] = {}
    maps(out)
    four_bit(out, rng)
    blockwise8(out, rng)
    int8(out, rng)
    path = Path(out_dir) / "quant.npz"
    np.savez_compressed(path, **out)
    return [path]

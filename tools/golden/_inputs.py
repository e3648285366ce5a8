"""Inputs shared by the golden generators and the tests (NumPy only, so tests can import it).

The generators feed these arrays to the reference libraries; the golden files pin each one by its
SHA-256 (:func:`digest`) instead of storing it, and the tests rebuild them here and check the digest
first. That keeps ``tests/golden/*.npz`` small: random float32 inputs do not compress.
"""

from __future__ import annotations

import hashlib

import numpy as np

N_RANDOM = 1 << 20
SEED = 20261128
#: seed of every input of tools/golden/quant.py (drawn in one fixed order: see :func:`quant_inputs`)
QUANT_SEED = 20240603

#: 4-bit cases (name, shape, blocksize, double-quantize): odd lengths, partial blocks, 1-D/2-D/3-D shapes
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
#: 8-bit block-wise cases (name, shape, blocksize)
CASES_BW8 = [("v10000_bs4096", (10000,), 4096), ("m3x1000_bs256", (3, 1000), 256), ("v513_bs64", (513,), 64),
             ("mid_bs4096", (511,), 4096)]


def digest(a: np.ndarray) -> np.ndarray:
    """SHA-256 of an array's dtype, shape and bytes, as 32 uint8 (what the golden files store)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


def random_float32_bits(n: int = N_RANDOM, seed: int = SEED) -> np.ndarray:
    """``n`` float32 bit patterns (uint32): half uniform over all 2^32 patterns, half with exponent
    fields 95..151 (|x| from 2^-32 to 2^24, where FP16 and FP8 round, overflow and go subnormal)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    uniform = rng.integers(0, 2**32, size=half, dtype=np.uint64).astype(np.uint32)
    sign = rng.integers(0, 2, size=n - half, dtype=np.uint64).astype(np.uint32) << np.uint32(31)
    expo = rng.integers(95, 152, size=n - half, dtype=np.uint64).astype(np.uint32) << np.uint32(23)
    mant = rng.integers(0, 1 << 23, size=n - half, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([uniform, sign | expo | mant])


def _four_bit_x(name: str, shape: tuple[int, ...], code: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def _bw8_x(name: str, shape: tuple[int, ...], dynamic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name.startswith("mid"):
        srt = np.asarray(dynamic, np.float32)
        mid = ((srt[:-1] + srt[1:]) / np.float32(2)).astype(np.float32)
        return np.concatenate([[1.0], mid, np.nextafter(mid, 2)]).astype(np.float32)
    x = (rng.standard_normal(int(np.prod(shape))) * 0.5).astype(np.float32).reshape(shape)
    x.reshape(-1)[::97] = 0.0
    return x


def _int8_x(rng: np.random.Generator) -> dict[str, np.ndarray]:
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


def quant_inputs(nf4: np.ndarray, fp4: np.ndarray, dynamic: np.ndarray) -> dict[str, np.ndarray]:
    """Every input of tools/golden/quant.py, drawn from one generator in a fixed order.

    ``nf4``, ``fp4``, ``dynamic`` are the codebooks (bitsandbytes' or minilora's: they are equal bit for
    bit, which the golden tests check); the edge cases are built on their midpoints. Keys:
    ``"{nf4|fp4}_{case}"`` (float32, :data:`CASES_4BIT`), ``"bw8_{case}"`` (float32, :data:`CASES_BW8`),
    ``"i8_{m|row|plain}"`` (float16, vector-wise int8), and ``"{mm|mmk1|mmbig}_{x|w}"`` (float32, LLM.int8
    matmul: outlier features; an inner dimension of 1; int32 sums above 2^24, which float32 rounds).
    New inputs go at the end, so that the earlier ones (and their golden vectors) stay the same.
    """
    rng = np.random.default_rng(QUANT_SEED)
    out: dict[str, np.ndarray] = {}
    for qt, code in (("nf4", nf4), ("fp4", fp4)):
        for name, shape, _bs, _dq in CASES_4BIT:
            out[f"{qt}_{name}"] = _four_bit_x(name, shape, code, rng)
    for name, shape, _bs in CASES_BW8:
        out[f"bw8_{name}"] = _bw8_x(name, shape, dynamic, rng)
    for name, x16 in _int8_x(rng).items():
        out[f"i8_{name}"] = x16
    x = (rng.standard_normal((16, 64)) * 1.0).astype(np.float32)
    x[:, [5, 40]] *= 40.0
    x[3, 17] = 6.0
    out["mm_x"], out["mm_w"] = x, (rng.standard_normal((24, 64)) * 0.05).astype(np.float32)
    out["mmk1_x"] = (rng.standard_normal((5, 1)) * 3).astype(np.float32)
    out["mmk1_w"] = rng.standard_normal((3, 1)).astype(np.float32)
    k = 4096                           # aligned signs: |acc| up to 127² · 4096 > 2^26, where float32 rounds
    out["mmbig_x"] = (np.sign(rng.standard_normal((4, k))) * rng.uniform(0.7, 1.0, (4, k))).astype(np.float32)
    align = np.sign(out["mmbig_x"][[0, 1, 2, 3, 0, 1]]) * np.array([1, -1, 1, -1, -1, 1])[:, None]
    w = rng.uniform(0.7, 1.0, (6, k)) * align
    out["mmbig_w"] = w.astype(np.float32)
    return out

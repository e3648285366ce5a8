"""bitsandbytes' QuantState dictionaries: ``as_dict`` / ``from_dict``, key for key and byte for byte.

bitsandbytes 0.50.2 saves a 4-bit weight's state (``Params4bit``, transformers' 4-bit checkpoints) as a flat
dict (docs/facts.md §10): arrays ``absmax`` (float32 (nblocks,); the uint8 codes when nested), ``quant_map``
(float32 (16,)) and, nested, ``nested_absmax`` (float32 (ceil(nblocks / 256),)), ``nested_quant_map``
(float32 (256,)); the plain values — ``quant_type``, ``blocksize``, ``dtype``, ``shape`` and, nested,
``nested_blocksize``, ``nested_dtype``, ``nested_offset`` — are packed (``packed=True``, what safetensors can
hold) as ``json.dumps`` of a dict in that order, UTF-8 encoded, in one uint8 array named
``quant_state.bitsandbytes__nf4`` (or ``__fp4``). Example for a nested NF4 state of a (33, 65) weight::

    {"quant_type": "nf4", "blocksize": 128, "dtype": "float32", "shape": [33, 65], "nested_blocksize": 256,
     "nested_dtype": "float32", "nested_offset": 47.569942474365234}

>>> import numpy as np
>>> from minilora.quant import QuantState, quantize_4bit
>>> _, st = quantize_4bit(np.ones(100, np.float32), quant_type="nf4", compress_statistics=True)
>>> d = st.as_dict(packed=True)
>>> list(d)
['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map', 'quant_state.bitsandbytes__nf4']
>>> json.loads(bytes(d["quant_state.bitsandbytes__nf4"]))["shape"], QuantState.from_dict(d) == st
([100], True)

In a transformers checkpoint the keys follow the weight's name (``….weight.absmax``,
``….weight.quant_state.bitsandbytes__nf4``); reading strips the prefixes, as bitsandbytes does.

Departures from bitsandbytes' ``from_dict``: it does not modify the dict it is given, and it checks what
bitsandbytes trusts — the key set, dtypes and shapes against ``shape`` and ``blocksize``, finite values, and
that ``quant_map`` is the NF4/FP4 table (bitsandbytes dequantizes with its built-in table whatever the map
says, so minilora refuses a map it would decode differently) — raising ValueError naming the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from minilora import backend
from minilora.quant.double_quant import BLOCKWISE_SIZES
from minilora.quant.nf4 import QUANT_TYPES, get_4bit_code
from minilora.quant.state import DTYPE_NAMES, QuantState, check_blocksize, check_choice, dtype_name

__all__ = ["state_as_dict", "state_from_dict", "STATE_DICT_KEYS", "PACKED_PREFIX"]

#: every key bitsandbytes' QuantState.from_dict accepts (after prefixes are stripped)
STATE_DICT_KEYS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state", "quant_type",
                   "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset")
_NESTED_KEYS = ("nested_absmax", "nested_quant_map", "nested_blocksize", "nested_dtype", "nested_offset")
#: the name of the packed entry, + quant_type
PACKED_PREFIX = "quant_state.bitsandbytes__"


def state_as_dict(state: QuantState, packed: bool = False) -> dict[str, Any]:
    """:meth:`QuantState.as_dict` (see there)."""
    d: dict[str, Any] = {
        "quant_type": state.quant_type,
        "absmax": np.array(backend.to_numpy(state.absmax), copy=True),
        "blocksize": int(state.blocksize),
        "quant_map": np.array(backend.to_numpy(state.code), copy=True),
        "dtype": dtype_name(state.dtype),
        "shape": tuple(int(v) for v in state.shape),
    }
    if state.nested:
        d.update({
            "nested_absmax": np.array(backend.to_numpy(state.state2.absmax), copy=True),
            "nested_blocksize": int(state.state2.blocksize),
            "nested_quant_map": np.array(backend.to_numpy(state.state2.code), copy=True),
            "nested_dtype": dtype_name(state.state2.dtype),
            "nested_offset": float(state.offset),
        })
    if not packed:
        return d
    if state.quant_type not in QUANT_TYPES:
        raise ValueError(f"as_dict(packed=True) is bitsandbytes' format for 4-bit states (nf4, fp4), "
                         f"got quant_type {state.quant_type!r}; use packed=False")
    arrays = {k: v for k, v in d.items() if isinstance(v, np.ndarray)}
    plain = {k: v for k, v in d.items() if not isinstance(v, np.ndarray)}
    arrays[PACKED_PREFIX + state.quant_type] = np.frombuffer(json.dumps(plain).encode("utf-8"), np.uint8).copy()
    return arrays


def _dict_error(msg: str) -> ValueError:
    return ValueError(f"quant state dict: {msg}")


def _unpack_json(key: str, value: Any) -> dict[str, Any]:
    """The JSON object packed into ``value`` (a uint8 array of UTF-8 bytes), as bitsandbytes packs it."""
    arr = np.asarray(backend.to_numpy(value))
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise _dict_error(f"{key!r} must be a 1-D uint8 array of UTF-8 JSON bytes, got {arr.dtype} "
                          f"of shape {arr.shape}")
    try:
        plain = json.loads(arr.tobytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _dict_error(f"{key!r} is not UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise _dict_error(f"{key!r} is not valid JSON ({err.msg} at byte {err.pos})") from None
    if not isinstance(plain, dict):
        raise _dict_error(f"{key!r} must hold a JSON object, got {type(plain).__name__}")
    return plain


def _flat_items(qs_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Unpack the packed entry (if any) and strip key prefixes; the input mapping is left untouched."""
    items = dict(qs_dict)
    packed = [k for k, v in items.items() if "quant_state" in k and not isinstance(v, str)]
    if "quant_type" not in items:
        if not packed:
            raise _dict_error("expected packed or unpacked quant_state items, found neither (no 'quant_type' "
                              f"and no '{PACKED_PREFIX}nf4|fp4' key); keys: {sorted(items)}")
        suffixes = [k.split(".")[-1] for k in packed]
        if len(packed) != 1 or suffixes[0] not in ("bitsandbytes__nf4", "bitsandbytes__fp4"):
            raise _dict_error(f"there must be exactly one quant_state item ending in bitsandbytes__nf4 or "
                              f"bitsandbytes__fp4, found {packed}")
    if len(packed) == 1:
        key = packed[0]
        plain = _unpack_json(key, items.pop(key))
        clash = sorted(set(plain) & {k.split(".")[-1] for k in items})
        if clash:
            raise _dict_error(f"{clash} appear both in {key!r} and as separate keys")
        if plain.get("quant_type") != key.split("__")[-1]:
            raise _dict_error(f"{key!r} holds quant_type {plain.get('quant_type')!r}, its name says "
                              f"{key.split('__')[-1]!r}")
        items.update(plain)
    flat: dict[str, Any] = {}
    for k, v in items.items():
        name = k.split(".")[-1]
        if name in flat:
            raise _dict_error(f"two keys end in {name!r}")
        flat[name] = v
    unknown = sorted(set(flat) - set(STATE_DICT_KEYS))
    if unknown:
        raise _dict_error(f"unknown keys {unknown}; allowed: {list(STATE_DICT_KEYS)}")
    need = ["quant_type", "absmax", "blocksize", "quant_map", "dtype", "shape"]
    present = [k for k in _NESTED_KEYS if k in flat]
    if present:
        need += list(_NESTED_KEYS)
    missing = [k for k in need if k not in flat]
    if missing:
        raise _dict_error(f"missing keys {missing}" + (" (a nested state needs all of "
                                                       f"{list(_NESTED_KEYS)})" if present else ""))
    return flat


def _array(flat: dict[str, Any], key: str, dtype: Any, shape: tuple[int, ...], why: str = "") -> Any:
    """``flat[key]`` as a backend array, checked: this dtype and shape, every value finite."""
    arr = np.asarray(backend.to_numpy(flat[key]))
    if arr.dtype != np.dtype(dtype) or arr.shape != shape:
        raise _dict_error(f"{key!r} must be {np.dtype(dtype)} of shape {shape}{why}, got {arr.dtype} of "
                          f"shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise _dict_error(f"{key!r} contains NaN or Inf")
    return backend.asarray(arr)


def _int(flat: dict[str, Any], key: str) -> int:
    v = flat[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise _dict_error(f"{key!r} must be an integer, got {v!r}")
    return int(v)


def _dtype(flat: dict[str, Any], key: str) -> Any:
    name = flat[key]
    if name not in DTYPE_NAMES:
        raise _dict_error(f"{key!r} must be one of {DTYPE_NAMES}, got {name!r}")
    return name if name == "bfloat16" else np.dtype(name)


def state_from_dict(cls: type, qs_dict: Mapping[str, Any]) -> QuantState:
    """:meth:`QuantState.from_dict` (see there); ``cls`` is the class to build."""
    if not isinstance(qs_dict, Mapping):
        raise TypeError(f"qs_dict must be a mapping of keys to arrays, got {type(qs_dict).__name__}")
    flat = _flat_items(qs_dict)
    try:
        quant_type = check_choice(flat["quant_type"], QUANT_TYPES, "'quant_type'")
        blocksize = check_blocksize(flat["blocksize"], "'blocksize'")
    except ValueError as err:
        raise _dict_error(str(err)) from None
    shape = flat["shape"]
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in shape):
        raise _dict_error(f"'shape' must be a list of non-negative integers, got {shape!r}")
    shape = tuple(int(v) for v in shape)
    nblocks = -(-math.prod(shape) // blocksize)
    nested = "nested_absmax" in flat
    why = f" for shape {shape} at blocksize {blocksize}"
    absmax = _array(flat, "absmax", np.uint8 if nested else np.float32, (nblocks,),
                    why + (" (nested: uint8 codes)" if nested else ""))
    table = get_4bit_code(quant_type)
    code = _array(flat, "quant_map", np.float32, (16,))
    if not np.array_equal(backend.to_numpy(code).view(np.uint32), table.view(np.uint32)):
        raise _dict_error(f"'quant_map' is not the {quant_type} table; bitsandbytes dequantizes with its "
                          f"built-in table, so a different map cannot be honoured")
    offset = state2 = None
    if nested:
        bs2 = _int(flat, "nested_blocksize")
        if bs2 not in BLOCKWISE_SIZES:
            raise _dict_error(f"'nested_blocksize' must be one of {BLOCKWISE_SIZES}, got {bs2}")
        absmax2 = _array(flat, "nested_absmax", np.float32, (-(-nblocks // bs2),),
                         f" for {nblocks} blocks at nested_blocksize {bs2}")
        code2 = _array(flat, "nested_quant_map", np.float32, (256,))
        off = flat["nested_offset"]
        if isinstance(off, bool) or not isinstance(off, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(off)):
            raise _dict_error(f"'nested_offset' must be a finite number, got {off!r}")
        offset = np.float32(float(off))                     # bitsandbytes: torch.tensor(float(v)), float32
        state2 = cls(absmax=absmax2, shape=(nblocks,), dtype=_dtype(flat, "nested_dtype"), blocksize=bs2,
                     quant_type="dynamic", code=code2)
    return cls(absmax=absmax, shape=shape, dtype=_dtype(flat, "dtype"), blocksize=blocksize,
               quant_type=quant_type, code=code, offset=offset, state2=state2)



"""GPT.from_pretrained / save_pretrained against transformers' GPT2LMHeadModel (golden: tools/golden/gpt2.py).

The golden checkpoints were written by transformers' own ``save_pretrained``; the logits, loss and gradients
by ``GPT2LMHeadModel`` and torch autograd. No torch is needed here.
"""

import json
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
from conftest import GOLDEN, load_golden

from minilora.hf import gpt2 as hfgpt2
from minilora.hf.gpt2 import CheckpointError, hf_shapes, hf_tensor
from minilora.hf.safetensors_io import load_file, write_file
from minilora.nn.gpt import GPT

G = load_golden("gpt2")
CASES = range(int(G["n_cases"]))


def case_dir(i):
    return GOLDEN / "gpt2" / f"case{i}"


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("i", CASES)
def test_float32_logits_equal_transformers(i):
    model = GPT.from_pretrained(case_dir(i))
    assert not model.training and model.dtype == np.float32
    assert bool(model.config.tie_word_embeddings) == bool(G[f"c{i}_tied"])
    logits, _ = model.forward(G[f"c{i}_idx"])
    ref = G[f"c{i}_logits32"]
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert rel_err(logits, ref) < 1e-6


@pytest.mark.parametrize("i", CASES)
def test_float64_loss_and_every_gradient_equal_torch_autograd(i):
    model = GPT.from_pretrained(case_dir(i), dtype="float64").train()
    model.zero_grad()
    logits, loss = model.forward(G[f"c{i}_idx"], G[f"c{i}_targets"])
    model.backward()
    assert abs(loss - float(G[f"c{i}_loss64"])) <= 1e-9 * abs(float(G[f"c{i}_loss64"]))
    assert rel_err(logits, G[f"c{i}_logits64"]) < 1e-9
    grads = model.grads
    names = [k[len(f"c{i}_grad64_"):] for k in G if k.startswith(f"c{i}_grad64_")]
    assert sorted(names) == sorted(hf_shapes(model.config))  # every parameter of the HF model
    for name in names:
        assert rel_err(hf_tensor(grads, name), G[f"c{i}_grad64_{name}"]) < 1e-9, name


@pytest.mark.parametrize("i", CASES)
def test_save_pretrained_round_trip_is_bit_exact(i, tmp_path):
    model = GPT.from_pretrained(case_dir(i))
    model.save_pretrained(tmp_path)
    again = GPT.from_pretrained(tmp_path)
    assert again.config == model.config
    for k, v in model.params.items():
        np.testing.assert_array_equal(again.params[k], v)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["tie_word_embeddings"] == bool(G[f"c{i}_tied"])
    # the file holds what transformers wrote, tensor for tensor (same names, shapes and values)
    ours, theirs = load_file(tmp_path / "model.safetensors"), load_file(case_dir(i) / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k])


def test_shipped_base_gpt_saves_untied(tmp_path):
    import minilora

    base = minilora.load_base_model()
    base.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False and cfg["vocab_size"] == base.config.vocab_size
    assert "lm_head.weight" in load_file(tmp_path / "model.safetensors")
    again = GPT.from_pretrained(tmp_path)
    idx = np.arange(12).reshape(2, 6) % base.config.vocab_size
    np.testing.assert_array_equal(again.forward(idx)[0], base.forward(idx)[0])


def test_gpt2model_layout_without_prefix_and_with_mask_buffers(tmp_path):
    """The original ``gpt2`` upload: keys without ``transformer.``, causal-mask buffers, no lm_head."""
    i = next(i for i in CASES if G[f"c{i}_tied"])
    tensors = load_file(case_dir(i) / "model.safetensors")
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    P = json.loads((case_dir(i) / "config.json").read_text())["n_positions"]
    renamed["h.0.attn.bias"] = np.tril(np.ones((1, 1, P, P), np.uint8))
    write_file(tmp_path / "model.safetensors", renamed)
    shutil.copy(case_dir(i) / "config.json", tmp_path)
    a, b = GPT.from_pretrained(tmp_path), GPT.from_pretrained(case_dir(i))
    for k, v in b.params.items():
        np.testing.assert_array_equal(a.params[k], v)


def test_sharded_checkpoint(tmp_path):
    tensors = load_file(case_dir(0) / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for fname, keys in shards.items():
        write_file(tmp_path / fname, {k: tensors[k] for k in keys})
    index = {"metadata": {"total_size": 0}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(case_dir(0) / "config.json", tmp_path)
    a, b = GPT.from_pretrained(tmp_path), GPT.from_pretrained(case_dir(0))
    for k, v in b.params.items():
        np.testing.assert_array_equal(a.params[k], v)
    # an index that lies about a shard, or points outside the directory
    bad = dict(index, weight_map={**index["weight_map"], names[0]: "model-00002-of-00002.safetensors"})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="does not hold it"):
        GPT.from_pretrained(tmp_path)
    bad = dict(index, weight_map={**index["weight_map"], names[0]: "../model.safetensors"})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="must be a file name in the same directory"):
        GPT.from_pretrained(tmp_path)


def test_half_precision_checkpoint_widens_exactly(tmp_path):
    tensors = load_file(case_dir(0) / "model.safetensors")
    write_file(tmp_path / "model.safetensors", {k: v.astype(np.float16) for k, v in tensors.items()})
    shutil.copy(case_dir(0) / "config.json", tmp_path)
    model = GPT.from_pretrained(tmp_path, dtype="float64")
    np.testing.assert_array_equal(model.params["wte.weight"], tensors["transformer.wte.weight"].astype(np.float16))


def test_loading_holds_at_most_one_extra_copy_of_the_weights():
    """tracemalloc peak while loading the tiny checkpoint, minus the model itself, is below one model."""
    tracemalloc.start()
    try:
        model = GPT.from_pretrained(GOLDEN / "gpt2_tiny")
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    weights = sum(v.nbytes for v in model.params.values())
    assert peak - weights < weights, f"peak {peak} B for {weights} B of weights"


def test_save_refuses_lora_models(tmp_path):
    from minilora.peft import LoraConfig, inject_lora

    model = inject_lora(GPT.from_pretrained(case_dir(0)), LoraConfig(r=2))
    with pytest.raises(CheckpointError, match="merge_and_unload"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


# ----------------------------------------------------------------------------- bad input
def copy_case(tmp_path, i=0):
    d = tmp_path / "ckpt"
    shutil.copytree(case_dir(i), d)
    return d


def edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("field, value", [
    ("scale_attn_by_inverse_layer_idx", True), ("reorder_and_upcast_attn", True), ("add_cross_attention", True),
    ("scale_attn_weights", False), ("activation_function", "gelu"), ("activation_function", "relu"),
    ("layer_norm_epsilon", 1e-6), ("n_inner", 50), ("model_type", "gpt_neo"),
    ("quantization_config", {"quant_method": "bitsandbytes"}), ("tie_word_embeddings", "yes"),
])
def test_config_fields_that_change_the_math_are_refused(tmp_path, field, value):
    d = copy_case(tmp_path)
    edit_config(d, **{field: value})
    with pytest.raises(CheckpointError, match=rf"config.json: {field}="):
        GPT.from_pretrained(d)


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        GPT.from_pretrained(tmp_path)
    shutil.copy(case_dir(0) / "config.json", tmp_path)
    with pytest.raises(CheckpointError, match=r"no model.safetensors .*holds: config.json"):
        GPT.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        hfgpt2.weight_files(tmp_path / "config.json")


def test_pytorch_pickle_is_refused_and_never_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    shutil.copy(case_dir(0) / "config.json", tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: a PyTorch pickle; minilora never unpickles.*"
                                              r"save_pretrained"):
        GPT.from_pretrained(tmp_path)
    assert not marker.exists()


def test_truncated_file(tmp_path):
    d = copy_case(tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"model.safetensors: not a valid safetensors file: the file is truncated"):
        GPT.from_pretrained(d)


def header_of(f):
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def rewrite(f, header, data):
    h = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(h)) + h + data)


@pytest.mark.parametrize("corruption, message", [
    ("length", "runs past the end of the file"),
    ("json", "not valid JSON"),
    ("dtype", "has dtype 'F7'"),
    ("overlap", "overlaps the previous tensor"),
    ("span", "needs .* bytes but data_offsets"),
    ("trailing", "belong to no tensor"),
    ("duplicate", "duplicate key"),
])
def test_corrupted_header(tmp_path, corruption, message):
    d = copy_case(tmp_path)
    f = d / "model.safetensors"
    header, data = header_of(f)
    name = "transformer.wpe.weight"
    if corruption == "length":
        raw = f.read_bytes()
        f.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    elif corruption == "json":
        raw = f.read_bytes()
        f.write_bytes(raw[:9] + b"\x00" + raw[10:])
    elif corruption == "dtype":
        header[name]["dtype"] = "F7"
        rewrite(f, header, data)
    elif corruption == "overlap":
        header[name]["data_offsets"][0] -= 4
        header[name]["data_offsets"][1] -= 4
        rewrite(f, header, data)
    elif corruption == "span":
        header[name]["shape"][0] -= 1
        rewrite(f, header, data)
    elif corruption == "trailing":
        rewrite(f, header, data + b"\x00" * 8)
    elif corruption == "duplicate":
        h = json.dumps(header).encode()
        entry = json.dumps({name: header[name]})[1:-1].encode()
        h = h[:-1] + b"," + entry + b"}"
        f.write_bytes(struct.pack("<Q", len(h)) + h + data)
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(d)


def test_shapes_that_do_not_match_the_config(tmp_path):
    d = copy_case(tmp_path)
    edit_config(d, n_positions=17)
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'transformer.wpe.weight' has shape "
                                              r"\(16, 24\), but config.json .* needs \(17, 24\)"):
        GPT.from_pretrained(d)


def test_missing_and_unexpected_tensors(tmp_path):
    d = copy_case(tmp_path)
    tensors = load_file(d / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    tensors["score.weight"] = np.zeros((2, 24), np.float32)
    write_file(d / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=r"missing \['transformer.h.1.mlp.c_fc.bias'\], unexpected "
                                              r"\['score.weight'\]"):
        GPT.from_pretrained(d)


def test_nan_in_a_tensor_is_refused(tmp_path):
    d = copy_case(tmp_path)
    tensors = load_file(d / "model.safetensors")
    tensors["transformer.h.0.ln_2.bias"][3] = np.nan
    write_file(d / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=r"tensor 'transformer.h.0.ln_2.bias' holds NaN or Inf"):
        GPT.from_pretrained(d)


def test_integer_weights_are_refused(tmp_path):
    d = copy_case(tmp_path)
    tensors = load_file(d / "model.safetensors")
    tensors["transformer.ln_f.bias"] = tensors["transformer.ln_f.bias"].astype(np.int32)
    write_file(d / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=r"'transformer.ln_f.bias' has dtype I32"):
        GPT.from_pretrained(d)


def test_bad_dtype_argument():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64', got 'float16'"):
        GPT.from_pretrained(case_dir(0), dtype="float16")


def test_tied_checkpoint_with_a_copy_of_wte_as_lm_head(tmp_path):
    """Some writers keep lm_head.weight in a tied file: accepted when it equals wte, refused when it differs."""
    i = next(i for i in CASES if G[f"c{i}_tied"])
    d = copy_case(tmp_path, i)
    tensors = load_file(d / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].copy()
    write_file(d / "model.safetensors", tensors)
    model = GPT.from_pretrained(d)
    assert "lm_head.weight" not in model.params
    tensors["lm_head.weight"][0, 0] += 1
    write_file(d / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match="lm_head.weight differs from transformer.wte.weight"):
        GPT.from_pretrained(d)

"""Adapter files: PEFT's names and keys, a bit-exact round trip, and mismatches refused before any change."""

import json

import numpy as np
import pytest

from minilora.nn import MLP
from minilora.peft import LoraConfig, inject_lora, load_adapter, lora_modules, read_adapter, save_adapter

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402


def trained_mlp(config=None, seed=0):
    model = inject_lora(
        MLP([6, 16, 16, 4], seed=0),
        config or LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc2")),
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    for name in model.trainable_names():  # pretend it was trained: B ≠ 0
        model.params[name][...] = rng.standard_normal(model.params[name].shape)
    return model


def test_files_follow_peft(tmp_path):
    model = trained_mlp()
    save_adapter(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == {
        "base_model.model.fc0.lora_A.weight": (2, 6),
        "base_model.model.fc0.lora_B.weight": (16, 2),
        "base_model.model.fc2.lora_A.weight": (2, 16),
        "base_model.model.fc2.lora_B.weight": (4, 2),
    }
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["bias"] == "none" and cfg["use_rslora"] is False
    assert (cfg["r"], cfg["lora_alpha"], cfg["target_modules"], cfg["lora_dropout"]) == (
        2,
        4,
        ["fc0", "fc2"],
        0.0,
    )


def test_round_trip_is_bit_exact_into_a_fresh_model(tmp_path):
    model = trained_mlp(LoraConfig(r=3, lora_alpha=5, target_modules="all-linear", use_rslora=True))
    save_adapter(model, tmp_path)
    fresh = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    assert fresh.lora_config == LoraConfig(
        r=3, lora_alpha=5, target_modules=("fc0", "fc1", "fc2"), use_rslora=True
    )
    assert list(fresh.params) == list(model.params)
    for k, v in model.params.items():
        assert np.array_equal(fresh.params[k], v) and fresh.params[k].dtype == v.dtype, k
    assert fresh.trainable_names() == model.trainable_names()
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    assert np.array_equal(fresh.forward(x), model.forward(x))


def test_round_trip_into_a_model_with_lora(tmp_path):
    model = trained_mlp(seed=1)
    save_adapter(model, tmp_path)
    other = trained_mlp(seed=2)
    load_adapter(other, tmp_path)
    for k, v in model.params.items():
        assert np.array_equal(other.params[k], v), k


def test_regex_config_round_trips(tmp_path):
    model = trained_mlp(LoraConfig(r=2, target_modules=r"fc[12]"))
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == r"fc[12]"
    fresh = load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    assert list(lora_modules(fresh)) == ["fc1", "fc2"]


def _assert_unchanged(model, before):
    assert list(model.params) == list(before)
    for k, v in before.items():
        assert np.array_equal(model.params[k], v), k


@pytest.mark.parametrize("with_lora", [False, True])
def test_mismatched_shapes_refused_and_nothing_loaded(tmp_path, with_lora):
    save_adapter(trained_mlp(), tmp_path)
    # same names, other widths: fc0 is (16, 5) instead of (16, 6)
    target = MLP([5, 16, 16, 4], seed=0)
    if with_lora:
        target = trained_mlp(seed=3)
        tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
        tensors["base_model.model.fc2.lora_B.weight"] = np.zeros((5, 2), np.float32)
        save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    before = target.state_dict()
    with pytest.raises(ValueError, match="has shape"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)


def test_mismatched_targets_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    target = trained_mlp(LoraConfig(r=2, lora_alpha=4, target_modules=("fc1",)), seed=4)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"missing \['fc1.lora_A.weight'.*unexpected \['fc0.lora_A.weight'"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)


def test_mismatched_rank_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    target = trained_mlp(LoraConfig(r=3, lora_alpha=4, target_modules=("fc0", "fc2")))
    before = target.state_dict()
    with pytest.raises(ValueError, match="adapter has r=2"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)


def test_extra_tensor_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors["base_model.model.fc1.lora_A.weight"] = np.zeros((2, 16), np.float32)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    target = MLP([6, 16, 16, 4], seed=0)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"unexpected \['fc1.lora_A.weight'"):
        load_adapter(target, tmp_path)
    _assert_unchanged(target, before)
    assert not lora_modules(target)


def test_dtype_mismatch_refused(tmp_path):
    save_adapter(trained_mlp(), tmp_path)
    target = MLP([6, 16, 16, 4], seed=0).to("float64")
    with pytest.raises(ValueError, match="dtype float32"):
        load_adapter(target, tmp_path)
    assert not lora_modules(target)


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"peft_type": "PREFIX_TUNING"}, "peft_type must be 'LORA'"),
        ({"use_dora": True}, "use_dora"),
        ({"r": 0}, "r must be"),
        ({"rank_pattern": {"fc0": 4}}, "rank_pattern"),
    ],
)
def test_bad_config_files(tmp_path, edit, match):
    save_adapter(trained_mlp(), tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ValueError, match=match):
        read_adapter(tmp_path)


def test_missing_files_and_bad_models(tmp_path):
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        load_adapter(MLP([6, 4]), tmp_path)
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(MLP([6, 4]), tmp_path)
    model = trained_mlp()
    model.fc0.merge()
    with pytest.raises(ValueError, match="merged"):
        save_adapter(model, tmp_path)

"""One entry point, one pair of adapter-file functions: get_peft_model, save_adapter / load_adapter dispatch."""

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from minilora.nn import MLP
from minilora.peft import LoraConfig, adapter_io, get_peft_model, mapping

pytest.importorskip("safetensors")


def lora_mlp(seed=0):
    model = get_peft_model(MLP([6, 16, 16, 4], seed=0), LoraConfig(r=2, lora_alpha=4, target_modules=("fc0",)),
                           seed=seed)
    rng = np.random.default_rng(seed)
    for k in model.trainable_names():
        model.params[k][...] = rng.standard_normal(model.params[k].shape)
    return model


def test_save_adapter_of_a_lora_model_writes_what_the_lora_writer_writes(tmp_path):
    model = lora_mlp()
    mapping.save_adapter(model, tmp_path / "a")
    adapter_io.save_adapter(model, tmp_path / "b")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert mapping.adapter_nbytes(model) == adapter_io.adapter_nbytes(model)  # on disk = serialized in memory


def test_load_adapter_reads_the_method_from_peft_type(tmp_path):
    model = lora_mlp()
    mapping.save_adapter(model, tmp_path)
    assert mapping.adapter_kind(tmp_path) == "LORA"
    loaded = mapping.load_adapter(MLP([6, 16, 16, 4], seed=0), tmp_path)
    assert mapping.peft_config_of(loaded) == model.lora_config
    for k in model.trainable_names():
        np.testing.assert_array_equal(loaded.params[k], model.params[k])


def test_unknown_or_missing_peft_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        mapping.load_adapter(MLP([6, 4]), tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        mapping.load_adapter(MLP([6, 4]), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2}))
    with pytest.raises(ValueError, match="no peft_type string"):
        mapping.load_adapter(MLP([6, 4]), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ValueError, match=r"peft_type 'IA3'; minilora reads \[.*'LORA'"):
        mapping.load_adapter(MLP([6, 4]), tmp_path)


def test_a_model_without_a_method_has_no_adapter(tmp_path):
    with pytest.raises(ValueError, match="carries no PEFT method.*GPT.save"):
        mapping.save_adapter(MLP([6, 4]), tmp_path)
    assert mapping.peft_config_of(MLP([6, 4])) is None


def test_get_peft_model_names_the_registered_configs():
    with pytest.raises(TypeError, match=r"config must be one of \[.*'LoraConfig'.*\], got dict"):
        get_peft_model(MLP([6, 4]), {"r": 2})


@dataclass(frozen=True)
class ToyConfig:
    """A method that only records that it ran (to test the registry itself)."""

    peft_type: ClassVar[str] = "TOY"


def test_registering_a_method_and_its_files(monkeypatch, tmp_path):
    monkeypatch.setattr(mapping, "PEFT_METHODS", dict(mapping.PEFT_METHODS))
    monkeypatch.setattr(mapping, "ADAPTER_IO", dict(mapping.ADAPTER_IO))
    seen = []

    def apply(model, config, seed=0):
        model.peft_config = config
        return model

    def save(model, path):
        path.mkdir()
        (path / "adapter_config.json").write_text(json.dumps({"peft_type": "TOY"}))
        return path

    def load(model, path):
        seen.append(path)
        return apply(model, ToyConfig())

    mapping.register_peft_method(ToyConfig, apply)
    mapping.register_adapter_io(ToyConfig, save, load)
    model = get_peft_model(MLP([6, 4]), ToyConfig())
    assert mapping.peft_config_of(model) == ToyConfig()
    mapping.save_adapter(model, tmp_path / "toy")
    assert mapping.peft_config_of(mapping.load_adapter(MLP([6, 4]), tmp_path / "toy")) == ToyConfig()
    assert seen == [tmp_path / "toy"]
    assert mapping.adapter_nbytes(model) == len(json.dumps({"peft_type": "TOY"}))


def test_registry_refusals(monkeypatch):
    monkeypatch.setattr(mapping, "ADAPTER_IO", dict(mapping.ADAPTER_IO))

    @dataclass(frozen=True)
    class AlsoLora:
        peft_type: ClassVar[str] = "LORA"

    with pytest.raises(ValueError, match="peft_type 'LORA' is already registered by LoraConfig"):
        mapping.register_adapter_io(AlsoLora, adapter_io.save_adapter, adapter_io.load_adapter)
    with pytest.raises(TypeError, match=r"peft_type \(or architecture\) string"):
        mapping.register_adapter_io(dict, adapter_io.save_adapter, adapter_io.load_adapter)
    with pytest.raises(TypeError, match="config_cls must be a class"):
        mapping.register_peft_method(LoraConfig(), lambda m, c, seed=0: m)
    with pytest.raises(TypeError, match="apply must be a function"):
        mapping.register_peft_method(ToyConfig, "inject")

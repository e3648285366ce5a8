"""Adapter files: prompt adapters in PEFT's layout, bottleneck adapters in minilora's; round trips bit-exact,
mismatched files refused with the file named and the model unchanged."""

import json
from pathlib import Path

import numpy as np
import pytest

from minilora.peft import (
    adapters,
    load_adapters,
    load_prompt_adapter,
    prefix_tuning,
    prompt_tuning,
    save_adapters,
    save_prompt_adapter,
)
from minilora.peft.adapters_io import adapters_nbytes
from minilora.peft.prompt_io import ENCODER_NAME, PROMPT_KEY, WEIGHTS_NAME, prompt_adapter_nbytes

from .cases import ADAPTER_METHODS, PROMPT_METHODS, apply_method, batch, tiny_gpt

st = pytest.importorskip("safetensors.numpy")
WITH_ENCODER = {"ptuning_mlp", "ptuning_lstm", "prefix_proj"}


def _untouched(base, state):
    return base.trainable_names() == list(base.params) and all(np.array_equal(state[k], v)
                                                               for k, v in base.params.items())


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_prompt_adapter_has_peft_files_and_one_tensor(tmp_path, name):
    model, _ = apply_method(name)
    save_prompt_adapter(model, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"adapter_config.json", WEIGHTS_NAME} | ({ENCODER_NAME} if name in WITH_ENCODER else set())
    tensors = st.load_file(str(tmp_path / WEIGHTS_NAME))
    assert list(tensors) == [PROMPT_KEY]
    np.testing.assert_array_equal(tensors[PROMPT_KEY], model.get_prompt_embedding_to_save())
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == model.peft_config.peft_type
    assert prompt_adapter_nbytes(model) == (tmp_path / WEIGHTS_NAME).stat().st_size + (
        tmp_path / "adapter_config.json").stat().st_size


@pytest.mark.parametrize("is_trainable", [False, True], ids=["inference", "trainable"])
@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_prompt_adapter_round_trip_is_bit_exact(tmp_path, name, is_trainable):
    model, state = apply_method(name)
    save_prompt_adapter(model, tmp_path)
    base = tiny_gpt()
    loaded = load_prompt_adapter(base, tmp_path, is_trainable=is_trainable)
    idx, targets = batch()
    np.testing.assert_array_equal(loaded.forward(idx)[0], model.forward(idx)[0])
    assert loaded.inference_mode is (not is_trainable) and base.trainable_names() == []
    if is_trainable:
        ours, theirs = model.prompt_encoder.params, loaded.prompt_encoder.params
        assert set(ours) == set(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
        assert loaded.trainable_names() == model.trainable_names()
    else:
        assert loaded.trainable_names() == []


def test_loaded_text_init_adapter_saves_again_as_peft_needs(tmp_path):
    model, _ = apply_method("prompt_text")
    save_prompt_adapter(model, tmp_path / "a")
    again = load_prompt_adapter(tiny_gpt(), tmp_path / "a", is_trainable=True)
    save_prompt_adapter(again, tmp_path / "b")
    first, second = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in "ab")
    assert first == second and first["tokenizer_name_or_path"] == "token ids"  # PEFT needs one for "TEXT"


def test_inference_only_adapter_cannot_resume_training(tmp_path):
    model, _ = apply_method("ptuning_mlp")
    save_prompt_adapter(model, tmp_path)
    (tmp_path / ENCODER_NAME).unlink()
    assert load_prompt_adapter(tiny_gpt(), tmp_path).trainable_names() == []
    base = tiny_gpt()
    state = base.state_dict()
    with pytest.raises(ValueError, match="no minilora_prompt_encoder.safetensors"):
        load_prompt_adapter(base, tmp_path, is_trainable=True)
    assert _untouched(base, state)


def test_encoder_file_of_another_adapter_is_refused(tmp_path):
    a, _ = apply_method("ptuning_mlp", seed=0)
    b, _ = apply_method("ptuning_mlp", seed=5)
    save_prompt_adapter(a, tmp_path / "a")
    save_prompt_adapter(b, tmp_path / "b")
    (tmp_path / "a" / ENCODER_NAME).write_bytes((tmp_path / "b" / ENCODER_NAME).read_bytes())
    base = tiny_gpt()
    state = base.state_dict()
    with pytest.raises(ValueError, match="does not reproduce prompt_embeddings"):
        load_prompt_adapter(base, tmp_path / "a", is_trainable=True)
    assert _untouched(base, state)


def _tamper_json(path: Path, **changes):
    raw = json.loads((path / "adapter_config.json").read_text())
    raw.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("tamper,match", [
    (lambda p: _tamper_json(p, peft_type="LORA"), "peft_type must be one of .* got 'LORA' .*load_adapter"),
    (lambda p: _tamper_json(p, token_dim=16), r"token_dim=16 does not match the model \(8\)"),
    (lambda p: _tamper_json(p, num_layers=3), r"num_layers=3 does not match"),
    (lambda p: _tamper_json(p, num_virtual_tokens=4), r"prompt_embeddings has shape \(3, 8\), the model needs"),
    (lambda p: _tamper_json(p, num_virtual_tokens=9), "num_virtual_tokens=9 leaves no room"),
    (lambda p: st.save_file({PROMPT_KEY: np.zeros((3, 8), np.float32)}, str(p / WEIGHTS_NAME)), "dtype float32"),
    (lambda p: st.save_file({"x": np.zeros((3, 8))}, str(p / WEIGHTS_NAME)), "exactly one tensor 'prompt_embeddings'"),
    (lambda p: (p / WEIGHTS_NAME).unlink(), "has no adapter_model.safetensors"),
], ids=["lora", "width", "depth", "length", "no-room", "dtype", "tensor-name", "missing-file"])
def test_mismatched_prompt_adapter_is_refused_and_the_model_unchanged(tmp_path, tamper, match):
    model, _ = apply_method("prompt")
    save_prompt_adapter(model, tmp_path)
    tamper(tmp_path)
    base = tiny_gpt()
    state = base.state_dict()
    with pytest.raises(ValueError, match=match):
        load_prompt_adapter(base, tmp_path)
    assert _untouched(base, state)


def test_files_of_the_other_kind_are_refused_by_name(tmp_path):
    save_adapters(apply_method("houlsby")[0], tmp_path / "bottleneck")
    save_prompt_adapter(apply_method("prompt")[0], tmp_path / "prompt")
    with pytest.raises(ValueError, match="bottleneck adapter: use minilora.peft.load_adapters"):
        load_prompt_adapter(tiny_gpt(), tmp_path / "bottleneck")
    with pytest.raises(ValueError, match="is a PEFT adapter .*PROMPT_TUNING"):
        load_adapters(tiny_gpt(), tmp_path / "prompt")


def test_saving_needs_a_method():
    with pytest.raises(TypeError, match="PromptLearningModel"):
        save_prompt_adapter(tiny_gpt(), "unused")
    with pytest.raises(ValueError, match="no bottleneck adapters"):
        save_adapters(tiny_gpt(), "unused")


@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_bottleneck_adapter_round_trip_is_bit_exact(tmp_path, name):
    model, _ = apply_method(name)
    save_adapters(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_config.json", "adapter.safetensors"}
    assert adapters_nbytes(model) == sum(p.stat().st_size for p in tmp_path.iterdir())
    loaded = load_adapters(tiny_gpt(), tmp_path)
    assert loaded.adapter_config == model.adapter_config and loaded.trainable_names() == model.trainable_names()
    ours, theirs = model.params, loaded.params
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    idx, _ = batch()
    np.testing.assert_array_equal(loaded.forward(idx)[0], model.forward(idx)[0])
    again = load_adapters(loaded, tmp_path)  # into existing adapters with the same config
    assert again is loaded


def _rewrite_tensor(path, key, value):
    tensors = st.load_file(str(path / "adapter.safetensors"))
    tensors[key] = value
    st.save_file(tensors, str(path / "adapter.safetensors"))


@pytest.mark.parametrize("tamper,match", [
    (lambda p: _rewrite_tensor(p, "blocks.0.output_adapters.adapter_up.weight", np.zeros((8, 3))),
     r"adapter_up.weight is float64\[8, 3\], the model needs float64\[8, 4\]"),
    (lambda p: _rewrite_tensor(p, "blocks.0.output_adapters.adapter_up.bias", np.zeros(8, np.float32)),
     "float32"),
    (lambda p: _rewrite_tensor(p, "blocks.5.output_adapters.adapter_up.bias", np.zeros(8)),
     r"unexpected \['blocks.5"),
    (lambda p: (p / "adapter_config.json").write_text(
        (p / "adapter_config.json").read_text().replace('"hidden_size": 8', '"hidden_size": 16')), "hidden_size=16"),
    (lambda p: (p / "adapter_config.json").write_text(
        (p / "adapter_config.json").read_text().replace('"ln_after": false', '"ln_after": true')), "not supported"),
    (lambda p: (p / "adapter_config.json").write_text(
        (p / "adapter_config.json").read_text().replace('"reduction_factor": 2', '"reduction_factor": 0')),
     "reduction_factor"),
], ids=["shape", "dtype", "extra", "width", "unsupported", "bad-config"])
def test_mismatched_bottleneck_adapter_is_refused_and_the_model_unchanged(tmp_path, tamper, match):
    save_adapters(apply_method("houlsby")[0], tmp_path)
    tamper(tmp_path)
    base = tiny_gpt()
    state = base.state_dict()
    with pytest.raises(ValueError, match=match):
        load_adapters(base, tmp_path)
    assert _untouched(base, state) and not adapters.adapter_blocks(base)


def test_loading_into_adapters_of_another_config_is_refused(tmp_path):
    save_adapters(apply_method("houlsby")[0], tmp_path)
    other = adapters.apply(tiny_gpt(), adapters.SeqBnConfig(reduction_factor=2))
    with pytest.raises(ValueError, match="already has adapters"):
        load_adapters(other, tmp_path)


def test_prefix_adapter_file_is_the_flat_prefix_peft_loads():
    model = prefix_tuning.apply(tiny_gpt(), prefix_tuning.PrefixTuningConfig(2))
    assert model.get_prompt_embedding_to_save().shape == (2, 2 * 2 * 8)  # (p, n_layer · 2 · n_embd)
    model = prompt_tuning.apply(tiny_gpt(), prompt_tuning.PromptTuningConfig(2))
    assert model.get_prompt_embedding_to_save().shape == (2, 8)

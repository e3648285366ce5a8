"""inject_lora / merge_and_unload / trainable parameters on the MLP (and the GPT when it exists)."""

import numpy as np
import pytest

from minilora.nn import MLP, Linear
from minilora.peft import (
    LoraConfig,
    LoRALinear,
    count_parameters,
    disable_adapter,
    get_peft_model,
    inject_lora,
    lora_modules,
    merge_and_unload,
    merge_lora,
    print_trainable_parameters,
    trainable_parameters,
    unload,
    unmerge_lora,
)


def mlp(seed=0):
    return MLP([6, 16, 16, 4], seed=seed)


def x_batch(n=5):
    return np.random.default_rng(1).standard_normal((n, 6)).astype(np.float32)


def test_inject_by_name_freezes_everything_else():
    model = inject_lora(mlp(), LoraConfig(r=2, target_modules=("fc0", "fc2")))
    assert list(lora_modules(model)) == ["fc0", "fc2"]
    assert model.trainable_names() == [
        "fc0.lora_A.weight",
        "fc0.lora_B.weight",
        "fc2.lora_A.weight",
        "fc2.lora_B.weight",
    ]
    assert isinstance(model.fc1, Linear) and not isinstance(model.fc1, LoRALinear)
    assert model.params["fc0.lora_A.weight"].shape == (2, 6)
    assert model.params["fc2.lora_B.weight"].shape == (4, 2)
    assert set(trainable_parameters(model)) == set(model.trainable_names())
    assert count_parameters(model) == (
        2 * (6 + 16) + 2 * (16 + 4),
        6 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4 + 2 * (6 + 16) + 2 * (16 + 4),
    )


def test_inject_keeps_the_function_and_only_lora_gets_grads():
    ref = mlp()
    x = x_batch()
    y0 = ref.forward(x)
    model = inject_lora(mlp(), LoraConfig(r=3, target_modules="all-linear"))
    np.testing.assert_array_equal(model.forward(x), y0)  # B = 0: the side path adds exactly 0
    model.zero_grad()
    model.forward(x)
    model.backward(np.ones_like(y0))
    assert sorted(model.grads) == sorted(model.trainable_names())
    assert all(".lora_" in k for k in model.grads)


def test_regex_targets():
    model = inject_lora(mlp(), LoraConfig(r=1, target_modules=r"fc[01]"))
    assert list(lora_modules(model)) == ["fc0", "fc1"]


def test_base_weights_never_change_in_training():
    model = inject_lora(mlp(), LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    frozen = {k: v.copy() for k, v in model.params.items() if ".lora_" not in k}
    lora0 = {k: v.copy() for k, v in trainable_parameters(model).items()}
    x, t = x_batch(32), np.random.default_rng(2).standard_normal((32, 4)).astype(np.float32)
    for _ in range(20):
        model.zero_grad()
        y = model.forward(x)
        model.backward(2 * (y - t) / y.size)
        for k, g in model.grads.items():
            model.params[k] -= 0.1 * g
    for k, v in frozen.items():
        assert np.array_equal(model.params[k], v), k
    assert any(not np.array_equal(model.params[k], v) for k, v in lora0.items())


def test_merge_and_unload_gives_a_plain_model_with_the_same_outputs():
    model = inject_lora(mlp(), LoraConfig(r=2, target_modules="all-linear", init_lora_weights="random"))
    x = x_batch()
    y = model.forward(x)
    merge_lora(model)
    np.testing.assert_allclose(model.forward(x), y, rtol=1e-5, atol=1e-6)
    unmerge_lora(model)
    plain = merge_and_unload(model)
    assert plain is model and not lora_modules(plain)
    assert sorted(plain.params) == sorted(mlp().params)
    assert all(type(m) is Linear for _, m in plain.named_modules() if isinstance(m, Linear))
    np.testing.assert_allclose(plain.forward(x), y, rtol=1e-5, atol=1e-6)
    assert not hasattr(plain, "lora_config")


def test_merge_and_unload_after_cast():
    model = inject_lora(mlp(), LoraConfig(r=2, target_modules=("fc1",), init_lora_weights="random"))
    model.to("float64")
    x = x_batch().astype(np.float64)
    y = model.forward(x)
    plain = merge_and_unload(model)
    assert plain.fc1.weight.dtype == np.float64
    np.testing.assert_allclose(plain.forward(x), y, rtol=1e-12)


def test_print_trainable_parameters(capsys):
    model = inject_lora(mlp(), LoraConfig(r=2, target_modules=("fc0",)))
    line = print_trainable_parameters(model)
    assert capsys.readouterr().out.strip() == line
    trainable, total = count_parameters(model)
    assert line == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || "
        f"trainable%: {100 * trainable / total:.4f}"
    )


def test_errors():
    with pytest.raises(ValueError, match="matches no Linear.*fc0"):
        inject_lora(mlp(), LoraConfig(target_modules=("q_proj",)))
    with pytest.raises(ValueError, match="r=8 exceeds min"):
        inject_lora(mlp(), LoraConfig(r=8, target_modules=("fc2",)))
    model = inject_lora(mlp(), LoraConfig(r=2, target_modules=("fc0",)))
    with pytest.raises(ValueError, match="already has LoRA layers"):
        inject_lora(model, LoraConfig(r=2, target_modules=("fc1",)))
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_and_unload(mlp())
    with pytest.raises(TypeError, match="config must be a LoraConfig"):
        inject_lora(mlp(), {"r": 2})


def test_failed_inject_changes_nothing():
    model = mlp()
    before = model.state_dict()
    with pytest.raises(ValueError):
        inject_lora(model, LoraConfig(r=8, target_modules="all-linear"))  # fc2 has out = 4 < 8
    assert not lora_modules(model) and model.trainable_names() == list(before)


# ------------------------------------------------------------------ PEFT's names: get_peft_model, unload, ...
def test_get_peft_model_is_inject_lora_for_a_lora_config():
    config = LoraConfig(r=2, lora_alpha=4, target_modules=("fc0", "fc2"))
    a, b = get_peft_model(mlp(), config, seed=3), inject_lora(mlp(), config, seed=3)
    assert list(a.params) == list(b.params) and a.trainable_names() == b.trainable_names()
    assert all(np.array_equal(a.params[k], v) for k, v in b.params.items())
    with pytest.raises(TypeError, match="config must be one of \\['LoraConfig'\\], got dict"):
        get_peft_model(mlp(), {"r": 2})


def test_peft_model_methods_are_bound_onto_the_model(capsys):
    model = get_peft_model(mlp(), LoraConfig(r=2, target_modules=("fc0",)))
    assert model.get_nb_trainable_parameters() == count_parameters(model)
    assert model.print_trainable_parameters() == print_trainable_parameters(model)
    x = x_batch()
    y = model.forward(x)
    with model.disable_adapter():
        pass
    merged = model.merge_and_unload()
    assert merged is model and not lora_modules(model)
    np.testing.assert_allclose(model.forward(x), y, atol=1e-6)
    for name in ("merge_and_unload", "unload", "disable_adapter", "print_trainable_parameters", "lora_config"):
        assert not hasattr(model, name)  # gone with the adapter
    assert inject_lora(model, LoraConfig(r=2, target_modules=("fc0",))).unload() is model


def _trained(init=True, targets=("fc0", "fc2"), **kw):
    model = inject_lora(mlp(), LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=init, **kw))
    rng = np.random.default_rng(0)
    for name in model.trainable_names():
        model.params[name][...] += rng.standard_normal(model.params[name].shape).astype(np.float32) * 0.3
    return model


def test_unload_removes_lora_without_merging():
    base = mlp()
    model = _trained()
    unload(model)
    assert list(model.params) == list(base.params) and not lora_modules(model)
    assert all(np.array_equal(model.params[k], v) for k, v in base.params.items())  # bit for bit
    assert model.trainable_names() == []  # frozen, as PEFT leaves them


def test_unload_of_merged_and_of_residual_layers_restores_the_base():
    base = mlp()
    model = _trained()
    merge_lora(model)
    unload(model)  # unmerged first: W0 + s·BA − s·BA (not bit-exact)
    for k, v in base.params.items():
        np.testing.assert_allclose(model.params[k], v, atol=1e-6)
    for init in ("pissa", "olora"):  # the residual plus s·B0A0 again: PEFT would leave the residual
        model = unload(_trained(init))
        for k, v in base.params.items():
            np.testing.assert_allclose(model.params[k], v, atol=2e-6)


@pytest.mark.parametrize("init", [True, "pissa", "olora"])
def test_disable_adapter_gives_the_base_outputs_and_comes_back_exactly(init):
    x = x_batch()
    base_y = mlp().forward(x)
    model = _trained(init)
    y = model.forward(x)
    with disable_adapter(model):
        inside = model.forward(x)
        with pytest.raises(RuntimeError, match="disabled"):
            model.backward(np.ones_like(inside))
    if init is True:
        assert np.array_equal(inside, base_y)  # the side path is skipped: exactly the base layer
    else:  # residual + s·B0A0 = W up to float32 rounding (PEFT's disable_adapter would give the residual)
        np.testing.assert_allclose(inside, base_y, atol=1e-6 * np.abs(base_y).max() * 16)
    assert not np.allclose(inside, y, atol=1e-2)
    assert np.array_equal(model.forward(x), y)  # after the block: the adapter, bit for bit


def test_disable_adapter_errors_change_nothing():
    model = _trained()
    merge_lora(model)
    with pytest.raises(ValueError, match="merged"):
        with disable_adapter(model):
            pass
    assert all(not layer.disable_adapters for layer in lora_modules(model).values())
    unmerge_lora(model)
    with disable_adapter(model):
        with pytest.raises(ValueError, match="do not nest"):
            with disable_adapter(model):
                pass
        with pytest.raises(ValueError, match="disabled"):
            merge_and_unload(model)
    with pytest.raises(ValueError, match="no LoRA layers"):
        with disable_adapter(mlp()):
            pass


def test_base_layer_is_the_wrapped_linear():
    base = mlp()
    fc0 = base.fc0
    model = inject_lora(base, LoraConfig(r=2, target_modules=("fc0",)))
    layer = model.fc0
    assert layer.base_layer is fc0 and layer.get_base_layer() is fc0
    assert layer.base_layer.weight is layer.weight
    x = x_batch()
    assert np.array_equal(layer.base_layer.forward(x), x @ layer.weight.T + layer.bias)
    model.to("float64")
    assert layer.base_layer.weight is layer.weight and layer.base_layer.weight.dtype == np.float64


# ------------------------------------------------------------------ modules_to_save
def test_modules_to_save_train_in_full_and_are_counted_as_peft():
    model = _trained(targets=("fc0",), modules_to_save=("fc2",))
    assert model.trainable_names() == ["fc0.lora_A.weight", "fc0.lora_B.weight", "fc2.weight", "fc2.bias"]
    base = mlp()
    n_fc2 = base.fc2.weight.size + base.fc2.bias.size
    trainable, total = count_parameters(model)
    # PEFT counts the frozen original beside the trainable copy (see tests/lora/test_peft_files.py)
    assert (trainable, total) == (2 * (6 + 16) + n_fc2, base.num_params() + 2 * (6 + 16) + n_fc2)
    x = x_batch()
    y = model.forward(x)
    with disable_adapter(model):  # LoRA off and fc2 back to its original values
        assert np.array_equal(model.forward(x), base.forward(x))
    assert np.array_equal(model.forward(x), y)
    trained_fc2 = model.fc2.weight.copy()
    unload(model)  # keeps the trained copy, as PEFT's unload does
    assert np.array_equal(model.fc2.weight, trained_fc2) and not hasattr(model, "modules_to_save_originals")


@pytest.mark.parametrize("modules_to_save, match", [
    (("fc0",), "holds the LoRA target"),
    (("nope",), "matches no module"),
])
def test_modules_to_save_errors(modules_to_save, match):
    model = mlp()
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        inject_lora(model, LoraConfig(r=2, target_modules=("fc0",), modules_to_save=modules_to_save))
    assert not lora_modules(model) and model.trainable_names() == list(before)


def test_modules_to_save_matches_as_peft_does():
    """PEFT matches modules_to_save with str.endswith: "c2" matches fc2 (a dotted suffix is not needed)."""
    model = inject_lora(mlp(), LoraConfig(r=2, target_modules=("fc0",), modules_to_save=("c2",)))
    assert model.trainable_names()[2:] == ["fc2.weight", "fc2.bias"]

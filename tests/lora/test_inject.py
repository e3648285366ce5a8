"""inject_lora / merge_and_unload / trainable parameters on the MLP (and the GPT when it exists)."""

import numpy as np
import pytest

from minilora.nn import MLP, Linear
from minilora.peft import (
    LoraConfig,
    LoRALinear,
    count_parameters,
    inject_lora,
    lora_modules,
    merge_and_unload,
    merge_lora,
    print_trainable_parameters,
    trainable_parameters,
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

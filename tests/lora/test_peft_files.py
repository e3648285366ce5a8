"""Adapter directories written by PEFT 0.21.2 (tests/golden/lora_adapters/, made by tools/golden/lora.py) load
into minilora and give PEFT's outputs; PEFT's initializations and parameter counts, as golden vectors."""

import json
import warnings

import numpy as np
import pytest
from conftest import GOLDEN, load_golden

from minilora.nn import MLP, Linear
from minilora.peft import (
    LoraConfig,
    LoRALinear,
    count_parameters,
    init_lora_matrices,
    inject_lora,
    load_adapter,
    lora_modules,
    lora_scaling,
    prepare_qlora,
    read_adapter,
)
from minilora.peft.modules_to_save import modules_to_save_params

pytest.importorskip("safetensors")
from safetensors.numpy import load_file  # noqa: E402

G = load_golden("lora")
ADAPTERS = GOLDEN / "lora_adapters"
#: float32 unit roundoff
U32 = 2.0**-24


def golden_base(dtype="float32"):
    """minilora's MLP([6, 16, 16, 4]) holding the base weights PEFT's adapters were made on."""
    model = MLP([6, 16, 16, 4], seed=0)
    for k in model.params:
        model.params[k][...] = G[f"adapters_base_{k}"]
    return model.to(dtype)


def load(case, dtype="float32"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_adapter(golden_base(dtype), ADAPTERS / case)
    return model, [str(w.message) for w in caught]


def output(model):
    return model.forward(G["adapters_x"].astype(model.dtype)).astype(np.float32)


def assert_close_float32(y, desired):
    """Three layers of at most 16 + 2r = 20 float32 products summed, each rounded (u = 2^-24), in two
    libraries that sum in different orders: |Δy| ≤ 3 · 2 · 20 · u · scale ≈ 7e-6 of the output scale."""
    desired = np.asarray(desired)
    np.testing.assert_allclose(y, desired, rtol=0, atol=3 * 2 * 20 * U32 * np.abs(desired).max())


@pytest.mark.parametrize("case", ["init_false", "eva", "orthogonal", "olora", "pissa", "pissa_converted",
                                  "modules_to_save"])
def test_peft_adapter_gives_peft_outputs(case):
    """Plain inits load as they are; PiSSA/OLoRA files rebuild their residual base (as PEFT does on load)."""
    model, caught = load(case)
    assert caught == []
    assert_close_float32(output(model), G[f"adapters_{case}_y"])
    tensors = load_file(str(ADAPTERS / case / "adapter_model.safetensors"))
    for name, layer in lora_modules(model).items():
        assert np.array_equal(layer.A, tensors[f"base_model.model.{name}.lora_A.weight"])
        assert np.array_equal(layer.B, tensors[f"base_model.model.{name}.lora_B.weight"])


@pytest.mark.parametrize("case", ["init_false", "eva", "orthogonal", "olora", "pissa", "fp16", "modules_to_save"])
def test_parameter_counts_equal_peft(case):
    model, _ = load(case, "float16" if case == "fp16" else "float32")
    assert count_parameters(model) == tuple(G[f"adapters_{case}_counts"])


def test_init_false_file_loads_as_false():
    """A PEFT file with init_lora_weights=false loads (it was refused: "must be one of ...")."""
    config, _ = read_adapter(ADAPTERS / "init_false")
    assert config.init_lora_weights is False
    assert json.loads((ADAPTERS / "init_false" / "adapter_config.json").read_text())["init_lora_weights"] is False


def test_pissa_converted_is_rank_2r_plain_lora():
    config, _ = read_adapter(ADAPTERS / "pissa_converted")
    assert (config.r, config.lora_alpha, config.init_lora_weights) == (4, 8, True)
    model, _ = load("pissa_converted")
    assert all(layer.residual_init is None for layer in lora_modules(model).values())  # base weights untouched
    assert all(np.array_equal(model.params[k], G[f"adapters_base_{k}"]) for k in golden_base().params)


def test_lora_ga_loads_with_a_warning_onto_the_given_base():
    """LoRA-GA changes the base weights when PEFT creates it from gradients; PEFT's reload (without them)
    applies A, B to the base as given, and so does minilora, saying so."""
    model, caught = load("lora_ga")
    assert len(caught) == 1 and "'lora_ga' changes the base weights" in caught[0]
    assert_close_float32(output(model), G["adapters_lora_ga_y_reload"])


def test_pissa_niter_loads_with_exact_svd_and_a_warning():
    """PEFT's randomized SVD (svd_lowrank, niter 16) is not reproducible: PEFT's own reload of this file is
    far from the trained model; minilora rebuilds the residual with the exact SVD and warns."""
    model, caught = load("pissa_niter_16")
    assert len(caught) == 1 and "exact SVD" in caught[0]
    assert all(layer.init_lora_weights == "pissa" for layer in lora_modules(model).values())
    y, trained = output(model), G["adapters_pissa_niter_16_y"]
    peft_reload_error = np.abs(G["adapters_pissa_niter_16_y_reload"] - trained).max()
    assert np.abs(y - trained).max() < peft_reload_error  # this file: 0.027 vs PEFT's own 0.17


def test_fp16_base_float32_adapter_is_cast_with_a_warning():
    """PEFT keeps the adapter in float32 on a float16 base; minilora casts it to float16 and says so."""
    tensors = load_file(str(ADAPTERS / "fp16" / "adapter_model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {np.dtype("float32")}
    model, caught = load("fp16", "float16")
    assert len(caught) == 1 and "4 tensors cast to the model's dtype (float32->float16)" in caught[0]
    for name, layer in lora_modules(model).items():
        assert layer.A.dtype == np.float16
        assert np.array_equal(layer.A, tensors[f"base_model.model.{name}.lora_A.weight"].astype(np.float16))
    # float16 (u = 2^-11) outputs of three layers of ≤ 20 terms, rounded by both libraries
    y, desired = output(model), G["adapters_fp16_y"]
    np.testing.assert_allclose(y, desired, rtol=0, atol=3 * 2 * 20 * 2.0**-11 * np.abs(desired).max())


def test_modules_to_save_file_layout_and_values():
    tensors = load_file(str(ADAPTERS / "modules_to_save" / "adapter_model.safetensors"))
    assert sorted(tensors) == ["base_model.model.fc0.lora_A.weight", "base_model.model.fc0.lora_B.weight",
                               "base_model.model.fc2.bias", "base_model.model.fc2.weight"]
    model, _ = load("modules_to_save")
    assert model.lora_config.modules_to_save == ("fc2",)
    saved = modules_to_save_params(model)
    assert sorted(saved) == ["fc2.bias", "fc2.weight"]
    assert all(np.array_equal(v, tensors[f"base_model.model.{k}"]) for k, v in saved.items())
    assert set(model.trainable_names()) == {"fc0.lora_A.weight", "fc0.lora_B.weight", "fc2.weight", "fc2.bias"}


# ------------------------------------------------------------------ initializations and counts
def test_olora_init_matches_peft():
    W = G["olora_W"]
    r, alpha = int(G["olora_r"]), float(G["olora_alpha"])
    A, B, residual = init_lora_matrices(W.copy(), r, lora_scaling(r, alpha), "olora")
    scale = np.abs(G["olora_B"] @ G["olora_A"]).max()
    # QR factors are unique up to the sign of each column of Q / row of R; torch ran it in float32
    np.testing.assert_allclose(B @ A, G["olora_B"] @ G["olora_A"], atol=1e-5 * scale)
    np.testing.assert_allclose(np.abs(A), np.abs(G["olora_A"]), atol=1e-5 * np.abs(A).max())
    np.testing.assert_allclose(residual, G["olora_residual"], atol=1e-5 * np.abs(W).max())


def test_init_false_draws_like_peft():
    """PEFT's False keeps nn.Linear's init: A ~ U(±1/√in), B ~ U(±1/√r) (lora_B is nn.Linear(r, out)).
    minilora's False draws from the same distributions: compare support and spread with PEFT's draws."""
    A_peft, B_peft = G["false_A"], G["false_B"]
    r, in_f = A_peft.shape
    layer = LoRALinear(Linear(in_f, B_peft.shape[0], seed=0), r=r, lora_alpha=r, init_lora_weights=False, seed=0)
    for ours, peft in ((layer.A, A_peft), (layer.B, B_peft)):
        bound = np.abs(peft).max()  # ≈ the edge of the uniform support, 1/√fan_in
        assert np.abs(ours).max() <= bound * 1.01 and np.abs(ours).max() >= bound * 0.99
        assert ours.std() == pytest.approx(peft.std(), rel=0.05)  # uniform: std = bound / √3
        assert abs(ours.mean()) < 0.05 * bound and abs(peft.mean()) < 0.05 * bound
    assert np.abs(B_peft).max() == pytest.approx(1 / np.sqrt(r), rel=0.01)  # the fan-in of lora_B is r
    assert np.abs(A_peft).max() == pytest.approx(1 / np.sqrt(in_f), rel=0.01)


def test_lora_and_qlora_counts_equal_peft():
    """PEFT counts a bitsandbytes 4-bit weight by its elements: LoRA and QLoRA report the same numbers."""
    config = LoraConfig(r=4, target_modules=("fc0", "fc1"))
    assert count_parameters(inject_lora(MLP([64, 64, 64, 16], seed=0), config)) == tuple(G["count_lora"])
    qlora = prepare_qlora(MLP([64, 64, 64, 16], seed=0), config)
    assert count_parameters(qlora) == tuple(G["count_qlora"]) == tuple(G["count_lora"])

"""LoRALinear against PEFT's golden vectors, finite differences, merge/unmerge, initializations, config."""

import warnings

import numpy as np
import pytest
from conftest import load_golden

from minilora.nn import MLP, Linear
from minilora.nn.gradcheck import gradcheck
from minilora.peft import INIT_CHOICES, LoraConfig, LoRALinear, init_lora_matrices, lora_scaling

G = load_golden("lora")
CASES = range(int(G["n_cases"]))


def assert_close(actual, desired, rtol=1e-5):
    """Within ``rtol`` of the array's scale: torch (MKL) and NumPy sum float32 matmuls in different orders,
    so an element that is a large sum cancelling to ~0 differs by ~eps32 × the terms, not × itself."""
    desired = np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * np.abs(desired).max())


def _layer_from_golden(i, dtype="float32"):
    c = lambda k: G[f"c{i}_{k}"]
    W = c("W")
    base = Linear(W.shape[1], W.shape[0], seed=0)
    base.weight[...], base.bias[...] = W, c("b")
    layer = LoRALinear(base, int(c("r")), float(c("alpha")), use_rslora=bool(c("rslora")))
    layer.A[...], layer.B[...] = c("A"), c("B")
    return layer.to(dtype), c


@pytest.mark.parametrize("i", CASES)
def test_matches_peft_forward_backward(i):
    layer, c = _layer_from_golden(i)
    assert layer.scaling == pytest.approx(float(c("scaling")), rel=1e-15)
    layer.zero_grad()
    y = layer.forward(c("x"))
    dx = layer.backward(c("G"))
    assert_close(y, c("y"))
    assert_close(dx, c("dx"))
    assert_close(layer.grads["lora_A.weight"], c("dA"))
    assert_close(layer.grads["lora_B.weight"], c("dB"))
    assert sorted(layer.grads) == ["lora_A.weight", "lora_B.weight"]  # no dW0, no db


@pytest.mark.parametrize("i", CASES)
def test_matches_peft_delta_merge_unmerge(i):
    layer, c = _layer_from_golden(i)
    assert_close(layer.delta_weight(), c("delta"))
    layer.merge()
    assert layer.merged
    assert_close(layer.weight, c("merged"))
    layer.unmerge()
    assert_close(layer.weight, c("unmerged"))
    np.testing.assert_allclose(layer.weight, c("W"), rtol=0, atol=1e-6)  # not bit-exact, as in PEFT


def test_pissa_matches_peft():
    W = G["pissa_W"]
    r, alpha = int(G["pissa_r"]), float(G["pissa_alpha"])
    A, B, residual = init_lora_matrices(W.copy(), r, lora_scaling(r, alpha), "pissa")
    # singular vectors are defined up to sign: compare the product and the magnitudes
    assert_close(B @ A, G["pissa_B"] @ G["pissa_A"])
    assert_close(np.abs(A), np.abs(G["pissa_A"]), rtol=1e-4)  # torch ran the SVD in float32
    assert_close(residual, G["pissa_residual"])


def test_pissa_layer_keeps_the_function():
    base = Linear(12, 10, seed=3)
    W = base.weight.copy()
    layer = LoRALinear(base, r=4, lora_alpha=8, init_lora_weights="pissa")
    np.testing.assert_allclose(layer.weight + layer.delta_weight(), W, atol=1e-6)
    assert np.linalg.matrix_rank(layer.delta_weight().astype(np.float64), tol=1e-5) == 4


@pytest.mark.parametrize("init", ["random", True, "zero_A", "pissa"])
@pytest.mark.parametrize("use_rslora", [False, True])
def test_gradcheck_lora_linear(init, use_rslora):
    layer = LoRALinear(Linear(7, 5, seed=1), r=3, lora_alpha=6, init_lora_weights=init, use_rslora=use_rslora)
    layer.to("float64")
    if init is True:  # B = 0 would hide mistakes in dA: give B values
        layer.B[...] = np.random.default_rng(2).standard_normal(layer.B.shape)
    x = np.random.default_rng(0).standard_normal((2, 4, 7))
    report = gradcheck(layer, x)
    assert set(report) == {"lora_A.weight", "lora_B.weight", "input"}
    assert max(report.values()) < 1e-7, report


def test_gradcheck_with_dropout_mask_fixed():
    layer = LoRALinear(
        Linear(6, 4, seed=1), r=2, lora_alpha=2, lora_dropout=0.3, init_lora_weights="random", seed=5
    ).to("float64")
    x = np.random.default_rng(0).standard_normal((5, 6))
    # re-seed before every forward so the finite differences see the same dropout mask
    forward = layer.forward
    layer.forward = lambda x_: (setattr(layer, "rng", np.random.default_rng(9)), forward(x_))[1]
    report = gradcheck(layer, x)
    assert max(report.values()) < 1e-7, report
    layer.rng = np.random.default_rng(9)
    y_train = forward(x)
    layer.eval()
    assert not np.allclose(y_train, forward(x))  # dropout acts in training only


def test_gradient_formulas():
    """dA = s (G B)ᵀ X, dB = s Gᵀ (X Aᵀ), dx = G (W + s B A), the formulas of docs/facts.md §5."""
    layer = LoRALinear(Linear(6, 5, seed=1), r=2, lora_alpha=3, init_lora_weights="random").to("float64")
    rng = np.random.default_rng(0)
    X, Gr = rng.standard_normal((4, 6)), rng.standard_normal((4, 5))
    layer.zero_grad()
    layer.forward(X)
    dx = layer.backward(Gr)
    s, A, B = layer.scaling, layer.A, layer.B
    np.testing.assert_allclose(layer.grads["lora_A.weight"], s * (Gr @ B).T @ X, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["lora_B.weight"], s * Gr.T @ (X @ A.T), rtol=1e-12)
    np.testing.assert_allclose(dx, Gr @ (layer.weight + s * B @ A), rtol=1e-12)


def test_backward_accumulates():
    layer = LoRALinear(Linear(4, 3, seed=1), r=2, init_lora_weights="random")
    x, g = np.ones((2, 4), np.float32), np.ones((2, 3), np.float32)
    layer.zero_grad()
    layer.forward(x)
    layer.backward(g)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer.forward(x)
    layer.backward(g)
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-6)


@pytest.mark.parametrize("init", INIT_CHOICES)
def test_initializations(init):
    base = Linear(64, 48, seed=1)
    W = base.weight.copy()
    layer = LoRALinear(base, r=8, lora_alpha=16, init_lora_weights=init, seed=0)
    A, B = layer.A, layer.B
    assert A.shape == (8, 64) and B.shape == (48, 8) and A.dtype == B.dtype == np.float32
    a_zero, b_zero = not A.any(), not B.any()
    expected = {
        True: (False, True),
        False: (False, False),
        "gaussian": (False, True),
        "pissa": (False, False),
        "olora": (False, False),
        "zero_A": (True, False),
        "zeros": (True, True),
        "random": (False, False),
    }[init]
    assert (a_zero, b_zero) == expected
    if init is True or init is False or init == "random":
        assert np.abs(A).max() <= 1 / np.sqrt(64) and np.abs(A).max() > 0.9 / np.sqrt(64)
    if init == "gaussian":
        assert A.std() == pytest.approx(1 / 8, rel=0.1)
    if init is False or init in ("zero_A", "random"):
        assert np.abs(B).max() <= 1 / np.sqrt(8)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    y0 = x @ W.T + base.bias
    if init is False or init == "random":
        assert not np.allclose(layer.forward(x), y0, atol=1e-3)  # the only inits that change the output
    else:
        np.testing.assert_allclose(layer.forward(x), y0, atol=1e-5)


def test_same_seed_same_init():
    make = lambda seed: LoRALinear(Linear(8, 8, seed=0), r=2, init_lora_weights="random", seed=seed)
    a, b, c = make(1), make(1), make(2)
    assert np.array_equal(a.A, b.A) and np.array_equal(a.B, b.B)
    assert not np.array_equal(a.A, c.A)


def test_merged_forward_matches_unmerged():
    layer = LoRALinear(Linear(16, 12, seed=1), r=4, lora_alpha=8, init_lora_weights="random")
    x = np.random.default_rng(0).standard_normal((3, 5, 16)).astype(np.float32)
    y = layer.forward(x)
    layer.merge()
    assert_close(layer.forward(x), y)
    with pytest.raises(RuntimeError, match="unmerge"):
        layer.backward(np.ones_like(y))


def test_double_merge_is_a_noop_with_warning():
    layer = LoRALinear(Linear(8, 6, seed=1), r=2, init_lora_weights="random")
    layer.merge()
    once = layer.weight.copy()
    with pytest.warns(UserWarning, match="already merged"):
        layer.merge()
    assert np.array_equal(layer.weight, once)
    layer.unmerge()
    with pytest.warns(UserWarning, match="not merged"):
        layer.unmerge()


def test_base_is_frozen_and_shared():
    base = Linear(8, 6, seed=1)
    layer = LoRALinear(base, r=2)
    assert layer.params["weight"] is base.weight
    assert layer.trainable_names() == ["lora_A.weight", "lora_B.weight"]
    assert set(layer.params) == {"weight", "bias", "lora_A.weight", "lora_B.weight"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "LoRALinear(in_features=8, out_features=6, r=2" in repr(layer)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"r": 0}, ValueError, "r must be"),
        ({"r": 7}, ValueError, r"r must be <= min\(in_features, out_features\) = 6"),
        ({"r": 2.5}, TypeError, "r must be an integer"),
        ({"r": True}, TypeError, "r must be an integer"),
        ({"lora_alpha": 0}, ValueError, "lora_alpha must be a positive"),
        ({"lora_alpha": -1.0}, ValueError, "lora_alpha must be a positive"),
        ({"lora_dropout": 1.0}, ValueError, r"lora_dropout must be in \[0, 1\), got 1.0"),
        ({"lora_dropout": -0.1}, ValueError, "lora_dropout"),
        ({"r": 2, "init_lora_weights": "kaiming"}, ValueError, "init_lora_weights must be one of"),
        ({"r": 2, "init_lora_weights": "pissa_niter_16"}, ValueError, "load_adapter accepts it"),
        ({"r": 2, "init_lora_weights": 1}, ValueError, "init_lora_weights must be one of"),
    ],
)
def test_bad_layer_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        LoRALinear(Linear(8, 6, seed=1), **kwargs)


def test_base_must_be_linear():
    with pytest.raises(TypeError, match="base must be"):
        LoRALinear(MLP([3, 3]), r=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"r": 0}, "r must be"),
        ({"lora_alpha": 0}, "lora_alpha"),
        ({"lora_dropout": 1}, "lora_dropout"),
        ({"target_modules": ()}, "target_modules"),
        ({"target_modules": "("}, "regular expression"),
        ({"target_modules": ""}, "target_modules"),
        ({"init_lora_weights": "loftq"}, "init_lora_weights"),
        ({"init_lora_weights": None}, "init_lora_weights"),
        ({"lora_alpha": True}, "lora_alpha must be a real number"),
        ({"lora_alpha": "8"}, "lora_alpha must be a real number"),
        ({"lora_dropout": np.bool_(False)}, "lora_dropout must be a real number"),
        ({"modules_to_save": ()}, "modules_to_save"),
        ({"modules_to_save": ("lm_head", "")}, "modules_to_save"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LoraConfig(**kwargs)


def test_config_defaults_and_scaling():
    c = LoraConfig()
    assert (c.r, c.lora_alpha, c.lora_dropout, c.target_modules, c.init_lora_weights, c.use_rslora) == (
        8,
        8,
        0.0,
        ("q_proj", "v_proj"),
        True,
        False,
    )
    assert c.scaling == 1.0
    assert LoraConfig(r=16, lora_alpha=8, use_rslora=True).scaling == pytest.approx(2.0)
    assert LoraConfig(target_modules=["a", "b"]).target_modules == ("a", "b")


@pytest.mark.parametrize(
    "targets, name, hit",
    [
        (("q_proj",), "blocks.0.attn.q_proj", True),
        (("q_proj",), "q_proj", True),
        (("q_proj",), "blocks.0.attn.qq_proj", False),
        (("attn.q_proj",), "blocks.1.attn.q_proj", True),
        (r"blocks\.0\..*_proj", "blocks.0.attn.k_proj", True),
        (r"blocks\.0\..*_proj", "blocks.10.attn.k_proj", False),
        ("q_proj", "blocks.0.attn.q_proj", False),  # a string is a full-match regex, as in PEFT
        ("all-linear", "blocks.0.mlp.up_proj", True),
        ("all-linear", "lm_head", False),
    ],
)
def test_target_matching(targets, name, hit):
    assert LoraConfig(target_modules=targets).matches(name) is hit


@pytest.mark.parametrize("kwargs, stored", [
    ({"lora_alpha": np.int64(16)}, {"lora_alpha": (16, int)}),
    ({"lora_alpha": np.float32(8)}, {"lora_alpha": (8.0, float)}),
    ({"lora_alpha": np.float64(0.3)}, {"lora_alpha": (0.3, float)}),
    ({"lora_dropout": np.float32(0.1)}, {"lora_dropout": (0.1, float)}),
    ({"lora_dropout": np.int8(0)}, {"lora_dropout": (0.0, float)}),
    ({"r": np.int32(4), "lora_alpha": np.uint8(8)}, {"r": (4, int), "lora_alpha": (8, int)}),
])
def test_numpy_numbers_are_accepted_and_stored_as_python_numbers(kwargs, stored):
    """A sweep over np.arange/np.geomspace raised TypeError; the config keeps Python numbers, so the JSON
    written is PEFT's (integers stay integers)."""
    config = LoraConfig(**kwargs)
    for name, (value, kind) in stored.items():
        assert getattr(config, name) == value and type(getattr(config, name)) is kind
    layer = LoRALinear(Linear(8, 6, seed=1), r=2, **{k: v for k, v in kwargs.items() if k != "r"})
    assert layer.scaling == LoraConfig(r=2, **{k: v for k, v in kwargs.items() if k != "r"}).scaling


def test_numpy_alpha_writes_the_json_peft_writes(tmp_path):
    pytest.importorskip("safetensors")
    import json

    from minilora.peft import inject_lora, save_adapter

    for alpha, text in ((np.int64(16), '"lora_alpha": 16,'), (np.float32(8), '"lora_alpha": 8.0,')):
        model = inject_lora(MLP([6, 16, 4], seed=0), LoraConfig(r=2, lora_alpha=alpha, target_modules=("up_proj",),
                                                                lora_dropout=np.float32(0.1)))
        save_adapter(model, tmp_path)
        raw = (tmp_path / "adapter_config.json").read_text()
        assert text in raw and '"lora_dropout": 0.1,' in raw
        assert json.loads(raw)["lora_alpha"] == alpha


def test_init_false_is_random_and_olora_keeps_the_function():
    a = LoRALinear(Linear(16, 12, seed=0), r=4, init_lora_weights=False, seed=3)
    b = LoRALinear(Linear(16, 12, seed=0), r=4, init_lora_weights="random", seed=3)
    assert np.array_equal(a.A, b.A) and np.array_equal(a.B, b.B)  # the same draws: PEFT's False
    base = Linear(12, 10, seed=3)
    W = base.weight.copy()
    layer = LoRALinear(base, r=4, lora_alpha=8, init_lora_weights="olora")
    np.testing.assert_allclose(layer.weight + layer.delta_weight(), W, atol=1e-6)
    A0, B0 = layer.residual_init
    assert np.array_equal(A0, layer.A) and np.array_equal(B0, layer.B)
    np.testing.assert_allclose(B0.T @ B0, np.eye(4), atol=1e-6)  # B = the first r columns of Q

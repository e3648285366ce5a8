"""The tiny GPT: whole-model gradient, state_dict names, bad inputs, generation, float64 mode."""

import numpy as np
import pytest

from minilora.nn.gpt import GPT, GPTConfig
from minilora.nn.gradcheck import gradcheck
from minilora.nn.modules import Linear

TINY = dict(vocab_size=7, block_size=6, n_layer=2, n_head=2, n_embd=8, mlp_ratio=2)


def _tiny(**kw):
    return GPT(GPTConfig(**{**TINY, **kw}), seed=0)


def test_whole_gpt_gradient_every_parameter_float64():
    model = _tiny(dtype="float64")
    rng = np.random.default_rng(0)
    for p in model.params.values():  # larger weights than GPT-2's 0.02 so attention is far from uniform
        p[...] = rng.normal(0, 0.3, p.shape) + (1.0 if p.ndim == 1 and p[0] == 1 else 0.0)
    idx = rng.integers(0, 7, (2, 5))
    targets = rng.integers(0, 7, (2, 5))
    targets[0, :2] = -100
    report = gradcheck(model, idx, targets)
    assert set(report) == set(model.params)
    assert max(report.values()) < 1e-6, sorted(report.items(), key=lambda kv: -kv[1])[:3]


def test_state_dict_names_exact():
    model = _tiny(n_layer=1)
    expected = ["wte.weight", "wpe.weight", "blocks.0.ln_1.weight", "blocks.0.ln_1.bias"]
    projs = ("q_proj", "k_proj", "v_proj", "o_proj")
    expected += [f"blocks.0.attn.{p}.{w}" for p in projs for w in ("weight", "bias")]
    expected += ["blocks.0.ln_2.weight", "blocks.0.ln_2.bias"]
    expected += [f"blocks.0.mlp.{p}.{w}" for p in ("up_proj", "down_proj") for w in ("weight", "bias")]
    expected += ["ln_f.weight", "ln_f.bias", "lm_head.weight"]
    assert list(model.state_dict()) == expected
    assert model.params["blocks.0.mlp.up_proj.weight"].shape == (16, 8)
    assert model.params["lm_head.weight"].shape == (7, 8)


def test_no_bias_config_and_float64_mode():
    model = _tiny(bias=False, dtype="float64")
    assert not any(k.endswith("proj.bias") for k in model.params)
    assert all(p.dtype == np.float64 for p in model.params.values())
    logits, loss = model.forward(np.zeros((1, 3), np.int64), np.ones((1, 3), np.int64))
    assert logits.dtype == np.float64 and logits.shape == (1, 3, 7)
    assert loss == pytest.approx(np.log(7), rel=0.05)  # near-uniform at init


def test_named_modules_allow_replacement_by_name():
    model = _tiny()
    names = [n for n, m in model.named_modules() if isinstance(m, Linear)]
    assert "blocks.1.attn.v_proj" in names and "lm_head" in names and len(names) == 13
    new = Linear(8, 8, seed=5)
    model.set_submodule("blocks.1.attn.v_proj", new)
    assert model.get_submodule("blocks.1.attn.v_proj") is new
    assert model.params["blocks.1.attn.v_proj.weight"] is new.weight


@pytest.mark.parametrize("bad, match", [
    (dict(idx=np.array([[0, 7]])), "idx values must be token ids"),
    (dict(idx=np.array([[0, -1]])), "idx values must be token ids"),
    (dict(idx=np.zeros((1, 7), np.int64)), "idx has sequence length 7"),
    (dict(idx=np.zeros(3, np.int64)), "idx must be a"),
    (dict(idx=np.zeros((1, 3)), ), "idx must be an integer"),
    (dict(idx=np.zeros((1, 3), np.int64), targets=np.zeros((1, 2), np.int64)), "targets must have the shape"),
    (dict(idx=np.zeros((1, 3), np.int64), targets=np.full((1, 3), 9)), "targets must be in"),
])
def test_bad_inputs_name_the_argument(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _tiny().forward(**bad)


@pytest.mark.parametrize("kw, match", [
    (dict(n_embd=10, n_head=3), "n_embd must be divisible by n_head"),
    (dict(vocab_size=0), "vocab_size must be a positive integer"),
    (dict(dtype="float16"), "dtype must be one of"),
    (dict(dropout=1.0), "dropout must be in"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**TINY, **kw})


def test_backward_without_targets_is_an_error():
    model = _tiny()
    model.forward(np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="targets"):
        model.backward()


def test_generate_deterministic_greedy_and_cropped():
    model = _tiny()
    start = np.array([[1, 2], [3, 4]])
    a = model.generate(start, 8, temperature=1.0, top_k=3, seed=1)
    b = model.generate(start, 8, temperature=1.0, top_k=3, seed=1)
    assert a.shape == (2, 10) and np.array_equal(a, b) and np.array_equal(a[:, :2], start)
    g = model.generate(start, 1, temperature=0)
    logits, _ = model.forward(start)
    np.testing.assert_array_equal(g[:, -1], logits[:, -1].argmax(-1))
    assert model.training  # mode restored


def test_dropout_changes_training_forward_only():
    model = _tiny(dropout=0.5)
    idx = np.array([[1, 2, 3]])
    a, _ = model.forward(idx)
    b, _ = model.forward(idx)
    assert not np.allclose(a, b)
    model.eval()
    c, _ = model.forward(idx)
    d, _ = model.forward(idx)
    np.testing.assert_array_equal(c, d)


def test_save_load_roundtrip(tmp_path):
    model = _tiny(bias=False)
    model.save(tmp_path / "m.npz")
    again = GPT.load(tmp_path / "m.npz")
    assert again.config == model.config
    idx = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(again.forward(idx)[0], model.forward(idx)[0])


def test_frozen_gpt_trains_only_marked_params():
    model = _tiny()
    model.freeze()
    model.unfreeze(["blocks.0.attn.q_proj.weight", "lm_head.weight"])
    model.zero_grad()
    model.forward(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))
    model.backward()
    assert set(model.grads) == {"blocks.0.attn.q_proj.weight", "lm_head.weight"}

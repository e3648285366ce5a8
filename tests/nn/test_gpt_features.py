"""GPT features: tied head, inputs_embeds, past_key_values prefixes, position ids, input gradients.

Every new gradient path is checked against central finite differences in float64; the semantics are checked
against the model itself (a prefix taken from a key/value cache must give the logits of the full sequence).
The numbers themselves are checked against PyTorch/transformers in ``tests/nn/test_golden_engine.py``.
"""

import numpy as np
import pytest

from minilora.nn import GPT, GPTConfig
from minilora.nn import functional as F
from minilora.nn.gradcheck import numeric_grad, rel_error

TINY = dict(vocab_size=7, block_size=9, n_layer=2, n_head=2, n_embd=8, mlp_ratio=2)
TOL = 1e-6


def _model(seed=0, **kw):
    """A float64 model with weights far from GPT-2's small init, so attention is far from uniform."""
    model = GPT(GPTConfig(**{**TINY, "dtype": "float64", **kw}), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for name, p in model.params.items():
        p[...] = rng.normal(0, 0.3, p.shape) + (1.0 if name.endswith("ln_1.weight") or ".ln_" in name
                                                 and name.endswith("weight") else 0.0)
    return model


def _data(B=2, T=4, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, TINY["vocab_size"], (B, T))
    targets = rng.integers(0, TINY["vocab_size"], (B, T))
    targets[0, :2] = F.IGNORE_INDEX
    return idx, targets


def _past(B=2, P=3, seed=1, n_layer=2, n_head=2, hs=4):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((B, n_head, P, hs)), rng.standard_normal((B, n_head, P, hs)))
            for _ in range(n_layer)]


def _check(model, run, inputs):
    """Relative errors of every parameter gradient and of ``inputs`` (name -> (array, analytic gradient getter))."""
    model.zero_grad()
    run()
    model.backward()
    grads = {k: g.copy() for k, g in model.grads.items()}
    analytic = {name: get(model.input_grads).copy() for name, (_, get) in inputs.items()}
    model.last_input_grads = model.input_grads  # the numeric gradients' forwards reset input_grads
    loss = lambda: run()
    report = {k: rel_error(grads[k], numeric_grad(loss, model.params[k])) for k in model.trainable_names()}
    for name, (array, _) in inputs.items():
        report[name] = rel_error(analytic[name], numeric_grad(loss, array))
    return report


def _worst(report):
    return sorted(report.items(), key=lambda kv: -kv[1])[:3]


# ----------------------------------------------------------------------------- tied head
def test_tied_head_has_no_lm_head_and_hf_state_dict():
    tied, untied = GPT(GPTConfig(**TINY, tie_word_embeddings=True)), GPT(GPTConfig(**TINY))
    assert "lm_head.weight" not in tied.state_dict()
    assert set(untied.state_dict()) - set(tied.state_dict()) == {"lm_head.weight"}
    assert "lm_head" not in dict(tied.named_modules())
    assert tied.num_params() == untied.num_params() - TINY["vocab_size"] * TINY["n_embd"]
    assert "tie_word_embeddings=True" in repr(tied)


def test_tied_head_gradcheck_every_parameter():
    model = _model(tie_word_embeddings=True)
    idx, targets = _data()
    report = _check(model, lambda: model.forward(idx, targets)[1], {})
    assert set(report) == set(model.params) and max(report.values()) < TOL, _worst(report)


def test_tied_gradient_is_the_sum_of_embedding_and_head_gradients():
    tied = _model(tie_word_embeddings=True)
    untied = GPT(GPTConfig(**{**TINY, "dtype": "float64"}))
    untied.load_state_dict({**tied.state_dict(), "lm_head.weight": tied.params["wte.weight"]})
    idx, targets = _data()
    for m in (tied, untied):
        m.zero_grad()
        m.forward(idx, targets)
        m.backward()
    np.testing.assert_array_equal(tied.forward(idx)[0], untied.forward(idx)[0])
    both = untied.grads["wte.weight"] + untied.grads["lm_head.weight"]
    np.testing.assert_allclose(tied.grads["wte.weight"], both, rtol=1e-12, atol=1e-15)
    assert np.abs(untied.grads["lm_head.weight"]).max() > 0 and np.abs(untied.grads["wte.weight"]).max() > 0


def test_tied_frozen_embedding_gets_no_gradient():
    model = _model(tie_word_embeddings=True)
    model.freeze("wte.weight")
    model.zero_grad()
    model.forward(*_data())
    model.backward()
    assert "wte.weight" not in model.grads and "ln_f.weight" in model.grads


def test_tied_save_load_roundtrip(tmp_path):
    model = GPT(GPTConfig(**TINY, tie_word_embeddings=True), seed=3)
    model.save(tmp_path / "tied.npz")
    again = GPT.load(tmp_path / "tied.npz")
    assert again.config.tie_word_embeddings and again.config == model.config
    idx, _ = _data()
    np.testing.assert_array_equal(again.forward(idx)[0], model.forward(idx)[0])


def test_file_without_the_tie_field_loads_untied(tmp_path):
    model = GPT(GPTConfig(**TINY), seed=3)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "config.tie_word_embeddings"}
    np.savez(tmp_path / "old.npz", **arrays)  # a file written before the field existed
    assert GPT.load(tmp_path / "old.npz").config.tie_word_embeddings is False


# ----------------------------------------------------------------------------- inputs_embeds
@pytest.mark.parametrize("tied", [False, True])
def test_inputs_embeds_gradcheck(tied):
    model = _model(tie_word_embeddings=tied)
    idx, targets = _data()
    embeds = np.random.default_rng(5).standard_normal((2, 4, TINY["n_embd"]))
    run = lambda: model.forward(targets=targets, inputs_embeds=embeds)[1]
    report = _check(model, run, {"inputs_embeds": (embeds, lambda g: g["inputs_embeds"])})
    assert max(report.values()) < TOL, _worst(report)
    got = model.last_input_grads
    assert set(got) == {"inputs_embeds"} and got["inputs_embeds"].shape == embeds.shape


def test_inputs_embeds_of_the_token_table_equal_token_ids():
    model = _model()
    idx, targets = _data()
    embeds = model.params["wte.weight"][idx]
    before = embeds.copy()
    a, loss_a = model.forward(idx, targets)
    b, loss_b = model.forward(targets=targets, inputs_embeds=embeds)
    np.testing.assert_array_equal(a, b)
    assert loss_a == loss_b
    np.testing.assert_array_equal(embeds, before)  # the caller's array is not modified


def test_untied_inputs_embeds_leave_wte_without_gradient():
    model = _model()
    idx, targets = _data()
    model.zero_grad()
    model.forward(targets=targets, inputs_embeds=model.params["wte.weight"][idx])
    model.backward()
    assert not model.grads["wte.weight"].any()


def test_input_grads_empty_for_token_ids_and_reset_by_forward():
    model = _model()
    idx, targets = _data()
    model.forward(targets=targets, inputs_embeds=model.params["wte.weight"][idx])
    model.backward()
    assert "inputs_embeds" in model.input_grads
    model.forward(idx, targets)
    assert model.input_grads == {}
    model.backward()
    assert model.input_grads == {}


# ----------------------------------------------------------------------------- past_key_values
@pytest.mark.parametrize("tied, use_embeds", [(False, False), (True, True)])
def test_prefix_gradcheck_keys_values_and_parameters(tied, use_embeds):
    model = _model(tie_word_embeddings=tied)
    idx, targets = _data()
    past = _past()
    embeds = np.random.default_rng(5).standard_normal((2, 4, TINY["n_embd"]))
    if use_embeds:
        run = lambda: model.forward(targets=targets, inputs_embeds=embeds, past_key_values=past)[1]
    else:
        run = lambda: model.forward(idx, targets, past_key_values=past)[1]
    inputs = {f"past[{i}][{j}]": (past[i][j], lambda g, i=i, j=j: g["past_key_values"][i][j])
              for i in range(2) for j in range(2)}
    if use_embeds:
        inputs["inputs_embeds"] = (embeds, lambda g: g["inputs_embeds"])
    report = _check(model, run, inputs)
    assert max(report.values()) < TOL, _worst(report)
    got = model.last_input_grads
    assert set(got) == ({"past_key_values", "inputs_embeds"} if use_embeds else {"past_key_values"})
    assert [tuple(a.shape for a in kv) for kv in got["past_key_values"]] == [((2, 2, 3, 4),) * 2] * 2


def _kv_cache(model, idx):
    """The keys and values each layer computed for ``idx``: (B, nh, T, hs) pairs (from the attention caches)."""
    model.forward(idx)
    return [(b.attn.cache[1].copy(), b.attn.cache[2].copy()) for b in model.blocks]


@pytest.mark.parametrize("tied", [False, True])
def test_prefix_from_a_key_value_cache_continues_the_sequence(tied):
    """GPT-2 with a cache: tokens after a prefix of length P take positions P..P+T-1 and see the whole prefix."""
    model = _model(tie_word_embeddings=tied)
    full = np.random.default_rng(2).integers(0, 7, (2, 7))
    whole, _ = model.forward(full)
    past = _kv_cache(model, full[:, :3])
    rest, _ = model.forward(full[:, 3:], past_key_values=past)
    np.testing.assert_allclose(rest, whole[:, 3:], rtol=1e-12, atol=1e-13)
    # with positions 0..T-1 instead the continuation is a different computation
    shifted, _ = model.forward(full[:, 3:], past_key_values=past, position_ids=np.arange(4))
    assert not np.allclose(shifted, whole[:, 3:])


def test_empty_prefix_is_no_prefix():
    model = _model()
    idx, targets = _data()
    empty = [(np.zeros((2, 2, 0, 4)), np.zeros((2, 2, 0, 4))) for _ in range(2)]
    np.testing.assert_allclose(model.forward(idx, past_key_values=empty)[0], model.forward(idx)[0], rtol=1e-14)


def test_prefix_tokens_stay_causal_among_themselves():
    model = _model()
    past = _past()
    idx = np.random.default_rng(3).integers(0, 7, (2, 5))
    a, _ = model.forward(idx, past_key_values=past)
    idx2 = idx.copy()
    idx2[:, 3:] = (idx2[:, 3:] + 1) % 7  # change the future: earlier logits must not move
    b, _ = model.forward(idx2, past_key_values=past)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    assert not np.allclose(a[:, 3:], b[:, 3:])
    past2 = [(k + 1.0, v) for k, v in past]  # every token sees the prefix, the first one included
    c, _ = model.forward(idx, past_key_values=past2)
    assert not np.isclose(a[:, 0], c[:, 0]).all()


# ----------------------------------------------------------------------------- positions
@pytest.mark.parametrize("kind", ["offset", "batch"])
def test_position_gradcheck_offsets_and_per_row_ids(kind):
    model = _model()
    idx, targets = _data()
    if kind == "offset":  # positions P..P+T-1 after a prefix
        past = _past(P=4)
        run = lambda: model.forward(idx, targets, past_key_values=past)[1]
        used = np.arange(4, 8)
    else:
        pos = np.array([[0, 2, 4, 6], [1, 3, 5, 8]])
        run = lambda: model.forward(idx, targets, position_ids=pos)[1]
        used = np.unique(pos)
    report = _check(model, run, {})
    assert max(report.values()) < TOL, _worst(report)
    rows = np.flatnonzero(np.abs(model.grads["wpe.weight"]).sum(axis=1))
    np.testing.assert_array_equal(rows, used)


def test_position_ids_override():
    model = _model()
    idx, _ = _data()
    np.testing.assert_array_equal(model.forward(idx, position_ids=np.arange(4))[0], model.forward(idx)[0])
    same = model.forward(idx, position_ids=np.array([[2, 3, 4, 5]] * 2))[0]
    np.testing.assert_array_equal(same, model.forward(idx, position_ids=np.arange(2, 6))[0])
    assert not np.allclose(same, model.forward(idx)[0])


# ----------------------------------------------------------------------------- bad input
def _bad_past(kind):
    past = _past(B=2, P=3)
    if kind == "length":
        return past[:1]
    if kind == "pair":
        return [past[0][0], past[1]]
    if kind == "batch":
        return [(k[:1], v[:1]) for k, v in past]
    if kind == "heads":
        return [(k.reshape(2, 1, 3, 8), v.reshape(2, 1, 3, 8)) for k, v in past]
    if kind == "mixed_P":
        return [past[0], (past[1][0][:, :, :2], past[1][1][:, :, :2])]
    if kind == "dtype":
        return [(k.astype(np.float32), v.astype(np.float32)) for k, v in past]
    if kind == "array":
        return np.zeros((2, 2, 2, 2, 3, 4))
    raise AssertionError(kind)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(idx=np.zeros((2, 4), np.int64), inputs_embeds=np.zeros((2, 4, 8))), ValueError, "exactly one of idx"),
    (dict(), ValueError, "got neither"),
    (dict(inputs_embeds=np.zeros((2, 4))), ValueError, r"inputs_embeds must be a \(B, T, n_embd=8\)"),
    (dict(inputs_embeds=np.zeros((2, 4, 6))), ValueError, r"inputs_embeds must be a \(B, T, n_embd=8\)"),
    (dict(inputs_embeds=np.zeros((2, 0, 8))), ValueError, "T >= 1"),
    (dict(inputs_embeds=np.zeros((2, 4, 8), np.float32)), TypeError, "inputs_embeds must have the model's dtype"),
    (dict(inputs_embeds=np.zeros((2, 10, 8))), ValueError, "inputs_embeds has sequence length 10"),
    (dict(inputs_embeds=np.zeros((2, 4, 8)), targets=np.zeros((2, 5), np.int64)), ValueError,
     r"targets must have the shape \(B, T\) = \(2, 4\)"),
    (dict(idx=np.zeros((2, 4), np.int64), targets=np.zeros((2, 4))), TypeError, "targets must be an integer"),
    (dict(idx=np.zeros((2, 7), np.int64), past_key_values=_past(P=3)), ValueError,
     r"past_key_values length P=3 \+ idx sequence length T=7 is 10"),
    (dict(idx=np.zeros((2, 4), np.int64), past_key_values=_bad_past("length")), ValueError,
     r"one \(k, v\) pair per layer \(n_layer=2\), got 1"),
    (dict(idx=np.zeros((2, 4), np.int64), past_key_values=_bad_past("pair")), ValueError,
     r"past_key_values\[0\] must be a \(k, v\) pair"),
    (dict(idx=np.zeros((2, 4), np.int64), past_key_values=_bad_past("batch")), ValueError,
     r"past_key_values\[0\]\[0\] must have shape .* \(2, 2, 3, 4\)"),
    (dict(idx=np.zeros((2, 4), np.int64), past_key_values=_bad_past("heads")), ValueError,
     r"past_key_values\[0\]\[0\] must have shape"),
    (dict(idx=np.zeros((2, 4), np.int64), past_key_values=_bad_past("mixed_P")), ValueError,
     r"past_key_values\[1\]\[0\] must have shape .* one P for every layer"),
    (dict(idx=np.zeros((2, 4), np.int64), past_key_values=_bad_past("dtype")), TypeError,
     r"past_key_values\[0\]\[0\] must have the model's dtype float64"),
    (dict(idx=np.zeros((2, 4), np.int64), past_key_values=_bad_past("array")), TypeError,
     "past_key_values must be a sequence"),
    (dict(idx=np.zeros((2, 4), np.int64), position_ids=np.arange(5)), ValueError,
     r"position_ids must have shape \(T,\) = \(4,\) or \(B, T\) = \(2, 4\)"),
    (dict(idx=np.zeros((2, 4), np.int64), position_ids=np.arange(4.0)), TypeError, "position_ids must be an integer"),
    (dict(idx=np.zeros((2, 4), np.int64), position_ids=np.arange(6, 10)), ValueError,
     r"position_ids must be in \[0, block_size=9\), got min 6 max 9"),
])
def test_bad_inputs_name_the_argument(kw, exc, match):
    model = _model()
    with pytest.raises(exc, match=match):
        model.forward(**kw)


def test_bad_config_tie_flag():
    with pytest.raises(ValueError, match="tie_word_embeddings must be a bool"):
        GPTConfig(**TINY, tie_word_embeddings="yes")

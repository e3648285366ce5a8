"""The GPT against PyTorch autograd: logits, loss and every gradient (tests/golden/engine.npz).

The vectors come from a PyTorch twin of the GPT that ``tools/golden/engine.py`` checked against
transformers' ``GPT2LMHeadModel`` (prefix as a key/value cache, positions P..P+T-1). Float64 must agree to
1e-9 relative (each array relative to its largest entry; gradients that are zero by symmetry, such as a key
bias without a prefix, to an absolute 1e-15); float32 logits to rtol 1e-5.
"""

import json

import numpy as np
import pytest
from conftest import load_golden

from minilora.nn import GPT, GPTConfig

G = load_golden("engine")
CASES = json.loads(str(G["cases_json"][()]))
PATHS = [(c["name"], p) for c in CASES for p in c["paths"]]
REL64 = 1e-9
FLOOR = 1e-6  # the generator's floor: |a - b| <= REL64 * FLOOR = 1e-15 for gradients that are ~0 by symmetry


def _case(name):
    return next(c for c in CASES if c["name"] == name)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), FLOOR))


def _weights(case):
    flat, out, off = G[f"{case['name']}.w"], {}, 0
    for name, shape in zip(case["params"], case["shapes"]):
        n = int(np.prod(shape))
        out[name] = flat[off:off + n].reshape(shape)
        off += n
    assert off == flat.size
    return out


def _model(case, dtype):
    model = GPT(GPTConfig(**case["config"], dtype=dtype), seed=0)
    model.load_state_dict(_weights(case))  # cast to the model's dtype (float32: round to nearest)
    return model


def _run(model, case, path):
    """forward + backward of one stored path; returns logits, loss, flat grads and input grads."""
    key = f"{case['name']}.{path}."
    kw = {"targets": G[key + "targets"]}
    if key + "idx" in G:
        kw["idx"] = G[key + "idx"]
    else:
        kw["inputs_embeds"] = G[key + "inputs_embeds"].astype(model.dtype)
    if key + "past" in G:
        past = G[key + "past"].astype(model.dtype)
        kw["past_key_values"] = [(past[i, 0], past[i, 1]) for i in range(past.shape[0])]
    if key + "position_ids" in G:
        kw["position_ids"] = G[key + "position_ids"]
    model.zero_grad()
    logits, loss = model.forward(**kw)
    model.backward()
    grads = {n: model.grads[n] for n in case["params"]}
    return logits, loss, grads, model.input_grads


def test_golden_file_covers_what_it_should():
    assert {c["config"]["tie_word_embeddings"] for c in CASES} == {False, True}
    assert {c["config"]["bias"] for c in CASES} == {False, True}
    assert any(c["config"]["vocab_size"] % 2 for c in CASES)
    assert {p for _, p in PATHS} == {"ids", "embeds", "prefix", "embeds_prefix_pos"}
    assert all((G[f"{n}.{p}.targets"] == -100).any() for n, p in PATHS)
    assert all(("lm_head.weight" in c["params"]) != c["config"]["tie_word_embeddings"] for c in CASES)


@pytest.mark.parametrize("name, path", PATHS)
def test_float64_logits_loss_and_every_gradient_match_torch(name, path):
    case = _case(name)
    key = f"{name}.{path}."
    logits, loss, grads, input_grads = _run(_model(case, "float64"), case, path)
    assert _rel(logits, G[key + "logits"]) < REL64
    assert abs(loss - float(G[key + "loss"])) <= REL64 * abs(float(G[key + "loss"]))
    flat = np.concatenate([grads[n].reshape(-1) for n in case["params"]])
    ref, off = G[key + "grads"], 0
    for n, shape in zip(case["params"], case["shapes"]):  # every parameter, by name
        size = int(np.prod(shape))
        assert _rel(grads[n], ref[off:off + size].reshape(shape)) < REL64, n
        off += size
    assert flat.size == ref.size
    if key + "d_inputs_embeds" in G:
        assert _rel(input_grads["inputs_embeds"], G[key + "d_inputs_embeds"]) < REL64
    else:
        assert "inputs_embeds" not in input_grads
    if key + "d_past" in G:
        d_past = G[key + "d_past"]
        for i, (dk, dv) in enumerate(input_grads["past_key_values"]):
            assert _rel(dk, d_past[i, 0]) < REL64 and _rel(dv, d_past[i, 1]) < REL64, i
    else:
        assert "past_key_values" not in input_grads


@pytest.mark.parametrize("name, path", PATHS)
def test_float32_logits_match_torch(name, path):
    case = _case(name)
    logits, *_ = _run(_model(case, "float32"), case, path)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, G[f"{name}.{path}.logits32"], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- single operations
def _op(name, *keys):
    return [G[f"ops.{name}.{k}"] for k in keys]


def test_gelu_matches_torch_tanh_approximation():
    from minilora.nn import functional as F

    x, out, dout, dx = _op("gelu", "x", "out", "dout", "dx")
    y, cache = F.gelu_forward(x.copy())
    assert _rel(y, out) < REL64 and _rel(F.gelu_backward(dout, cache), dx) < REL64


def test_layernorm_matches_torch():
    from minilora.nn import functional as F

    x, w, b, out, dout, dx, dw, db = _op("layernorm", "x", "w", "b", "out", "dout", "dx", "dw", "db")
    y, cache = F.layernorm_forward(x.copy(), w, b)
    assert _rel(y, out) < REL64
    for got, ref in zip(F.layernorm_backward(dout, cache), (dx, dw, db)):
        assert _rel(got, ref) < REL64


def test_linear_matches_torch():
    from minilora.nn import functional as F

    x, w, b, out, dout, dx, dw, db = _op("linear", "x", "w", "b", "out", "dout", "dx", "dw", "db")
    y, cache = F.linear_forward(x, w, b)
    assert _rel(y, out) < REL64
    for got, ref in zip(F.linear_backward(dout, cache), (dx, dw, db)):
        assert _rel(got, ref) < REL64


def test_cross_entropy_with_ignore_index_matches_torch():
    from minilora.nn import functional as F

    z, t, out, dz = _op("ce", "z", "t", "out", "dz")
    assert (t == F.IGNORE_INDEX).any()
    loss, cache = F.cross_entropy_forward(z, t)
    assert abs(loss - float(out)) <= REL64 * abs(float(out))
    assert _rel(F.cross_entropy_backward(1.0, cache), dz) < REL64

"""The module protocol and every layer's backward, checked by finite differences in float64."""

import numpy as np
import pytest

from minilora.nn import (
    MLP,
    Block,
    CausalSelfAttention,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
)
from minilora.nn.gradcheck import gradcheck

TOL = 1e-6


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (2, 1, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck_any_leading_dims(shape, bias):
    lin = Linear(4, 3, bias=bias, seed=1).to("float64")
    report = gradcheck(lin, _x(shape))
    assert set(report) == ({"weight", "bias", "input"} if bias else {"weight", "input"})
    assert max(report.values()) < TOL, report


def test_linear_shapes_and_dtype():  # values: tests/nn/test_golden_engine.py (torch)
    lin = Linear(4, 3, seed=0)
    x = _x((2, 5, 4)).astype(np.float32)
    y = lin.forward(x)
    assert y.shape == (2, 5, 3) and y.dtype == np.float32
    assert lin.params["weight"].shape == (3, 4)


def test_frozen_parameter_gets_no_gradient_and_no_matmul():
    lin = Linear(4, 3, seed=0).to("float64")
    x, dout = _x((6, 4)), _x((6, 3), 1)
    lin.forward(x)
    dx_trainable = lin.backward(dout)
    lin.freeze("weight")
    lin.zero_grad()
    lin.forward(x)
    dx = lin.backward(dout)
    assert set(lin.grads) == {"bias"}
    np.testing.assert_array_equal(dx, dx_trainable)  # freezing the weight changes no other gradient
    assert lin.trainable_names() == ["bias"] and not lin.is_trainable("weight")
    lin.unfreeze()
    assert lin.trainable_names() == ["weight", "bias"]


def test_grads_accumulate_until_zero_grad():
    lin = Linear(3, 2, seed=0).to("float64")
    x, d = _x((4, 3)), _x((4, 2), 1)
    lin.zero_grad()
    lin.forward(x)
    lin.backward(d)
    once = lin.grads["weight"].copy()
    lin.forward(x)
    lin.backward(d)
    np.testing.assert_allclose(lin.grads["weight"], 2 * once)
    buf = lin.grads["weight"]
    lin.zero_grad()
    assert lin.grads["weight"] is buf and not buf.any()


@pytest.mark.parametrize("act", ["gelu", "relu"])
@pytest.mark.parametrize("sizes", [[3, 5, 2], [3, 4, 4, 2], [3, 2]])
def test_mlp_gradcheck(sizes, act):
    mlp = MLP(sizes, act, seed=2).to("float64")
    report = gradcheck(mlp, _x((2, 3, 3)) + 0.01)
    assert max(report.values()) < TOL, report
    assert len(mlp.grads) == 2 * (len(sizes) - 1)


def test_layernorm_and_embedding_gradcheck():
    ln = LayerNorm(5).to("float64")
    ln._params["weight"][:] = _x(5, 3)
    ln._params["bias"][:] = _x(5, 4)
    assert max(gradcheck(ln, _x((3, 2, 5))).values()) < TOL
    emb = Embedding(7, 3, seed=0).to("float64")
    idx = np.array([[0, 3, 3], [6, 0, 1]])
    report = gradcheck(emb, idx)
    assert set(report) == {"weight"} and report["weight"] < TOL


def test_attention_and_block_gradcheck():
    attn = CausalSelfAttention(8, 2, seed=0).to("float64")
    assert max(gradcheck(attn, _x((2, 5, 8))).values()) < TOL
    block = Block(8, 2, mlp_ratio=2, seed=0).to("float64")
    report = gradcheck(block, _x((2, 4, 8)))
    assert len(report) == 17 and max(report.values()) < TOL, report


def test_dropout_gradcheck_and_eval_identity():
    drop = Dropout(0.5, seed=0)
    x = _x((4, 6))
    drop.eval()
    assert drop.forward(x) is x
    drop.train()
    y = drop.forward(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2 * x[kept])
    np.testing.assert_allclose(drop.backward(np.ones_like(x)), 2.0 * kept)


def test_named_modules_and_set_submodule_rename_params():
    block = Block(8, 2, seed=0)
    names = dict(block.named_modules())
    assert {"", "ln_1", "attn", "attn.q_proj", "mlp.up_proj", "mlp.down_proj"} <= set(names)
    assert isinstance(block.get_submodule("attn.q_proj"), Linear)

    class Wrapper(Module):
        def __init__(self, base):
            super().__init__()
            self.add_param("weight", base.weight, trainable=False)
            self.inner = Linear(8, 8, bias=False, seed=0)

    block.set_submodule("attn.q_proj", Wrapper(block.attn.q_proj))
    p = block.params
    assert "attn.q_proj.inner.weight" in p and "attn.q_proj.weight" in p and "attn.q_proj.bias" not in p
    assert not block.is_trainable("attn.q_proj.weight")
    with pytest.raises(ValueError, match="nope"):
        block.set_submodule("attn.nope", Linear(2, 2))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="x must have last dimension 4"):
        Linear(4, 3).forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="idx values must be in"):
        Embedding(5, 2).forward(np.array([0, 5]))
    with pytest.raises(TypeError, match="idx must be an integer"):
        Embedding(5, 2).forward(np.array([0.0]))
    with pytest.raises(ValueError, match="n_embd must be divisible by n_head"):
        CausalSelfAttention(10, 3)
    with pytest.raises(ValueError, match="activation"):
        MLP([2, 3], "tanh")


def test_state_dict_roundtrip_and_repr():
    a, b = MLP([3, 4, 2], seed=0), MLP([3, 4, 2], seed=1)
    b.load_state_dict(a.state_dict())
    x = _x((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"up_proj.weight": a.params["up_proj.weight"]})
    assert "up_proj" in repr(a) and "Linear(in_features=3" in repr(a)

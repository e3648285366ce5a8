"""Every functional backward against central finite differences in float64 (max relative error < 1e-6)."""

import numpy as np
import pytest

from minilora.nn import functional as F
from minilora.nn.gradcheck import check_function

TOL = 1e-6
rng = np.random.default_rng(0)


def _x(*shape):
    return rng.standard_normal(shape)


CASES = {
    "linear": (F.linear_forward, F.linear_backward, [_x(2, 3, 4), _x(5, 4), _x(5)]),
    "linear_nobias": (F.linear_forward, lambda d, c: F.linear_backward(d, c)[:2], [_x(3, 4), _x(2, 4)]),
    "layernorm": (F.layernorm_forward, F.layernorm_backward, [_x(2, 3, 6), _x(6), _x(6)]),
    "gelu": (F.gelu_forward, F.gelu_backward, [_x(4, 5) * 2]),
    "relu": (F.relu_forward, F.relu_backward, [_x(4, 5) + 0.05]),
    "softmax": (F.softmax_forward, F.softmax_backward, [_x(3, 7)]),
    "attention": (lambda q, k, v: F.attention_forward(q, k, v, 2), F.attention_backward,
                  [_x(2, 5, 6), _x(2, 5, 6), _x(2, 5, 6)]),
    "mse": (lambda y: F.mse_forward(y, np.ones((3, 2))), F.mse_backward, [_x(3, 2)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_backward_matches_finite_differences(name):
    fwd, bwd, inputs = CASES[name]
    report = check_function(fwd, bwd, inputs)
    assert report and max(report.values()) < TOL, report


@pytest.mark.parametrize("ignore", [False, True])
def test_cross_entropy_gradient_and_ignore_index(ignore):
    logits = _x(2, 4, 5)
    targets = rng.integers(0, 5, (2, 4))
    if ignore:
        targets[0, :2] = F.IGNORE_INDEX
    report = check_function(lambda z: F.cross_entropy_forward(z, targets), F.cross_entropy_backward, [logits])
    assert report[0] < TOL
    loss, _ = F.cross_entropy_forward(logits, targets)
    keep = targets != F.IGNORE_INDEX
    z = logits[keep]
    ref = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(z)), targets[keep]])
    assert loss == pytest.approx(ref, rel=1e-12)


def test_embedding_backward_accumulates_repeated_ids():
    w = _x(6, 3)
    idx = np.array([[1, 1, 4], [0, 1, 5]])
    report = check_function(lambda w: F.embedding_forward(idx, w), F.embedding_backward, [w])
    assert report[0] < TOL
    _, cache = F.embedding_forward(idx, w)
    dw = F.embedding_backward(np.ones((2, 3, 3)), cache)
    np.testing.assert_array_equal(dw[:, 0], [1, 3, 0, 0, 1, 1])


def test_attention_is_causal():
    q, k, v = _x(1, 6, 4), _x(1, 6, 4), _x(1, 6, 4)
    out, _ = F.attention_forward(q, k, v, 2)
    v2 = v.copy()
    v2[0, 4:] += 10.0  # the future must not change earlier outputs
    out2, _ = F.attention_forward(q, k, v2, 2)
    np.testing.assert_allclose(out[0, :4], out2[0, :4])
    assert not np.allclose(out[0, 4:], out2[0, 4:])


def test_gelu_is_the_tanh_approximation():
    x = np.linspace(-4, 4, 17)
    y, _ = F.gelu_forward(x)
    np.testing.assert_allclose(y, 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))))


def test_layernorm_normalizes_with_eps():
    x = _x(4, 8) * 3 + 1
    y, _ = F.layernorm_forward(x, np.ones(8), np.zeros(8))
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), x.var(-1) / (x.var(-1) + F.LN_EPS))


def test_dropout_needs_valid_p_and_rng():
    with pytest.raises(ValueError, match="dropout p"):
        F.dropout_forward(_x(2), 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        F.dropout_forward(_x(2), 0.5, None)

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
    # an ignored position does not count: changing its logits changes nothing (values: test_golden_engine)
    loss, _ = F.cross_entropy_forward(logits, targets)
    moved = logits.copy()
    moved[0, :2, 0] += 5.0  # one logit per position (a shift of all of them would change nothing anyway)
    assert (F.cross_entropy_forward(moved, targets)[0] == loss) == ignore


def test_cross_entropy_all_ignored_is_zero_not_nan():
    """Departure from torch (nan, the mean of nothing): 0, so a micro-batch without answers adds nothing."""
    logits = _x(2, 3, 5)
    loss, cache = F.cross_entropy_forward(logits, np.full((2, 3), F.IGNORE_INDEX))
    assert loss == 0.0 and not F.cross_entropy_backward(1.0, cache).any()


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


def test_dropout_needs_valid_p_and_rng():
    with pytest.raises(ValueError, match="dropout p"):
        F.dropout_forward(_x(2), 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        F.dropout_forward(_x(2), 0.5, None)

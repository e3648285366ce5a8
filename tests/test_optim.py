"""Optimizer steps against updates computed by hand (PyTorch's rules), clipping and state memory."""

import numpy as np
import pytest

from minilora.nn import Linear
from minilora.optim import SGD, Adam, AdamW, clip_grad_norm, grad_norm

W0 = np.array([[1.0, -2.0], [0.5, 3.0]])
G1 = np.array([[0.1, 0.2], [-0.3, 0.4]])
G2 = np.array([[-0.5, 0.1], [0.2, 0.0]])


def _model(trainable_bias=False):
    m = Linear(2, 2, seed=0).to("float64")
    m.params["weight"][...] = W0
    if not trainable_bias:
        m.freeze("bias")
    return m


def _steps(opt, model, grads):
    for g in grads:
        model.zero_grad()
        model.grads["weight"][...] = g
        opt.step()
    return model.params["weight"].copy()


def test_sgd_plain_and_weight_decay():
    m = _model()
    w = _steps(SGD(m, lr=0.1, weight_decay=0.01), m, [G1])
    np.testing.assert_allclose(w, W0 - 0.1 * (G1 + 0.01 * W0))


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_by_hand(nesterov):
    m = _model()
    opt = SGD(m, lr=0.1, momentum=0.9, nesterov=nesterov)
    w = _steps(opt, m, [G1, G2])
    buf1 = G1  # first step: buffer = gradient (PyTorch, dampening 0)
    d1 = G1 + 0.9 * buf1 if nesterov else buf1
    w1 = W0 - 0.1 * d1
    buf2 = 0.9 * buf1 + G2
    d2 = G2 + 0.9 * buf2 if nesterov else buf2
    np.testing.assert_allclose(w, w1 - 0.1 * d2, rtol=1e-14)
    assert opt.state_bytes() == W0.nbytes  # one buffer, only the trainable weight


def test_adam_bias_correction_by_hand():
    m = _model()
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    w = _steps(Adam(m, lr=lr, betas=(b1, b2), eps=eps), m, [G1, G2])
    mom, vel, ref = np.zeros_like(W0), np.zeros_like(W0), W0.copy()
    for t, g in enumerate([G1, G2], start=1):
        mom = b1 * mom + (1 - b1) * g
        vel = b2 * vel + (1 - b2) * g**2
        ref = ref - lr * (mom / (1 - b1**t)) / (np.sqrt(vel / (1 - b2**t)) + eps)
    np.testing.assert_allclose(w, ref, rtol=1e-12)
    # the first step moves every weight by ~lr: bias correction makes m/sqrt(v) = g/|g|
    m2 = _model()
    np.testing.assert_allclose(_steps(Adam(m2, lr=lr), m2, [G1]), W0 - lr * np.sign(G1), rtol=1e-6)


def test_adamw_decoupled_differs_from_adam_l2():
    lr, wd = 0.01, 0.1
    ma, mw = _model(), _model()
    wa = _steps(Adam(ma, lr=lr, weight_decay=wd), ma, [G1])
    ww = _steps(AdamW(mw, lr=lr, weight_decay=wd), mw, [G1])
    # AdamW, Alg. 2: decay the weight, then the Adam step on the raw gradient (= sign on step 1)
    np.testing.assert_allclose(ww, W0 * (1 - lr * wd) - lr * np.sign(G1), rtol=1e-6)
    # Adam + L2: the decay enters the gradient and is normalised away on step 1
    np.testing.assert_allclose(wa, W0 - lr * np.sign(G1 + wd * W0), rtol=1e-6)
    assert not np.allclose(wa, ww)


def test_only_trainable_params_updated_and_hold_state():
    m = _model()
    bias = m.params["bias"].copy()
    opt = AdamW(m, lr=0.1)
    _steps(opt, m, [G1])
    np.testing.assert_array_equal(m.params["bias"], bias)
    assert set(opt.state) == {"weight"} and opt.state_bytes() == 2 * W0.nbytes
    assert SGD(m, lr=0.1).state_bytes() == 0


def test_exclude_skips_decay():
    m = _model()
    w = _steps(AdamW(m, lr=0.01, weight_decay=0.5, exclude=lambda n: n == "weight"), m, [G1])
    np.testing.assert_allclose(w, W0 - 0.01 * np.sign(G1), rtol=1e-6)


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert grad_norm(grads) == 5.0
    assert clip_grad_norm(grads, 1.0) == 5.0
    assert grad_norm(grads) == pytest.approx(1.0, rel=1e-6)
    assert clip_grad_norm(grads, 10.0) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0)


@pytest.mark.parametrize("make, match", [
    (lambda m: SGD(m, lr=-1), "lr"),
    (lambda m: SGD(m, lr=0.1, momentum=1.0), "momentum"),
    (lambda m: SGD(m, lr=0.1, nesterov=True), "nesterov"),
    (lambda m: Adam(m, betas=(0.9, 1.0)), "betas"),
    (lambda m: AdamW(m, weight_decay=-0.1), "weight_decay"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make(_model())
    with pytest.raises(TypeError, match="model"):
        SGD({"w": W0}, lr=0.1)

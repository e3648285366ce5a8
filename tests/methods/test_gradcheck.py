"""Every trainable parameter of every method, checked against central finite differences in float64, through
the whole GPT (untied and tied head); the LSTM, the activations and the adapter also on their own."""

import numpy as np
import pytest

from minilora.nn.gradcheck import check_function, gradcheck
from minilora.peft import adapters, prefix_tuning
from minilora.peft.layers import ACTIVATIONS
from minilora.peft.lstm import LSTM, lstm_direction_backward, lstm_direction_forward

from .cases import METHODS, apply_method, batch, tiny_gpt

TOL = 1e-6


def _worst(report):
    return sorted(report.items(), key=lambda kv: -kv[1])[:3]


SLOW = {"ptuning_lstm"}  # 400+ LSTM parameters, two GPT forwards each


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in METHODS])
def test_gradcheck_every_trainable_parameter_through_the_gpt(name, tied):
    model, _ = apply_method(name, tie_word_embeddings=tied)
    model.eval()
    report = gradcheck(model, *batch())
    assert set(report) == set(model.trainable_names()) and report
    assert max(report.values()) < TOL, _worst(report)


def test_gradcheck_prefix_on_a_model_with_adapters():
    """The methods compose: a prefix in every layer of a model whose blocks carry adapters."""
    base = adapters.apply(tiny_gpt(), adapters.DoubleSeqBnConfig(reduction_factor=2), seed=1)
    trainable = base.trainable_names()
    model = prefix_tuning.apply(base, prefix_tuning.PrefixTuningConfig(2), seed=2)
    model.base_model.unfreeze(trainable)  # train the adapters and the prefix together
    rng = np.random.default_rng(3)
    for n in model.trainable_names():
        model.params[n][...] += rng.normal(0, 0.3, model.params[n].shape)
    report = gradcheck(model, *batch())
    assert len(report) == len(trainable) + 1 and max(report.values()) < TOL, _worst(report)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reversed"])
def test_lstm_direction_gradcheck(reverse):
    rng = np.random.default_rng(0)
    B, T, I, H = 2, 5, 3, 4
    x = rng.standard_normal((B, T, I))
    w = [rng.normal(0, 0.6, s) for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]

    def fwd(x, w_ih, w_hh, b_ih, b_hh):
        x = x[:, ::-1] if reverse else x
        h, cache = lstm_direction_forward(x, w_ih, w_hh, b_ih, b_hh)
        return (h[:, ::-1] if reverse else h), cache

    def bwd(dh, cache):
        dx, *dw = lstm_direction_backward(dh[:, ::-1] if reverse else dh, cache)
        return (dx[:, ::-1] if reverse else dx, *dw)

    report = check_function(fwd, bwd, [x, *w])
    assert max(report.values()) < 1e-8, report


@pytest.mark.parametrize("layers", [1, 2, pytest.param(3, marks=pytest.mark.slow)])
def test_lstm_module_gradcheck(layers):
    lstm = LSTM(3, 2, num_layers=layers, seed=0, dtype="float64")
    for p in lstm.params.values():
        p[...] *= 3.0  # away from the near-linear regime of the small init
    x = np.random.default_rng(1).standard_normal((2, 4, 3))
    report = gradcheck(lstm, x)
    assert len(report) == 8 * layers + 1 and max(report.values()) < 1e-8, _worst(report)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradcheck(name):
    forward, backward = ACTIVATIONS[name]
    x = np.linspace(-4, 4, 37) + 0.013  # no point exactly at relu's kink
    report = check_function(lambda x: forward(x), lambda d, c: backward(d, c), [x])
    assert report[0] < 1e-8, report


@pytest.mark.parametrize("init", adapters.INIT_WEIGHTS)
def test_bottleneck_adapter_gradcheck(init):
    layer = adapters.BottleneckAdapter(6, 3, "swish", init, scaling=0.7, seed=0, dtype="float64")
    for p in layer.params.values():
        p[...] += np.random.default_rng(1).normal(0, 0.5, p.shape)
    report = gradcheck(layer, np.random.default_rng(2).standard_normal((2, 4, 6)))
    assert len(report) == 5 and max(report.values()) < 1e-8, _worst(report)

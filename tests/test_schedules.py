"""Schedules against the learning rates transformers' schedulers set (tests/golden/optim.npz, tools/golden/optim.py).

Each golden case ran a transformers ``get_*_schedule_with_warmup`` (a ``LambdaLR``) on a torch optimizer whose
initial rate is ``lr_max`` and recorded ``param_groups[0]["lr"]`` at every step: what a transformers user's
optimizer actually gets. minilora returns ``lr_max`` times the same multiplier, computed in the same order.
"""

import json

import numpy as np
import pytest
from conftest import load_golden

from minilora import schedules as S

G = load_golden("optim")
EPS = np.finfo(np.float64).eps
CASES = [json.loads(str(G[f"sched{i}_config"])) | {"i": i} for i in range(int(G["n_sched"]))]


def _cases(function):
    return [pytest.param(c, id=f"{c['i']}-{c['kwargs']}") for c in CASES if c["function"] == function]


@pytest.mark.parametrize("case", _cases("get_cosine_schedule_with_warmup"))
def test_cosine_matches_transformers(case):
    """Equal up to ``total``; after it transformers' cosine climbs back up, minilora's stays at lr_min (0).

    Tolerance: 4 ulp of ``lr_max``, for NumPy's cosine (vectorised, at most 1-2 ulp from the C library's
    ``cos`` that transformers' ``math.cos`` calls; bit-equal where both use the C library) after the
    exact operations ``0.5 * (1 + c)`` and the one rounding of ``lr_max * multiplier`` done in the same order.
    """
    kw, lr_max, i = case["kwargs"], case["lr_max"], case["i"]
    total, warmup = kw["num_training_steps"], kw["num_warmup_steps"]
    steps = np.arange(case["n_steps"])
    got = S.cosine_with_warmup(steps, total=total, warmup=warmup, lr_max=lr_max)
    ref = G[f"sched{i}_lr"]
    upto = steps <= total
    np.testing.assert_allclose(got[upto], ref[upto], rtol=0, atol=4 * EPS * lr_max)
    np.testing.assert_array_equal(got[~upto], 0.0)  # the documented departure
    assert np.any(ref[~upto] > 0)  # ... which is a real one: transformers' rate rises again after total


@pytest.mark.parametrize("case", _cases("get_cosine_with_min_lr_schedule_with_warmup"))
def test_cosine_lr_min_matches_transformers_min_lr(case):
    """``lr_min`` is transformers' ``min_lr``: warmup from 0, cosine from ``lr_max`` down to ``min_lr``.

    transformers computes ``lr_max * (f * (1 - r) + r)`` with ``r = min_lr / lr_max`` (5 roundings),
    minilora ``lr_min + (lr_max - lr_min) * f`` (3 roundings), each of a term at most ``lr_max``: the two
    differ by at most 8 half-ulps of ``lr_max``, plus the cosine's 2 ulp (see above) — tolerance 8 ulp.
    """
    kw, lr_max, i = case["kwargs"], case["lr_max"], case["i"]
    total = kw["num_training_steps"]
    steps = np.arange(total + 1)
    got = S.cosine_with_warmup(steps, total=total, warmup=kw["num_warmup_steps"], lr_max=lr_max,
                               lr_min=kw["min_lr"])
    np.testing.assert_allclose(got, G[f"sched{i}_lr"][: total + 1], rtol=0, atol=8 * EPS * lr_max)
    assert S.cosine_with_warmup(total + 5, total, kw["num_warmup_steps"], lr_max, kw["min_lr"]) == kw["min_lr"]


@pytest.mark.parametrize("case", _cases("get_linear_schedule_with_warmup"))
def test_linear_matches_transformers(case):
    """Bit for bit, after ``total`` too (transformers clamps at 0): the same operations in the same order."""
    kw, i = case["kwargs"], case["i"]
    steps = np.arange(case["n_steps"])
    got = S.linear(steps, total=kw["num_training_steps"], lr_max=case["lr_max"], warmup=kw["num_warmup_steps"])
    np.testing.assert_array_equal(got, G[f"sched{i}_lr"])


@pytest.mark.parametrize("case", _cases("get_constant_schedule_with_warmup"))
def test_constant_matches_transformers(case):
    """Bit for bit: ``lr * (s / warmup)`` during the warmup, ``lr`` after."""
    i = case["i"]
    got = S.constant(np.arange(case["n_steps"]), case["lr_max"], warmup=case["kwargs"]["num_warmup_steps"])
    np.testing.assert_array_equal(got, G[f"sched{i}_lr"])


def test_linear_lr_min_by_its_definition():
    """``linear``'s ``lr_min`` is minilora's own extension (transformers' linear schedule has none), so it is
    checked by its definition: ``lr_min + (lr_max - lr_min) * (total - s) / (total - warmup)`` after the warmup."""
    total, warmup, lr_max, lr_min = 10, 2, 1.0, 0.25
    for s, expected in [(0, 0.0), (1, 0.5), (2, 1.0), (6, 0.625), (10, 0.25), (15, 0.25)]:
        assert S.linear(s, total, lr_max, warmup=warmup, lr_min=lr_min) == expected


def test_shapes_and_types():
    lr = S.cosine_with_warmup(np.arange(121), total=100, warmup=10, lr_max=1.0, lr_min=0.1)
    assert lr.shape == (121,) and lr.dtype == np.float64
    assert np.all(np.diff(lr[10:101]) <= 0) and np.all(lr[100:] == 0.1)  # monotone decay, then flat
    assert isinstance(S.cosine_with_warmup(3, 100, 10, 1.0), float)
    assert isinstance(S.linear(3, 100, 1.0), float) and isinstance(S.constant(3, 0.1), float)
    f = S.make("cosine", total=10, warmup=0, lr_max=1.0)
    assert f(0) == 1.0 and f(10) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: S.cosine_with_warmup(0, total=0, warmup=0, lr_max=1), "total"),
    (lambda: S.cosine_with_warmup(0, total=10, warmup=11, lr_max=1), "warmup"),
    (lambda: S.linear(0, total=10, lr_max=1, warmup=-1), "warmup"),
    (lambda: S.constant(0, 0.1, warmup=-1), "warmup"),
    (lambda: S.make("step"), "schedule"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()

import numpy as np
import pytest

from minilora import schedules as S


def test_cosine_with_warmup_shape():
    steps = np.arange(0, 121)
    lr = S.cosine_with_warmup(steps, total=100, warmup=10, lr_max=1.0, lr_min=0.1)
    np.testing.assert_allclose(lr[:11], np.r_[np.arange(10) / 10, 1.0])  # linear warmup to the peak
    assert lr[55] == pytest.approx(0.55)  # half way down the half cosine: mean of max and min
    assert lr[100] == pytest.approx(0.1) and np.all(lr[100:] == lr[100])
    assert np.all(np.diff(lr[10:101]) <= 0)  # monotone decay after warmup
    assert S.cosine_with_warmup(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert isinstance(S.cosine_with_warmup(3, 100, 10, 1.0), float)


def test_linear_and_constant():
    assert S.linear(50, total=100, lr_max=2.0) == pytest.approx(1.0)
    assert S.linear(5, total=100, lr_max=2.0, warmup=10) == pytest.approx(1.0)
    assert S.constant(5, 0.3) == 0.3 and S.constant(5, 0.3, warmup=10) == pytest.approx(0.15)
    f = S.make("cosine", total=10, warmup=0, lr_max=1.0)
    assert f(0) == 1.0 and f(10) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("call, match", [
    (lambda: S.cosine_with_warmup(0, total=0, warmup=0, lr_max=1), "total"),
    (lambda: S.cosine_with_warmup(0, total=10, warmup=11, lr_max=1), "warmup"),
    (lambda: S.make("step"), "schedule"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()

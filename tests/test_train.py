"""The training loop: gradient accumulation equals a big batch, history, determinism, evaluation."""

import json

import numpy as np
import pytest
from conftest import load_golden

from minilora import data, optim, schedules
from minilora.nn.gpt import GPT, GPTConfig
from minilora.nn.mlp import MLPRegressor
from minilora.train import History, train

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=20, n_layer=1, n_head=2, n_embd=16, dtype="float64")


@pytest.mark.parametrize("make_opt", [lambda m: optim.SGD(m, lr=0.5, momentum=0.9),
                                      lambda m: optim.AdamW(m, lr=1e-2, weight_decay=0.1)])
def test_grad_accum_equals_big_batch(make_opt):
    k, micro = 4, 3
    big = data.task_batch(data.PRETRAIN_TASKS, k * micro, seed=0)
    rows = lambda i: slice((i % k) * micro, (i % k + 1) * micro)
    pieces = lambda i: (big[0][rows(i)], big[1][rows(i)])
    a, b = GPT(CFG, seed=1), GPT(CFG, seed=1)
    ha = train(a, big, make_opt(a), steps=2, progress=False)
    hb = train(b, pieces, make_opt(b), steps=2, grad_accum=k, progress=False)
    for name, p in a.params.items():
        np.testing.assert_allclose(b.params[name], p, rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(hb.loss, ha.loss, rtol=1e-12)
    np.testing.assert_allclose(hb.grad_norm, ha.grad_norm, rtol=1e-9)


def test_history_schedule_and_determinism():
    stream = data.task_stream("copy", 8, seed=3)
    runs = []
    for _ in range(2):
        m = GPT(CFG, seed=0)
        sched = schedules.make("cosine", total=6, warmup=2, lr_max=1e-2)
        runs.append(train(m, stream, optim.AdamW(m, lr=1.0), sched, steps=6, eval_every=2,
                          eval_data=data.task_batch("copy", 16, seed=9),
                          eval_fn=lambda mm: data.accuracy(mm, *data.task_batch("copy", 16, seed=9)),
                          progress=False))
    h = runs[0]
    assert isinstance(h, History) and "6 steps" in repr(h)
    # the rate of step s is the schedule's at s: transformers' get_cosine_schedule_with_warmup(2, 6) on a
    # torch optimizer with lr 1e-2 (golden), to the cosine's 4 ulp (tests/test_schedules.py)
    golden = load_golden("optim")
    (i,) = [i for i in range(int(golden["n_sched"]))
            if json.loads(str(golden[f"sched{i}_config"])) == {
                "function": "get_cosine_schedule_with_warmup", "lr_max": 1e-2, "n_steps": 9,
                "kwargs": {"num_warmup_steps": 2, "num_training_steps": 6}}]
    np.testing.assert_allclose(h.lr, golden[f"sched{i}_lr"][:6], rtol=0, atol=4 * np.finfo(float).eps * 1e-2)
    assert h.eval_step == [2, 4, 6] and len(h.eval_loss) == 3 and h.metric("exact_match").shape == (3,)
    assert all(t > 0 for t in h.tokens_per_s) and all(g > 0 for g in h.grad_norm)
    assert runs[0].loss == runs[1].loss and runs[0].eval_loss == runs[1].eval_loss


def test_eval_at_adds_evaluations_at_the_steps_asked_for():
    stream = data.task_stream("copy", 8, seed=3)
    batch = data.task_batch("copy", 16, seed=9)
    runs = {}
    for kw in (dict(eval_every=3), dict(eval_every=3, eval_at=(1, 2, 3, 7))):
        m = GPT(CFG, seed=0)
        runs[len(kw)] = train(m, stream, optim.AdamW(m, lr=1e-2), steps=7, eval_data=batch, progress=False, **kw)
    plain, more = runs[1], runs[2]
    assert plain.eval_step == [3, 6, 7] and more.eval_step == [1, 2, 3, 6, 7]  # the union, each step once
    assert more.loss == plain.loss  # evaluating does not change the run
    assert [more.eval_loss[more.eval_step.index(s)] for s in (3, 6, 7)] == plain.eval_loss
    m = MLPRegressor([2, 1])
    batch = (np.zeros((3, 2), np.float32), np.zeros((3, 1), np.float32))
    for bad in ((0,), (8,), (2.5,), (True,)):
        with pytest.raises(ValueError, match="eval_at must lie in 1 … steps=7"):
            train(m, batch, optim.SGD(m, lr=0.1), steps=7, eval_at=bad, progress=False)


def test_clipping_bounds_the_update_and_records_raw_norm():
    """train's step = the golden-tested pieces in order: backward, clip_grad_norm (records the raw norm), SGD."""
    teacher = data.low_rank_teacher(4, 3, rank=1, scale=100.0, seed=0)
    batch = teacher.sample(64, seed=1)
    m = MLPRegressor([4, 3], seed=0)
    h = train(m, batch, optim.SGD(m, lr=1.0), steps=1, max_grad_norm=0.5, progress=False)
    ref = MLPRegressor([4, 3], seed=0)
    ref.zero_grad()
    ref.forward(*batch)
    ref.backward(1.0)
    raw = optim.clip_grad_norm(ref.grads, 0.5)
    optim.SGD(ref, lr=1.0).step()
    assert raw > 0.5 and h.grad_norm == [raw]  # it clipped, and History holds the norm before clipping
    for name, p in ref.params.items():
        np.testing.assert_array_equal(m.params[name], p, err_msg=name)
    assert optim.grad_norm(m.grads) <= 0.5


def test_mlp_learns_the_low_rank_teacher():
    teacher = data.low_rank_teacher(8, 6, rank=2, seed=0)
    m = MLPRegressor([8, 6], seed=0)
    h = train(m, teacher.stream(64), optim.Adam(m, lr=0.05), steps=300, progress=False)
    assert h.loss[-1] < 1e-3 * h.loss[0]
    np.testing.assert_allclose(m.params["fc0.weight"], teacher.w_star, atol=0.02)
    assert np.linalg.matrix_rank(teacher.delta) == 2


def test_bad_arguments():
    m = MLPRegressor([2, 1])
    batch = (np.zeros((3, 2), np.float32), np.zeros((3, 1), np.float32))
    cases = [(dict(steps=-1), "steps"), (dict(grad_accum=0), "grad_accum"), (dict(eval_every=-1), "eval")]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            train(m, batch, optim.SGD(m, lr=0.1), progress=False, **kw)

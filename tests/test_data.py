import numpy as np
import pytest

from minilora import data
from minilora.nn.functional import IGNORE_INDEX


def test_task_batch_layout_reverse():
    idx, targets = data.task_batch("reverse", 5, seed=0, n_digits=4)
    assert idx.shape == targets.shape == (5, 9) and idx.dtype == np.int64
    seq = np.concatenate([idx, targets[:, -1:]], axis=1)
    assert np.all(seq[:, 0] == data.TASK_TOKEN["reverse"]) and np.all(seq[:, 5] == data.SEP)
    np.testing.assert_array_equal(seq[:, 6:], seq[:, 1:5][:, ::-1])
    assert np.all(targets[:, :5] == IGNORE_INDEX) and np.all(targets[:, 5:] >= 0)
    assert data.decode(seq[0]).startswith("[reverse] ")


@pytest.mark.parametrize("task", data.TASKS)
def test_every_task_answer(task):
    idx, targets = data.task_batch(task, 64, seed=1)
    d, ans = idx[:, 1:1 + data.N_DIGITS], targets[:, data.N_DIGITS + 1:]
    ref = {"copy": d, "reverse": d[:, ::-1], "sort": np.sort(d, 1), "add1": (d + 1) % 10,
           "sort_desc": -np.sort(-d, 1)}[task]
    np.testing.assert_array_equal(ans, ref)
    assert idx.max() < data.VOCAB_SIZE


def test_mixture_deterministic_and_heldout_disjoint():
    a = data.task_batch(data.PRETRAIN_TASKS, 200, seed=3)
    b = data.task_batch(data.PRETRAIN_TASKS, 200, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert set(np.unique(a[0][:, 0])) == {data.TASK_TOKEN[t] for t in data.PRETRAIN_TASKS}
    assert data.HELDOUT_TASK not in data.PRETRAIN_TASKS
    tr = data.heldout_train_data(16, seed=0)(0)
    ev = data.heldout_eval_batch(16)
    assert not np.array_equal(tr[0], ev[0])
    with pytest.raises(ValueError, match="task must be"):
        data.task_batch("nope", 2)


def test_accuracy_of_a_perfect_and_a_wrong_predictor():
    idx, targets = data.task_batch("copy", 8, seed=0, n_digits=3)

    class Oracle:
        training = False

        def train(self, mode=True):
            return self

        def eval(self):
            return self

        def forward(self, x, y=None):
            logits = np.zeros(x.shape + (data.VOCAB_SIZE,))
            np.put_along_axis(logits, np.where(targets >= 0, targets, 0)[..., None], 1.0, axis=-1)
            return logits, None

    assert data.accuracy(Oracle(), idx, targets) == {"token_acc": 1.0, "exact_match": 1.0}
    shifted = targets.copy()
    shifted[:, -1] = np.where(shifted[:, -1] >= 0, (shifted[:, -1] + 1) % 10, shifted[:, -1])
    acc = data.accuracy(Oracle(), idx, shifted)
    assert acc["exact_match"] == 0.0 and acc["token_acc"] == pytest.approx(2 / 3)


def test_low_rank_teacher_rank_and_samples():
    t = data.low_rank_teacher(10, 7, rank=3, noise=0.0, seed=0)
    assert np.linalg.matrix_rank(t.delta) == 3 and t.w_star.shape == (7, 10)
    x, y = t.sample(50, seed=1)
    np.testing.assert_allclose(y, x @ t.w_star.T, rtol=1e-5, atol=1e-5)
    assert x.dtype == np.float32
    with pytest.raises(ValueError, match="rank"):
        data.low_rank_teacher(4, 4, rank=5)

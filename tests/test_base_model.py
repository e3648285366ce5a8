"""The shipped base GPT loads without pickle, has the documented config and solves its pretraining tasks."""

import numpy as np
import pytest

import minilora
from minilora import base_model, data
from minilora.nn.gpt import GPT


@pytest.fixture(scope="module")
def model():
    return minilora.load_base_model()


def test_loads_without_pickle_and_matches_config(model):
    with np.load(base_model.ASSET, allow_pickle=False) as f:
        assert "wte.weight" in f.files and all(f[k].dtype != object for k in f.files)
    assert isinstance(model, GPT) and model.config == base_model.BASE_CONFIG
    assert base_model.ASSET.stat().st_size < 3 * 2**20
    assert all(p.dtype == np.float32 for p in model.params.values())


@pytest.mark.parametrize("task", data.PRETRAIN_TASKS)
def test_beats_chance_by_a_wide_margin(model, task):
    acc = data.accuracy(model, *data.task_batch(task, 256, seed=4242))
    # chance: token accuracy 0.1, exact match 1e-8
    assert acc["token_acc"] > 0.95 and acc["exact_match"] > 0.8, acc


@pytest.mark.parametrize("task", data.PRETRAIN_TASKS)
def test_solves_its_tasks_at_every_position_offset(model, task):
    """Prompt and prefix tuning put p virtual positions before the real tokens (PEFT's positions p..p+T-1):
    the base model must answer its tasks wherever the sequence starts, up to block_size - T."""
    idx, targets = data.task_batch(task, 256, seed=4243)
    T = idx.shape[1]
    model.eval()
    for offset in (0, 1, 8, base_model.BASE_CONFIG.block_size - T):
        logits, _ = model.forward(idx, position_ids=np.arange(offset, offset + T))
        mask = targets != -100
        exact = float((((logits.argmax(-1) == targets) | ~mask).all(axis=1)).mean())
        assert exact > 0.95, (task, offset, exact)


def test_heldout_task_is_not_solved_yet(model):
    assert data.exact_match(model, data.HELDOUT_TASK, n=256) < 0.05
    x, y = data.heldout_train_data(8)(0)
    assert x.shape == (8, 2 * data.N_DIGITS + 1) and np.all(x[:, 0] == data.TASK_TOKEN[data.HELDOUT_TASK])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m minilora pretrain"):
        minilora.load_base_model(tmp_path / "none.npz")


@pytest.mark.slow
def test_pretrain_is_deterministic_short_run():
    a, ha = base_model.pretrain(steps=3, progress=False)
    b, hb = base_model.pretrain(steps=3, progress=False)
    assert ha.loss == hb.loss
    for k, v in a.params.items():
        np.testing.assert_array_equal(v, b.params[k])

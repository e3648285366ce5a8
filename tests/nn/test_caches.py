"""A cache owns what it holds: forwards may be interleaved (gradient checkpointing, an evaluation forward
inside an accumulation loop) and each backward still sees exactly its own forward's values."""

import numpy as np
import pytest

from minilora import data
from minilora.nn import GPT, GPTConfig
from minilora.nn.mlp import MLPRegressor

CFG = GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=17, n_layer=2, n_head=4, n_embd=16)


def _stash(model):
    """Every module's cache (and the model's loss cache), as references: nothing is copied."""
    return [(mod, mod.cache, vars(mod).get("loss_cache")) for _, mod in model.named_modules()]


def _restore(stash):
    for mod, cache, loss_cache in stash:
        mod.cache = cache
        if loss_cache is not None:
            mod.loss_cache = loss_cache


def _grads_after(model, run_backward):
    model.zero_grad()
    run_backward()
    return {k: g.copy() for k, g in model.grads.items()}


@pytest.mark.parametrize("tied", [False, True])
def test_second_forward_does_not_change_the_first_forwards_caches(tied):
    model = GPT(GPTConfig(**{**vars(CFG), "tie_word_embeddings": tied}), seed=0)
    first = data.task_batch(data.PRETRAIN_TASKS, 4, seed=1)
    second = data.task_batch(data.PRETRAIN_TASKS, 4, seed=2)

    def alone():
        model.forward(*first)
        model.backward()

    def interleaved():
        model.forward(*first)
        stash = _stash(model)
        model.forward(*second)  # e.g. an evaluation forward, or a recomputation
        _restore(stash)
        model.backward()

    ref = _grads_after(model, alone)
    got = _grads_after(model, interleaved)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_mlp_regressor_caches_are_its_own():
    model = MLPRegressor([5, 16, 16, 3], "gelu", seed=0)
    rng = np.random.default_rng(0)
    (x1, y1), (x2, y2) = [(rng.standard_normal((8, 5)).astype(np.float32),
                           rng.standard_normal((8, 3)).astype(np.float32)) for _ in range(2)]

    def alone():
        model.forward(x1, y1)
        model.backward()

    def interleaved():
        model.forward(x1, y1)
        stash = _stash(model)
        model.forward(x2, y2)
        _restore(stash)
        model.backward()

    ref = _grads_after(model, alone)
    got = _grads_after(model, interleaved)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)

"""The fast paths (minilora.nn.fast) equal their readable twins (minilora.nn.functional) bit for bit.

Each fast op runs the same operations in the same order as its twin, writing into arrays it owns instead of
making temporaries, so the results must be identical, not close: on NumPy, on the strict device backend and (with
a GPU) on CuPy, in float32 and float64, at shapes whose sizes are not powers of two, with and without an
attention prefix. A whole GPT step through the fast paths equals one through the readable ops.
"""

import numpy as np
import pytest
from device_backends import DEVICE_BACKENDS, host, on

from minilora import backend, data
from minilora.nn import GPT, GPTConfig, fast
from minilora.nn import functional as F
from minilora.optim import AdamW

BACKENDS = ["numpy", *DEVICE_BACKENDS]


def _inputs(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    xp = backend.xp()
    return [xp.asarray(rng.standard_normal(s) * 3, dtype=dtype) for s in shapes]


def _both(name, make_args, dtype):
    """(fast result, readable result) of op ``name`` on arrays made on the current backend."""
    args = make_args(dtype)
    return host(getattr(fast, name)(*args)), host(getattr(F, name)(*args))


def _assert_identical(got, ref):
    if isinstance(ref, (tuple, list)):
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            _assert_identical(g, r)
    elif isinstance(ref, np.ndarray):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)
    else:
        assert got == ref


def _ln_cache(dtype):
    x, w, b = _inputs([(3, 5, 37), (37,), (37,)], dtype)
    return F.layernorm_forward(x, w, b)[1]


def _att_cache(dtype, P, shape=(2, 7, 12), n_head=3):
    q, k, v = _inputs([shape] * 3, dtype, seed=1)
    hs = shape[2] // n_head
    pk, pv = _inputs([(shape[0], n_head, P, hs)] * 2, dtype, seed=2) if P else (None, None)
    return F.attention_forward(q, k, v, n_head, pk, pv)[1]


BIG = (2, 64, 128)  # the benchmark's T and C: blocked BLAS kernels, vectorized loops with remainders


CASES = {
    "layernorm_forward": lambda dt: _inputs([(3, 5, 37), (37,), (37,)], dt),
    "layernorm_backward": lambda dt: [*_inputs([(3, 5, 37)], dt, seed=3), _ln_cache(dt)],
    "layernorm_backward without dx": lambda dt: [*_inputs([(3, 5, 37)], dt, seed=3), _ln_cache(dt), True, False],
    "layernorm_backward without dw": lambda dt: [*_inputs([(3, 5, 37)], dt, seed=3), _ln_cache(dt), False],
    "gelu_forward": lambda dt: _inputs([(4, 9, 33)], dt),
    "gelu_backward": lambda dt: _inputs([(4, 9, 33), (4, 9, 33)], dt),
    "softmax": lambda dt: _inputs([(2, 3, 7, 11)], dt),
    "attention_forward": lambda dt: [*_inputs([(2, 7, 12)] * 3, dt, seed=1), 3],
    "attention_forward with prefix": lambda dt: [*_inputs([(2, 7, 12)] * 3, dt, seed=1), 3,
                                                 *_inputs([(2, 3, 4, 4)] * 2, dt, seed=2)],
    "attention_backward": lambda dt: [*_inputs([(2, 7, 12)], dt, seed=3), _att_cache(dt, 0)],
    "attention_backward with prefix": lambda dt: [*_inputs([(2, 7, 12)], dt, seed=3), _att_cache(dt, 4)],
    "layernorm_forward at the benchmark's size": lambda dt: _inputs([BIG, (128,), (128,)], dt),
    "gelu_backward at the benchmark's size": lambda dt: _inputs([(2, 64, 512)] * 2, dt),
    "attention_forward at the benchmark's size": lambda dt: [*_inputs([BIG] * 3, dt, seed=1), 4],
    "attention_backward at the benchmark's size": lambda dt: [*_inputs([BIG], dt, seed=3),
                                                              _att_cache(dt, 0, BIG, 4)],
}


def test_every_fast_op_is_tested():
    assert {c.split(" ")[0] for c in CASES} == set(fast.FAST_OPS)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_op_equals_its_readable_twin_bit_for_bit(case, dtype, backend_name):
    got, ref = on(backend_name, lambda: _both(case.split(" ")[0], CASES[case], dtype))
    if backend_name == "cupy":  # pragma: no cover - GPU machines: same kernels in place or not
        np.testing.assert_allclose(np.concatenate([np.ravel(a) for a in got if isinstance(a, np.ndarray)]),
                                   np.concatenate([np.ravel(a) for a in ref if isinstance(a, np.ndarray)]),
                                   rtol=1e-6)
    else:
        _assert_identical(got, ref)


def test_fast_ops_leave_their_inputs_and_the_cache_alone():
    x, dout = _inputs([(4, 9, 33), (4, 9, 33)], "float32")
    before = x.copy(), dout.copy()
    out, cache = fast.gelu_forward(x)
    fast.gelu_backward(dout, cache)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(dout, before[1])
    assert cache is x and out is not x
    cache = _att_cache("float32", 0)
    saved = [a.copy() for a in cache[:4]]
    fast.attention_backward(*_inputs([(2, 7, 12)], "float32", seed=3), cache)
    for a, b in zip(cache[:4], saved):
        np.testing.assert_array_equal(a, b)


def _step():
    model = GPT(GPTConfig(vocab_size=data.VOCAB_SIZE, block_size=20, n_layer=2, n_head=2, n_embd=24), seed=0)
    opt = AdamW(model, lr=1e-2)
    idx, targets = data.task_batch(data.PRETRAIN_TASKS, 3, seed=0)
    model.zero_grad()
    logits, loss = model.forward(idx, targets)
    model.backward()
    grads = {k: g.copy() for k, g in model.grads.items()}
    opt.step()
    return host({"logits": logits, "loss": loss, "grads": grads, "params": model.params})


@pytest.mark.parametrize("backend_name", ["numpy", "strict"])
def test_a_gpt_step_through_the_fast_paths_equals_the_readable_one(backend_name):
    fast_run = on(backend_name, _step)
    with fast.readable():
        assert fast.gelu_backward is F.gelu_backward
        readable_run = on(backend_name, _step)
    assert fast.gelu_backward is not F.gelu_backward  # restored
    assert fast_run["loss"] == readable_run["loss"]
    for part in ("logits", "grads", "params"):
        got, ref = fast_run[part], readable_run[part]
        for k in (ref if isinstance(ref, dict) else {"": ref}):
            np.testing.assert_array_equal(got[k] if k else got, ref[k] if k else ref)

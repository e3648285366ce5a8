"""Optimizers against torch.optim, clipping against torch.nn.utils.clip_grad_norm_ (tests/golden/optim.npz).

The golden file (tools/golden/optim.py) holds, per case, a gradient sequence over 24 steps for five parameters
of different shapes — ``late`` has no gradient on the first two steps (torch: ``grad is None``), ``sparse`` an
all-zero gradient on some steps — and the parameters and optimizer state torch had after every step.

**Tolerance, from the arithmetic order.** torch and minilora evaluate the same formulas with different
roundings: torch fuses ``a + b * c`` into one rounding (its CPU kernels use FMA: its SGD step is bit for bit
the correctly rounded ``p - lr * g``) and uses ``lerp``/``addcmul``; minilora rounds every product, one
operation per line. A rounded sum errs by at most ``u`` (half an ulp of 1) times the sum of the absolute
values of its terms, and the longest chain one element goes through in a step is 8 roundings (Adam's
parameter: the decay, the two of ``m``, the square root and bias correction of ``v``, ``+ eps``, the step
size, the division, the subtraction), on each side. So one step's results differ by at most
``16 u T``, where ``T`` is the sum of the absolute values of the terms of that result — computed below from
torch's own inputs (``_terms``), never from minilora's output. ``T`` matters where a sum cancels: Adam's
``m = b1 m + (1 - b1) g`` can be far smaller than its terms, and its rounding error then moves the parameter
by ``lr * 16 u T_m / (sqrt(v_hat) + eps)``, not by ``16 u`` of the small update.

Over a whole trajectory the per-step differences add up, and those of a state (momentum buffer, ``m``) keep
acting on later steps with weight ``beta^k``, so at most ``1 / (1 - beta)`` times (10 for beta = 0.9): the
trajectory tolerance at step t is ``16 u sum_{s<=t} T_s / (1 - beta)``.
"""

import json

import numpy as np
import pytest
from conftest import load_golden

from minilora.nn import Linear
from minilora.nn.module import Module
from minilora.optim import SGD, Adam, AdamW, clip_grad_norm, grad_norm

G = load_golden("optim")
NAMES = [str(n) for n in G["opt_params"]]
STEPS = len(G["opt0_lr"])
CLASSES = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}
STATE = {"SGD": ("momentum_buffer",), "Adam": ("exp_avg", "exp_avg_sq"), "AdamW": ("exp_avg", "exp_avg_sq")}
CASES = [json.loads(str(G[f"opt{i}_config"])) | {"i": i} for i in range(int(G["n_opt"]))]
IDS = [f"{c['name']}-{c['dtype']}" for c in CASES]
C = 16  # 8 roundings on the longest path of a step, on each of the two sides (module docstring)


class Params(Module):
    """A bare Module holding the golden parameters (no forward: the test sets the gradients)."""

    def __init__(self, values):
        super().__init__()
        for name, value in values.items():
            self.add_param(name, np.array(value))


def _optimizer(case, model):
    kwargs = dict(case["kwargs"])
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    no_decay = set(case["no_decay"])
    return CLASSES[case["class"]](model, exclude=(lambda n: n in no_decay) if no_decay else None, **kwargs)


def _golden(case, key, p, t):
    """torch's ``key`` (``traj``, ``exp_avg``, ...) of parameter ``p`` after step ``t`` (t = -1: the start)."""
    i = case["i"]
    if t < 0:
        init = G[f"{case['dtype']}_init_{p}"]
        return init if key == "traj" else np.full(init.shape, np.nan, init.dtype)
    return G[f"opt{i}_{key}_{p}"][t]


def _set_grads(case, model, t):
    """Step t's gradients, torch's way: ``late`` frozen (grad None) while it has none, zeros on zero steps."""
    for p in NAMES:
        (model.unfreeze if G[f"has_grad_{p}"][t] else model.freeze)(p)
    model.zero_grad()
    for p, g in model.grads.items():
        g[...] = G[f"{case['dtype']}_grad_{p}"][t]


def _terms(case, p, t):
    """``T`` of parameter ``p``'s step t (module docstring): the sum of |terms| of each quantity, from torch's
    state before the step (NaN state = none yet = zeros) and step t's gradient. Returns {key: T array}.

    For Adam's parameter the update enters twice: once with ``T_m`` in place of ``m`` (the rounding error of
    ``m``, amplified by ``lr / (bc1 (sqrt(v_hat) + eps))``), once for the roundings of the update itself."""
    kw, lr = case["kwargs"], G[f"opt{case['i']}_lr"][t]
    wd = 0.0 if p in case["no_decay"] else kw.get("weight_decay", 0.01 if case["class"] == "AdamW" else 0.0)
    x = np.abs(_golden(case, "traj", p, t - 1)).astype(np.float64)
    g = np.abs(G[f"{case['dtype']}_grad_{p}"][t]).astype(np.float64)
    prev = {k: np.nan_to_num(np.abs(_golden(case, k, p, t - 1)).astype(np.float64)) for k in STATE[case["class"]]}
    if case["class"] == "SGD":
        mu = kw.get("momentum", 0.0)
        g = g + wd * x
        buf = mu * prev["momentum_buffer"] + g
        d = g + mu * buf if kw.get("nesterov") else (buf if mu else g)
        return {"traj": x + lr * d, "momentum_buffer": buf}
    b1, b2 = kw.get("betas", (0.9, 0.999))
    eps = kw.get("eps", 1e-8)
    step = G[f"opt{case['i']}_step"][t][NAMES.index(p)]
    if case["class"] == "Adam":
        g = g + wd * x
    m = b1 * prev["exp_avg"] + (1 - b1) * g
    v = b2 * prev["exp_avg_sq"] + (1 - b2) * g * g
    denom = np.sqrt(G[f"opt{case['i']}_exp_avg_sq_{p}"][t] / (1 - b2**step)) + eps
    return {"traj": x + 2 * lr / (1 - b1**step) * m / denom, "exp_avg": m, "exp_avg_sq": v}


def _within(got, ref, tol, msg):
    """|got - ref| <= tol elementwise (tol 0: bit-equal values), with the worst element in the message."""
    diff = np.abs(np.asarray(got, np.float64) - ref)
    bad = ~(diff <= tol)
    worst = np.broadcast_to(tol, diff.shape)[bad].min() if bad.any() else 0.0
    assert not bad.any(), f"{msg}: |diff| {diff[bad].max():.3g} > tolerance {worst:.3g}"


def _beta(case):
    kw = case["kwargs"]
    return kw.get("momentum", 0.0) if case["class"] == "SGD" else kw.get("betas", (0.9, 0.999))[0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trajectory_matches_torch(case):
    """24 free-running steps from torch's initial parameters; every step's parameters and per-parameter
    step counters compared (tolerance: module docstring)."""
    u = np.finfo(case["dtype"]).eps / 2
    model = Params({p: _golden(case, "traj", p, -1) for p in NAMES})
    opt = _optimizer(case, model)
    budget = {p: 0.0 for p in NAMES}
    for t in range(STEPS):
        _set_grads(case, model, t)
        opt.lr = float(G[f"opt{case['i']}_lr"][t])
        opt.step()
        for j, p in enumerate(NAMES):
            if G[f"has_grad_{p}"][t]:
                budget[p] = budget[p] + _terms(case, p, t)["traj"]
            tol = C * u * budget[p] / (1 - _beta(case))
            _within(model.params[p], _golden(case, "traj", p, t), tol, f"{p} after step {t + 1}")
            torch_step = G[f"opt{case['i']}_step"][t][j]
            assert opt.state.get(p, {}).get("step", -1) == torch_step, (p, t)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_step_matches_torch_from_torch_state(case):
    """Each step alone, started from torch's parameters and state (through ``load_state_dict``): the
    parameter and every state array within ``16 u T`` (module docstring), the step counters equal."""
    u = np.finfo(case["dtype"]).eps / 2
    keys = STATE[case["class"]]
    for t in range(1, STEPS):
        model = Params({p: _golden(case, "traj", p, t - 1) for p in NAMES})
        opt = _optimizer(case, model)
        state = {}
        for j, p in enumerate(NAMES):
            arrays = {k: _golden(case, k, p, t - 1) for k in keys}
            if not np.isnan(arrays[keys[0]]).any():  # torch holds state for p
                state[p] = arrays
                if case["class"] != "SGD":
                    state[p]["step"] = int(G[f"opt{case['i']}_step"][t - 1][j])
        sd = opt.state_dict()
        sd["state"] = state
        opt.load_state_dict(sd)
        _set_grads(case, model, t)
        opt.lr = float(G[f"opt{case['i']}_lr"][t])
        opt.step()
        for j, p in enumerate(NAMES):
            if not G[f"has_grad_{p}"][t]:
                np.testing.assert_array_equal(model.params[p], _golden(case, "traj", p, t))
                assert p not in opt.state
                continue
            terms = _terms(case, p, t)
            for k in ("traj", *[k for k in keys if not np.isnan(_golden(case, k, p, t)).any()]):
                got = model.params[p] if k == "traj" else opt.state[p][k]
                _within(got, _golden(case, k, p, t), C * u * terms[k], f"{p} {k} at step {t + 1}")
            assert opt.state.get(p, {}).get("step", -1) == G[f"opt{case['i']}_step"][t][j]


@pytest.mark.parametrize("case", [c for c in CASES if c["class"] != "SGD"], ids=lambda c: f"{c['name']}-{c['dtype']}")
def test_late_parameter_is_bias_corrected_from_its_own_first_step(case):
    """Issue 9 item 3: ``late`` gets its first gradient at step 3. torch counts steps per parameter, so its
    first update is bias-corrected as a first step: it moves ``lr * sign(g)`` (0.1 for Adam(lr=0.1)).
    A global step counter moved it 0.064 (bias correction of step 3 on moments that saw one gradient)."""
    first = int(np.argmax(G["has_grad_late"]))
    model = Params({p: _golden(case, "traj", p, -1) for p in NAMES})
    opt = _optimizer(case, model)
    for t in range(first + 1):
        _set_grads(case, model, t)
        opt.lr = float(G[f"opt{case['i']}_lr"][t])
        opt.step()
    before = _golden(case, "traj", "late", first - 1)
    torch_move = _golden(case, "traj", "late", first) - before
    u = np.finfo(case["dtype"]).eps / 2
    _within(model.params["late"] - before, torch_move, C * u * _terms(case, "late", first)["traj"], "late")
    assert opt.state["late"]["step"] == 1 and opt.state["weight"]["step"] == first + 1
    if case["name"] == "adam":
        np.testing.assert_allclose(np.abs(torch_move), 0.1, rtol=1e-6)


def test_state_bytes_counts_arrays_not_step_counters():
    model = Params({p: _golden(CASES[0], "traj", p, -1) for p in NAMES})
    model.freeze("late")
    trainable = sum(model.params[p].nbytes for p in NAMES if p != "late")
    for opt, buffers in [(SGD(model, lr=0.1), 0), (SGD(model, lr=0.1, momentum=0.9), 1),
                         (Adam(model), 2), (AdamW(model), 2)]:
        _set_grads(CASES[0], model, 0)
        model.freeze("late")
        opt.step()
        assert opt.state_bytes() == buffers * trainable, opt
        assert "late" not in opt.state


# ------------------------------------------------------------------ state_dict, repr, validation
def _trained(make, steps=3):
    model = Params({p: _golden(CASES[0], "traj", p, -1) for p in NAMES})
    opt = make(model)
    for t in range(steps):
        _set_grads(CASES[0], model, t)
        opt.step()
    return model, opt


@pytest.mark.parametrize("make", [lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda m: AdamW(m, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)])
def test_state_dict_round_trip_continues_identically(make):
    model_a, opt_a = _trained(make)
    sd = opt_a.state_dict()
    assert set(sd) == {"state", "param_groups"} and set(sd["param_groups"][0]) == set(opt_a.hyperparams)
    model_b = Params(model_a.state_dict())
    opt_b = make(model_b)
    opt_b.lr = 123.0
    opt_b.load_state_dict(sd)
    assert repr(opt_b) == repr(opt_a)
    if isinstance(opt_a, Adam):
        assert opt_b.state["late"]["step"] == 1 and opt_b.state["weight"]["step"] == 3
    for t in range(3, 6):
        for model, opt in [(model_a, opt_a), (model_b, opt_b)]:
            _set_grads(CASES[0], model, t)
            opt.step()
    for p in NAMES:
        np.testing.assert_array_equal(model_b.params[p], model_a.params[p])
    sd["state"]["weight"][STATE["Adam" if isinstance(opt_a, Adam) else "SGD"][0]][...] = 7.0
    assert not np.any(next(iter(opt_a.state["weight"].values())) == 7.0)  # state_dict holds copies


def test_load_state_dict_into_a_paged_optimizer_keeps_its_views():
    """A paged optimizer's state arrays are views of one paged buffer: loading writes into them in place."""
    from minilora.peft.paged import DeviceMemory, PagedAdamW

    _, opt_a = _trained(lambda m: AdamW(m, lr=0.01))
    model = Params({p: _golden(CASES[0], "traj", p, -1) for p in NAMES})
    paged = PagedAdamW(model, DeviceMemory(budget=10**6), lr=0.5, page_size=64)
    views = {p: paged.state[p]["exp_avg"] for p in NAMES}
    paged.load_state_dict(opt_a.state_dict())
    assert paged.lr == 0.01
    for p in NAMES:
        assert paged.state[p]["exp_avg"] is views[p]
        assert np.shares_memory(paged.state[p]["exp_avg"], paged.buffer.array)
        np.testing.assert_array_equal(paged.state[p]["exp_avg_sq"], opt_a.state[p]["exp_avg_sq"])
        assert paged.state[p]["step"] == opt_a.state[p]["step"]


@pytest.mark.parametrize("edit, match", [
    (lambda sd: sd["state"].update(nope={}), "not a parameter"),
    (lambda sd: sd["state"]["weight"].update(exp_avg=np.zeros(3)), "shape"),
    (lambda sd: sd["state"]["weight"].update(step=-1), "step"),
    (lambda sd: sd["state"]["weight"].update(momentum_buffer=np.zeros((4, 3))), "keys"),
    (lambda sd: sd["state"]["weight"].update(exp_avg=np.full((4, 3), np.nan)), "NaN"),
    (lambda sd: sd["state"]["bias"].pop("exp_avg_sq"), "required"),
    (lambda sd: sd["param_groups"][0].update(eps=0.0), "eps"),
    (lambda sd: sd["param_groups"][0].pop("betas"), "param_groups"),
    (lambda sd: sd.pop("state"), "state"),
])
def test_load_state_dict_checks_everything_before_changing_anything(edit, match):
    _, opt = _trained(lambda m: Adam(m, lr=0.01))
    before = opt.state_dict()
    sd = opt.state_dict()
    edit(sd)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for p, s in before["state"].items():
        for k, v in s.items():
            np.testing.assert_array_equal(after["state"][p][k], v)


def test_repr_shows_hyperparameters():
    m = Linear(2, 2, seed=0)
    assert repr(SGD(m, lr=0.1)) == "SGD(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)"
    assert repr(Adam(m)) == "Adam(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0)"
    assert repr(AdamW(m, lr=3e-4)) == "AdamW(lr=0.0003, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01)"


@pytest.mark.parametrize("make, match", [
    (lambda m: SGD(m, lr=-1), "lr must be >= 0"),
    (lambda m: SGD(m, lr="0.1"), "lr must be a finite real number"),
    (lambda m: SGD(m, lr=float("nan")), "lr must be a finite"),
    (lambda m: SGD(m, lr=0.1, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (lambda m: SGD(m, lr=0.1, momentum=-0.1), "momentum"),
    (lambda m: SGD(m, lr=0.1, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda m: SGD(m, lr=0.1, weight_decay=-0.1), "weight_decay must be >= 0"),
    (lambda m: Adam(m, betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\)"),
    (lambda m: Adam(m, betas=(-0.1, 0.9)), r"betas\[0\]"),
    (lambda m: Adam(m, betas=0.9), "betas must be a pair"),
    (lambda m: Adam(m, betas=(0.9, 0.99, 0.999)), "betas must be a pair"),
    (lambda m: Adam(m, eps=0.0), "eps must be > 0"),
    (lambda m: Adam(m, eps=-1e-8), "eps must be > 0"),
    (lambda m: AdamW(m, weight_decay=-0.1), "weight_decay"),
    (lambda m: AdamW(m, lr=-1e-3), "lr"),
])
def test_bad_hyperparameters_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make(Linear(2, 2, seed=0))


@pytest.mark.parametrize("make, name", [
    (lambda m: SGD(m, lr=0.1, dampening=0.5), "dampening"),
    (lambda m: Adam(m, amsgrad=True), "amsgrad"),
    (lambda m: AdamW(m, foreach=False), "foreach"),
])
def test_unknown_keyword_arguments_are_named(make, name):
    with pytest.raises(TypeError, match=name):
        make(Linear(2, 2, seed=0))


def test_model_and_exclude_types():
    with pytest.raises(TypeError, match="model must be a minilora Module"):
        SGD({"w": np.zeros(2)}, lr=0.1)
    with pytest.raises(TypeError, match="exclude"):
        SGD(Linear(2, 2, seed=0), lr=0.1, exclude="bias")


# ------------------------------------------------------------------ clipping
CLIPS = range(int(G["n_clip"]))


def _clip_case(i):
    names = [str(k) for k in G[f"clip{i}_names"]]
    return names, {k: G[f"clip{i}_grad_{k}"].copy() for k in names}, float(G[f"clip{i}_max_norm"])


def _norm_rtol(grads):
    """torch sums the n squares in the gradients' dtype: relative error <= n u, halved by the square root, plus
    a rounding of its own; minilora's float64 sum is exact to far less. So the norms agree to (n/2 + 2) u."""
    g = next(iter(grads.values()))
    n = sum(v.size for v in grads.values())
    return float((n / 2 + 2) * np.finfo(g.dtype).eps / 2)


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # inf * 0, as torch
@pytest.mark.parametrize("i", CLIPS)
def test_clip_grad_norm_matches_torch(i):
    """The returned norm and the clipped gradients, vs ``torch.nn.utils.clip_grad_norm_``.

    The factor ``max_norm / (norm + 1e-6)`` inherits the norm's relative difference plus 3 roundings (torch
    computes ``max_norm * (1 / (norm + 1e-6))`` in the gradients' dtype, minilora the quotient in float64 then
    rounds it once), and the product one more:
    the clipped gradients agree to ``norm_rtol + 4 u``. Where torch's factor clamps to 1, nothing changes
    on either side (bit for bit); a norm exactly at ``max_norm`` is scaled (the factor is just below 1);
    an ``inf`` norm zeroes the finite gradients (``inf * 0`` is NaN), a NaN norm makes every gradient NaN.
    """
    names, grads, max_norm = _clip_case(i)
    original = {k: v.copy() for k, v in grads.items()}
    norm = clip_grad_norm(grads, max_norm)
    ref_norm = float(G[f"clip{i}_norm"])
    rtol = _norm_rtol(grads)
    if np.isfinite(ref_norm):
        assert norm == pytest.approx(ref_norm, rel=rtol, abs=0)
    else:
        assert np.isnan(norm) == np.isnan(ref_norm) and np.isinf(norm) == np.isinf(ref_norm)
    u = np.finfo(grads[names[0]].dtype).eps / 2
    scaled = not (ref_norm + 1e-6 <= max_norm)
    for k in names:
        ref = G[f"clip{i}_clipped_{k}"]
        assert grads[k].dtype == ref.dtype
        if not scaled or not np.isfinite(ref_norm):
            np.testing.assert_array_equal(grads[k], ref, err_msg=k)  # NaN == NaN here
        else:
            np.testing.assert_allclose(grads[k], ref, rtol=rtol + 4 * u, atol=0, err_msg=k)
        assert np.array_equal(grads[k], original[k], equal_nan=True) == (not scaled)


def test_clip_at_exactly_max_norm_scales_like_torch():
    """norm == max_norm: torch's factor 5 / (5 + 1e-6) < 1 scales the gradients, so does minilora's."""
    at_threshold = [i for i in CLIPS if float(G[f"clip{i}_norm"]) == float(G[f"clip{i}_max_norm"])]
    assert len(at_threshold) == 2  # a float32 and a float64 case
    for i in at_threshold:
        names, grads, max_norm = _clip_case(i)
        clip_grad_norm(grads, max_norm)
        for k in names:
            original, torch_clipped = G[f"clip{i}_grad_{k}"], G[f"clip{i}_clipped_{k}"]
            assert not np.array_equal(torch_clipped, original) and not np.array_equal(grads[k], original)
            np.testing.assert_allclose(grads[k], torch_clipped, rtol=_norm_rtol(grads) + 2 * np.finfo(
                original.dtype).eps, atol=0)


@pytest.mark.parametrize("i", range(int(G["n_big"])))
def test_grad_norm_accumulates_in_float64_on_large_float32_gradients(i):
    """Issue 9 item 4: 10^7 float32 values 0.1 have the norm sqrt(10^7) * 0.1 = 316.2278 (0.1 as float32);
    a float32 dot product gave 316.3506, enough to clip at max_norm = 316.3 where nothing should be.

    Departure from torch, measured: torch reduces float32 gradients in float32 and returns 313.77
    (``big{i}_norm``); minilora's float64 sum errs by at most n u64 (1e-9 relative here) and clips by it."""
    n, value, max_norm = int(G[f"big{i}_n"]), G[f"big{i}_value"], float(G[f"big{i}_max_norm"])
    exact = np.sqrt(n) * float(value)  # every element is the same float32 number
    grads = {"g": np.full(n, value, np.float32)}
    rel = n * np.finfo(np.float64).eps / 2  # recursive summation of n terms in float64
    assert grad_norm(grads) == pytest.approx(exact, rel=rel, abs=0)
    assert clip_grad_norm(grads, max_norm) == pytest.approx(exact, rel=rel, abs=0)
    expected = value if exact + 1e-6 <= max_norm else float(value) * (max_norm / (exact + 1e-6))
    np.testing.assert_allclose(grads["g"][[0, n // 2, -1]], expected, rtol=np.finfo(np.float32).eps, atol=0)
    if exact + 1e-6 <= max_norm:
        assert np.all(grads["g"] == value)  # untouched (a float32 accumulation would have clipped)
    torch_norm = float(G[f"big{i}_norm"])
    assert abs(torch_norm - exact) / exact > 5e-3  # the departure is real: torch's float32 sum drifts


def test_clip_grad_norm_arguments():
    grads = {"a": np.array([3.0, np.inf])}
    with pytest.raises(RuntimeError, match=r"non-finite values in \['a'\]"):
        clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(grads["a"], [3.0, np.inf])  # nothing changed
    for bad in (0, -1.0, float("nan"), "1", True):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grad_norm({"a": np.ones(2)}, bad)
    assert grad_norm({}) == 0.0 and clip_grad_norm({}, 1.0) == 0.0

"""The helpers that notebook sentences are computed with (minilora.experiments.qlora), each checked on a case
whose answer is known independently."""

import numpy as np
import pytest

import minilora
from minilora.experiments import qlora as Q
from minilora.formats import FP8_E4M3


class _Params:
    def __init__(self, **params):
        self.params = params


def test_weight_statistics_on_known_distributions():
    rng = np.random.default_rng(0)
    model = _Params(normal=rng.standard_normal((400, 500)).astype(np.float32) * 0.02,
                    laplace=(rng.laplace(size=(400, 500)) + 3).astype(np.float32), bias=np.ones(5, np.float32))
    stats = Q.weight_statistics(model)
    assert set(stats) == {"normal", "laplace"}  # 2-D weights only
    assert stats["normal"]["kurtosis"] == pytest.approx(3.0, abs=0.05)
    assert stats["laplace"]["kurtosis"] == pytest.approx(6.0, abs=0.3)  # Laplace: kurtosis 6
    assert stats["laplace"]["mean"] == pytest.approx(3.0, abs=0.01)
    v = Q.normal_premise_verdict(stats)
    assert not v["zero_mean"] and v["heavier_tails"] and v["n_heavy"] == 1  # off-centre Laplace; heavy tails
    normal_only = Q.normal_premise_verdict({"n": stats["normal"]})
    assert normal_only["zero_mean"] and not normal_only["heavier_tails"] and normal_only["n_heavy"] == 0


def test_usage_fractions_and_largest_gap():
    from minilora.quant import fp4_code, nf4_code

    x = np.random.default_rng(1).standard_normal(1 << 14).astype(np.float32)
    for qt in ("nf4", "fp4"):
        u = Q.usage_fractions(x, qt)
        assert u.shape == (16,) and u.sum() == pytest.approx(1.0)
    assert Q.usage_fractions(np.full(64, 2.0, np.float32), "nf4")[-1] == 1.0  # every value on the top level
    assert Q.largest_gap([-1, 0, 0.25, 1], -0.5, 0.5) == 0.25
    assert Q.largest_gap(fp4_code()) == pytest.approx(1 / 6)  # between 1/192 and 1/6 ... and 1/3 to 1/2
    assert Q.largest_gap(nf4_code()) < Q.largest_gap(fp4_code())
    with pytest.raises(ValueError, match="fewer than two"):
        Q.largest_gap([0.0, 1.0], -0.5, 0.5)


def test_fp8_compress_absmax_is_exact_on_its_grid_and_bounded_otherwise():
    levels = np.array([-448, -256, -1, 0, 0.5, 1, 8, 448], np.float32)
    absmax = levels * np.float32(1e-4) + np.float32(levels.mean() * -1e-4 + 0.05)
    rec = Q.fp8_compress_absmax(absmax, FP8_E4M3, blocksize=256)
    assert rec.dtype == np.float32 and rec.shape == absmax.shape
    a = np.random.default_rng(2).uniform(0.03, 0.07, 1000).astype(np.float32)
    err = np.abs(Q.fp8_compress_absmax(a) - a)
    spread = np.abs(a - a.mean()).max()
    assert err.max() <= spread * FP8_E4M3.eps  # at most half a step of the largest binade, relative to the scale


def test_paging_timeline_accounts_for_every_page():
    base = minilora.load_base_model()
    demo = Q.paging_demo(base, Q.QLORA_CONFIG, steps=6, spike_steps=(3,))
    t = demo["timeline"]
    assert [s["step"] for s in t] == list(range(6)) and demo["identical"]
    assert sum(s["page_outs"] for s in t) == demo["stats"].page_outs
    assert sum(s["page_ins"] for s in t) == demo["stats"].page_ins
    assert all(s["peak"] <= demo["budget"] for s in t) and max(s["peak"] for s in t) == demo["peak"]
    assert t[3]["page_outs"] > 0 and t[3]["activations"] == demo["activations"]["spike"]
    assert all(s["page_outs"] == 0 for s in t[:3])  # before the spike everything fits


def test_compare_methods_runs_each_method_with_its_quantization():
    """compare_methods passed (peft_config, quantization) positionally into finetune's recipe slot (TypeError)."""
    import minilora
    from minilora.experiments.qlora import compare_methods
    from minilora.peft.qlora import quantized_modules

    runs = compare_methods(minilora.load_base_model(), steps=2, eval_every=0)
    assert set(runs) == {"full", "lora", "qlora"}
    assert quantized_modules(runs["qlora"][0]) and not quantized_modules(runs["lora"][0])
    assert runs["full"][2]["trainable"] == runs["full"][2]["total"]

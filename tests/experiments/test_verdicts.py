"""The verdict rules on synthetic inputs: every outcome of every rule, and the arithmetic they rest on."""

import math

import numpy as np
import pytest
from scipy import stats

from minilora.experiments.verdicts import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Effect,
    Summary,
    Verdict,
    all_of,
    any_of,
    helps,
    little_effect,
    none_of,
    paired_effect,
    verdict_table,
)


def test_summary_is_mean_and_sample_std():
    s = Summary((1.0, 2.0, 4.0))
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert str(s) == "2.333 ± 1.528"
    assert Summary((5.0,)).std == 0.0


def test_effect_interval_is_students_t():
    eff = Effect((0.1, 0.3, 0.2, 0.4), spread=0.1)
    sem = stats.sem(eff.diffs)  # scipy's standard error of the mean (n - 1)
    lo, hi = stats.t.interval(0.95, df=3, loc=np.mean(eff.diffs), scale=sem)
    assert (eff.lo, eff.hi) == pytest.approx((lo, hi))
    assert eff.n == 4 and eff.mean == pytest.approx(0.25)
    assert Effect((0.2,), 0.1).half_width == math.inf  # one seed: no interval


def test_paired_effect_pairs_by_seed_and_pools_the_spread():
    a, b = Summary((1.0, 2.0, 3.0)), Summary((0.5, 1.0, 2.0))
    eff = paired_effect(a, b)
    assert eff.diffs == (0.5, 1.0, 1.0)
    assert eff.spread == pytest.approx(math.sqrt((np.var(a.values, ddof=1) + np.var(b.values, ddof=1)) / 2))


@pytest.mark.parametrize("a,b,match", [((1.0, 2.0), (1.0,), "same >= 2 seeds"), ((1.0,), (2.0,), "same >= 2"),
                                       ((1.0, math.inf), (1.0, 2.0), "diverged")])
def test_paired_effect_refuses_what_it_cannot_compare(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_effect(a, b)


# diffs = a - b of losses: positive means b is better. spread 0.05 everywhere.
@pytest.mark.parametrize("diffs,expected", [
    ((0.30, 0.32, 0.31), SUPPORTED),           # clearly better, by more than the spread
    ((0.02, 0.03, 0.025), NOT_SUPPORTED),      # better for sure, but by less than the seed spread
    ((-0.3, -0.32, -0.31), NOT_SUPPORTED),     # worse
    ((0.3, -0.1, 0.5), INCONCLUSIVE),          # mean beyond the spread, interval wide
    ((0.06, 0.07, 0.065), SUPPORTED),          # just beyond the spread, tight
])
def test_helps(diffs, expected):
    assert helps(Effect(diffs, spread=0.05)) == expected


@pytest.mark.parametrize("diffs,expected", [
    ((0.01, -0.02, 0.0), SUPPORTED),           # within the spread
    ((0.5, 0.6, 0.55), NOT_SUPPORTED),         # a large difference, established
    ((-0.5, -0.6, -0.55), NOT_SUPPORTED),      # in the other direction too
    ((0.3, -0.1, 0.5), INCONCLUSIVE),          # beyond the spread on average, not established
    ((0.04, -0.3, 0.3), SUPPORTED),            # mean within the spread (a wide interval is no evidence of an effect)
])
def test_little_effect(diffs, expected):
    assert little_effect(Effect(diffs, spread=0.05)) == expected


@pytest.mark.parametrize("fn,verdicts,expected", [
    (all_of, (SUPPORTED, SUPPORTED), SUPPORTED), (all_of, (SUPPORTED, INCONCLUSIVE), INCONCLUSIVE),
    (all_of, (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE), NOT_SUPPORTED),
    (none_of, (NOT_SUPPORTED, NOT_SUPPORTED), SUPPORTED), (none_of, (NOT_SUPPORTED, SUPPORTED), NOT_SUPPORTED),
    (none_of, (NOT_SUPPORTED, INCONCLUSIVE), INCONCLUSIVE),
    (any_of, (NOT_SUPPORTED, SUPPORTED), SUPPORTED), (any_of, (NOT_SUPPORTED, NOT_SUPPORTED), NOT_SUPPORTED),
    (any_of, (INCONCLUSIVE, NOT_SUPPORTED), INCONCLUSIVE),
])
def test_combining_the_halves_of_a_claim(fn, verdicts, expected):
    assert fn(*verdicts) == expected


def test_verdict_table_is_markdown():
    table = verdict_table([Verdict("cosine helps SGD", "0.1 ± 0.01", SUPPORTED)])
    assert table.splitlines() == ["| claim | measured (mean ± std over seeds) | verdict |", "|---|---|---|",
                                  "| cosine helps SGD | 0.1 ± 0.01 | **supported** |"]
    row = verdict_table([Verdict("a", "max |Δ| 1e-16", SUPPORTED)]).splitlines()[-1]
    assert row == "| a | max \\|Δ\\| 1e-16 | **supported** |"  # escaped: the row keeps its three cells

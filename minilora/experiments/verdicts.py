"""Verdicts on empirical claims: numbers over seeds, paired effects with an interval, and the rule that turns
them into "supported", "not supported" or "inconclusive at this budget".

A claim such as "cosine annealing helps SGD" is tested on per-seed results: the same seeds run both arms, so
the difference of each seed's pair (:func:`paired_effect`) cancels what the seed does to both. Its mean gets a
95 % Student-t interval; the **seed spread** (the pooled standard deviation of the two arms) is the size of an
effect a user comparing two single runs could not tell from chance. :func:`helps` and :func:`little_effect`
compare the interval with 0 and with that spread; :func:`all_of`, :func:`none_of` and :func:`any_of` combine
the halves of a claim. With three seeds the interval is wide (t = 4.30): "inconclusive" is then an honest
answer, and more seeds are the remedy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive at this budget"


@dataclass(frozen=True)
class Summary:
    """Per-seed values of one quantity: mean ± standard deviation (n − 1 in the denominator)."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}"


@dataclass(frozen=True)
class Effect:
    """A paired comparison over seeds: ``diff_i = a_i - b_i`` (positive: b is better, for losses).

    ``lo, hi`` is the 95 % Student-t interval of the mean difference; ``spread`` is the seed spread of the
    quantity itself (the pooled standard deviation of a and b): an effect smaller than it is one that a user
    comparing two single runs could not tell from the seed. The verdicts (:func:`helps`,
    :func:`little_effect`) compare the interval with ``0`` and with ``± spread``.
    """

    diffs: tuple[float, ...]
    spread: float

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs))

    @property
    def half_width(self) -> float:
        from scipy.stats import t

        if self.n < 2:
            return math.inf
        return float(t.ppf(0.975, self.n - 1) * np.std(self.diffs, ddof=1) / math.sqrt(self.n))

    @property
    def lo(self) -> float:
        return self.mean - self.half_width

    @property
    def hi(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        return f"{self.mean:+.3f} (95% CI {self.lo:+.3f} … {self.hi:+.3f}; seed spread {self.spread:.3f})"


def paired_effect(a: Summary | Sequence[float], b: Summary | Sequence[float]) -> Effect:
    """:class:`Effect` of ``a - b`` per seed (``a`` and ``b`` measured with the same seeds, in order)."""
    a = np.asarray(a.values if isinstance(a, Summary) else a, float)
    b = np.asarray(b.values if isinstance(b, Summary) else b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a and b need the same >= 2 seeds, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a diverged run (loss inf/NaN) cannot be compared; lower its learning rate")
    spread = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    return Effect(tuple(float(d) for d in a - b), spread)


def helps(effect: Effect) -> str:
    """Verdict on "b is noticeably better than a" (``effect = a - b`` of losses).

    * ``supported``: the interval lies above 0 and the mean gain exceeds the seed spread;
    * ``not supported``: the interval lies below the seed spread (any gain is smaller than the seed noise,
      or b is worse);
    * ``inconclusive at this budget``: neither (too few seeds for an effect this size).

    >>> helps(Effect((0.30, 0.32, 0.31), spread=0.05)), helps(Effect((-0.2, -0.25, -0.22), spread=0.05))
    ('supported', 'not supported')
    """
    if effect.lo > 0 and effect.mean > effect.spread:
        return SUPPORTED
    if effect.hi < effect.spread:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def little_effect(effect: Effect) -> str:
    """Verdict on "a and b differ little", i.e. by less than the seed spread.

    * ``not supported``: the interval lies beyond ``± spread`` (a difference larger than the seed noise,
      in either direction, established);
    * ``supported``: the mean difference is within ``± spread`` (and no larger one established);
    * ``inconclusive at this budget``: the mean difference is beyond the spread but not established.

    >>> little_effect(Effect((0.01, -0.02, 0.0), spread=0.05)), little_effect(Effect((0.5, 0.6, 0.55), 0.05))
    ('supported', 'not supported')
    """
    if effect.lo > effect.spread or effect.hi < -effect.spread:
        return NOT_SUPPORTED
    if abs(effect.mean) < effect.spread:
        return SUPPORTED
    return INCONCLUSIVE


def all_of(*verdicts: str) -> str:
    """A claim made of several halves: supported if every half is, not supported if any half is not."""
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return INCONCLUSIVE


def none_of(*verdicts: str) -> str:
    """The claim "none of these helps": not supported if one does, supported if none does, else inconclusive."""
    if any(v == SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    if all(v == NOT_SUPPORTED for v in verdicts):
        return SUPPORTED
    return INCONCLUSIVE


def any_of(*verdicts: str) -> str:
    """The claim "this may happen": supported if one comparison shows it, not supported if none can."""
    if any(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if all(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Verdict:
    """One row of the chapter's verdict table: the claim, what was measured, the verdict."""

    claim: str
    result: str
    verdict: str


def verdict_table(rows: Sequence[Verdict]) -> str:
    """A Markdown table of verdicts (the notebook displays it with ``IPython.display.Markdown``); a ``|`` inside
    a cell is escaped so that it cannot split the row."""
    cell = lambda text: str(text).replace("|", "\\|")
    lines = ["| claim | measured (mean ± std over seeds) | verdict |", "|---|---|---|"]
    lines += [f"| {cell(v.claim)} | {cell(v.result)} | **{cell(v.verdict)}** |" for v in rows]
    return "\n".join(lines)


__all__ = ["SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "Summary", "Effect", "paired_effect", "helps",
           "little_effect", "all_of", "none_of", "any_of", "Verdict", "verdict_table"]

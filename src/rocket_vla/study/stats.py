"""The study's aggregation, as plain functions of success counts (tested by hand-computed cases).

Why two intervals: each seed's success rate already carries the trial-level binomial noise,
so a t-interval over the seeds' rates covers both sources (seeds and trials) -- it is the
headline interval. The Wilson interval on all trials pooled shows how much of the width is
trial noise alone (it ignores seed-to-seed variation, so it is narrower)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class SeedSummary:
    """Success over seeds: the mean of the seeds' rates, their sample std, the t-interval of
    the mean (both clipped to [0, 1]) and the Wilson interval of the pooled trials."""

    mean: float
    std: float | None
    ci95: Interval | None
    pooled: Interval
    successes: int
    trials: int
    seeds: int


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval | None:
    """Student-t interval of the mean of ``values`` (None for fewer than two)."""
    n = len(values)
    mean, std = mean_std(values)
    if std is None:
        return None
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean - half, mean + half)


def wilson(successes: int, trials: int, level: float = 0.95) -> Interval:
    """Wilson score interval of a binomial proportion."""
    if trials < 1:
        raise ValueError("the Wilson interval needs at least one trial")
    z = float(_scipy_stats.norm.ppf(0.5 + level / 2))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # at 0 or all successes the bound is the rate itself; rounding must not move it off
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def _clip(interval: Interval | None) -> Interval | None:
    return None if interval is None else Interval(max(0.0, interval.low), min(1.0, interval.high))


def summarise_seeds(counts: Mapping[int, tuple[int, int]]) -> SeedSummary:
    """``{seed: (successes, trials)}`` -> :class:`SeedSummary`."""
    if not counts or any(n < 1 for _, n in counts.values()):
        raise ValueError("every seed needs at least one trial")
    rates = [s / n for s, n in counts.values()]
    mean, std = mean_std(rates)
    wins = sum(s for s, _ in counts.values())
    total = sum(n for _, n in counts.values())
    return SeedSummary(mean, std, _clip(t_interval(rates)), wilson(wins, total), wins, total, len(rates))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[float, Interval | None]:
    """Mean over shared seeds of ``a - b`` and its t-interval: seeds pair runs that share data
    order and initialisation, so the difference is less noisy than two separate means."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no seed in common")
    diffs = [a[s] - b[s] for s in common]
    return mean_std(diffs)[0], t_interval(diffs)

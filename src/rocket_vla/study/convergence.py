"""Success against training compute: when to stop, and how much compute reaches a success level.

The paper's claim is about compute, not about a fixed step budget: a variant that succeeds
earlier needs less training to reach the success the baseline converges to. So a study run is
one long training per (variant, seed), evaluated at a handful of checkpoints; these functions
turn those curves into the answers (tested on hand-computed curves).

Conventions: a curve is a list of :class:`Point` sorted by compute; success is a rate in [0, 1];
an untrained policy is taken to succeed 0 % at compute 0 (a freshly initialised MiniVLA never
solves a LIBERO task), which lets a level reached at the first checkpoint be interpolated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rocket_vla.study import stats


@dataclass(frozen=True)
class Point:
    """One evaluated checkpoint of one run: its compute so far and its success."""

    compute: float
    success: float


def budget_reached(successes: Sequence[float], patience: int, min_gain: float) -> bool:
    """True once success has stopped rising: none of the last ``patience`` evaluations beat the
    best before them by more than ``min_gain``.

    Why a patience window: closed-loop success over a few trials is noisy, so one flat or
    lower point is not convergence; ``patience`` evaluations without a real gain are."""
    if patience < 1:
        raise ValueError("patience must be at least 1")
    if len(successes) <= patience:
        return False
    best_before = max(successes[:-patience])
    return max(successes[-patience:]) <= best_before + min_gain


def compute_to_reach(curve: Sequence[Point], level: float) -> float | None:
    """The compute at which a run's success first reaches ``level``, by linear interpolation
    between the evaluated checkpoint below it and the first one at or above it (from
    ``(0, 0)`` when the first checkpoint already reaches it); None when it never does.

    Interpolation gives a point estimate between the evaluated checkpoints; the checkpoint
    spacing bounds its error (the report says at which computes the curves were evaluated)."""
    if not 0.0 < level <= 1.0:
        raise ValueError(f"level must be in (0, 1], got {level}")
    previous = Point(0.0, 0.0)
    for point in sorted(curve, key=lambda p: p.compute):
        if point.success >= level - 1e-12:
            if point.success == previous.success:
                return point.compute
            share = (level - previous.success) / (point.success - previous.success)
            return previous.compute + share * (point.compute - previous.compute)
        previous = point
    return None


@dataclass(frozen=True)
class Reach:
    """Compute to reach one success level, over seeds.

    ``per_seed`` holds None for a seed that never reached the level; ``mean`` and ``ci95``
    are over the seeds that did (``reached`` of ``seeds``), so read them with that count."""

    level: float
    per_seed: dict[int, float | None]
    mean: float | None
    ci95: stats.Interval | None
    reached: int
    seeds: int


def reach_over_seeds(curves: Mapping[int, Sequence[Point]], level: float) -> Reach:
    """:func:`compute_to_reach` for every seed, with the mean and t-interval of those reached."""
    per_seed = {seed: compute_to_reach(curve, level) for seed, curve in curves.items()}
    values = [v for v in per_seed.values() if v is not None]
    mean = stats.mean_std(values)[0] if values else None
    return Reach(level, per_seed, mean, stats.t_interval(values) if values else None,
                 len(values), len(per_seed))


@dataclass(frozen=True)
class Ratio:
    """Compute of a variant over the baseline's to reach the same level, paired by seed.

    The geometric mean of the per-seed ratios and its t-interval on the log scale: compute
    ratios multiply, and a log-scale interval stays positive. ``pairs`` counts the seeds where
    both runs reached the level (only those are compared)."""

    geo_mean: float | None
    ci95: stats.Interval | None
    per_seed: dict[int, float]
    pairs: int


def paired_ratio(variant: Reach, baseline: Reach) -> Ratio:
    """Per shared seed ``variant / baseline`` compute to the level, summarised on the log scale."""
    per_seed = {s: variant.per_seed[s] / baseline.per_seed[s]  # type: ignore[operator]
                for s in sorted(set(variant.per_seed) & set(baseline.per_seed))
                if variant.per_seed[s] is not None and baseline.per_seed[s]}
    if not per_seed:
        return Ratio(None, None, {}, 0)
    logs = [math.log(r) for r in per_seed.values()]
    interval = stats.t_interval(logs)
    return Ratio(math.exp(stats.mean_std(logs)[0]),
                 None if interval is None else stats.Interval(math.exp(interval.low),
                                                              math.exp(interval.high)),
                 per_seed, len(per_seed))


def success_levels(baseline_converged: float, fractions: Sequence[float]) -> list[float]:
    """The success levels compared: fractions of the baseline's converged success (levels of
    0 are dropped: every run reaches them at no compute)."""
    return [f * baseline_converged for f in fractions if f * baseline_converged > 0]


def eval_points(budget: int, check_every: int, count: int) -> list[int]:
    """The training steps whose checkpoints are evaluated on the test states: ``count``
    multiples of ``check_every`` up to ``budget``, spaced geometrically and always ending at
    the budget (all multiples when there are fewer).

    Why geometric: the aligned variants rise early and the baseline late, so the early part
    of the curves needs the finer spacing for the compute to reach a level to be resolved.
    The points depend on the budget alone, so they are fixed before any test evaluation."""
    if check_every < 1 or count < 1 or budget < check_every:
        raise ValueError("need check_every >= 1, count >= 1 and budget >= check_every")
    slots = budget // check_every
    if count >= slots:
        return [check_every * i for i in range(1, slots + 1)]
    if count == 1:
        return [check_every * slots]
    chosen: list[int] = []
    for j in range(count):
        ideal = round(slots ** (j / (count - 1)))
        lowest = chosen[-1] + 1 if chosen else 1
        chosen.append(min(max(ideal, lowest), slots - (count - 1 - j)))
    return [check_every * i for i in chosen]

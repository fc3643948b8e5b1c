"""Success against compute: the stopping rule, compute-to-level and paired ratios, checked on
hand-computed curves and by properties that any curve must satisfy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rocket_vla.study.convergence import (
    Point,
    budget_reached,
    compute_to_reach,
    paired_ratio,
    reach_over_seeds,
    success_levels,
)


def test_budget_waits_for_patience_evaluations_without_a_real_gain() -> None:
    # rising, then 2 evaluations at or below best + 0.05 -> stop (patience 2)
    assert not budget_reached([0.1, 0.3, 0.5], patience=2, min_gain=0.05)
    assert not budget_reached([0.1, 0.3, 0.5, 0.52], patience=2, min_gain=0.05)
    assert budget_reached([0.1, 0.3, 0.5, 0.52, 0.4], patience=2, min_gain=0.05)
    # a real gain inside the window keeps it going
    assert not budget_reached([0.1, 0.3, 0.5, 0.4, 0.6], patience=2, min_gain=0.05)
    # too few evaluations to judge
    assert not budget_reached([0.5, 0.5], patience=2, min_gain=0.0)
    assert budget_reached([0.5, 0.5, 0.5], patience=2, min_gain=0.0)
    with pytest.raises(ValueError):
        budget_reached([0.1, 0.2], patience=0, min_gain=0.0)


def test_compute_to_reach_interpolates_between_checkpoints() -> None:
    curve = [Point(100, 0.0), Point(200, 0.4), Point(300, 0.8)]
    assert compute_to_reach(curve, 0.2) == pytest.approx(150.0)  # halfway from 0.0 to 0.4
    assert compute_to_reach(curve, 0.6) == pytest.approx(250.0)
    assert compute_to_reach(curve, 0.8) == pytest.approx(300.0)
    assert compute_to_reach(curve, 0.9) is None
    # reached at the first checkpoint: interpolated from (0, 0)
    assert compute_to_reach([Point(100, 0.5)], 0.25) == pytest.approx(50.0)
    # a dip does not count as reaching; the first crossing does
    assert compute_to_reach([Point(1, 0.5), Point(2, 0.2), Point(3, 0.6)], 0.5) == pytest.approx(1.0)
    assert compute_to_reach([Point(1, 0.5), Point(2, 0.2), Point(3, 0.6)], 0.55) == pytest.approx(
        2 + (0.55 - 0.2) / 0.4)
    with pytest.raises(ValueError):
        compute_to_reach(curve, 0.0)


def test_reach_and_ratio_over_seeds_by_hand() -> None:
    base = reach_over_seeds({0: [Point(100, 0.2), Point(200, 0.6)],
                             1: [Point(100, 0.0), Point(200, 0.3), Point(400, 0.6)],
                             2: [Point(100, 0.0), Point(200, 0.1)]}, 0.6)
    assert base.per_seed == {0: 200.0, 1: 400.0, 2: None}
    assert (base.reached, base.seeds, base.mean) == (2, 3, 300.0)
    fast = reach_over_seeds({0: [Point(100, 0.6)], 1: [Point(100, 0.3), Point(200, 0.9)],
                             2: [Point(100, 0.6)]}, 0.6)
    assert fast.per_seed == {0: 100.0, 1: pytest.approx(150.0), 2: 100.0}
    ratio = paired_ratio(fast, base)
    # seeds 0 and 1 are paired (seed 2's baseline never reached the level)
    assert ratio.per_seed == {0: 0.5, 1: pytest.approx(0.375)}
    assert ratio.pairs == 2
    assert ratio.geo_mean == pytest.approx(math.sqrt(0.5 * 0.375))
    assert ratio.ci95 is not None and ratio.ci95.low < ratio.geo_mean < ratio.ci95.high
    assert paired_ratio(fast, reach_over_seeds({0: [Point(1, 0.0)]}, 0.6)).geo_mean is None


def test_levels_are_fractions_of_the_baseline() -> None:
    assert success_levels(0.8, (0.5, 0.9)) == [pytest.approx(0.4), pytest.approx(0.72)]
    assert success_levels(0.0, (0.5, 0.9)) == []


curves = st.lists(st.tuples(st.floats(1, 1e6), st.floats(0, 1)), min_size=1, max_size=8).map(
    lambda pts: [Point(c, s) for c, s in sorted(dict(pts).items())])


@given(curves, st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_a_higher_level_never_needs_less_compute(curve: list[Point], a: float, b: float) -> None:
    low, high = sorted((a, b))
    at_low, at_high = compute_to_reach(curve, low), compute_to_reach(curve, high)
    if at_high is not None:
        assert at_low is not None and at_low <= at_high + 1e-9


@given(curves, st.floats(0.01, 1.0))
def test_the_answer_lies_before_the_first_checkpoint_that_reaches_the_level(
        curve: list[Point], level: float) -> None:
    answer = compute_to_reach(curve, level)
    first = next((p for p in curve if p.success >= level - 1e-12), None)
    assert (answer is None) == (first is None)
    if first is not None:
        earlier = [p.compute for p in curve if p.compute < first.compute]
        assert max(earlier, default=0.0) - 1e-9 <= answer <= first.compute + 1e-9


def _run(variant: str, seed: int, successes: list[int], trials: int = 10, batch: int = 32) -> dict:
    steps = [100 * (i + 1) for i in range(len(successes))]
    return {"variant": variant, "seed": seed,
            "points": [{"step": s, "samples": s * batch, "flops": 1e9 * s, "cpu_s": s / 10,
                        "wall_s": s / 5, "successes": k, "trials": trials}
                       for s, k in zip(steps, successes, strict=True)]}


def test_compute_report_by_hand(tmp_path) -> None:
    from rocket_vla.study.compute_report import plot, summarise, table

    runs = [_run("baseline", 0, [0, 2, 6, 8]), _run("baseline", 1, [0, 4, 8, 8]),
            _run("rocket", 0, [4, 8, 8, 8]), _run("rocket", 1, [8, 8, 9, 9])]
    out = summarise(runs, ["baseline", "rocket"], (0.5, 1.0), axis="samples")
    assert out["baseline_converged"] == pytest.approx(0.8)  # 8/10 for both seeds
    assert out["levels"] == [pytest.approx(0.4), pytest.approx(0.8)]
    base, rocket = out["variants"]["baseline"], out["variants"]["rocket"]
    # baseline seed 0 reaches 0.4 between step 200 (0.2) and 300 (0.6): step 250 = 8,000 samples;
    # seed 1 reaches it at step 200 (6,400 samples)
    assert base["reach"][0]["per_seed"] == {0: pytest.approx(8000.0), 1: pytest.approx(6400.0)}
    # rocket seed 0 reaches 0.4 at step 100 (3,200); seed 1 at 0.4/0.8 of step 100 (1,600)
    assert rocket["reach"][0]["per_seed"] == {0: pytest.approx(3200.0), 1: pytest.approx(1600.0)}
    assert rocket["ratio"][0]["per_seed"] == {0: pytest.approx(0.4), 1: pytest.approx(0.25)}
    assert rocket["ratio"][0]["geo_mean"] == pytest.approx(math.sqrt(0.4 * 0.25))
    assert rocket["converged"]["mean"] == pytest.approx(0.85)
    assert base["budget_step"] == 400
    text = table(out)
    assert "| rocket | 85.0 (17/20)" in text and "0.32 [" in text
    # rocket's samples to 40%: mean 2,400, t(0.975, 1) interval 2,400 +- 12.71 x 800 (below 0)
    assert "2,400 [-7,765, 12,565]" in text
    assert plot(out, tmp_path / "curves.png").stat().st_size > 1000


def test_eval_points_are_geometric_multiples_ending_at_the_budget() -> None:
    from rocket_vla.study.convergence import eval_points

    # 8 slots of 500 steps, 5 points: 8 ** (j / 4) = 1, 1.68, 2.83, 4.76, 8 -> slots 1, 2, 3, 5, 8
    assert eval_points(4000, 500, 5) == [500, 1000, 1500, 2500, 4000]
    assert eval_points(1500, 500, 5) == [500, 1000, 1500]
    assert eval_points(4000, 500, 1) == [4000]


@given(st.integers(1, 40), st.integers(1, 50), st.integers(1, 10))
def test_eval_points_properties(slots: int, every: int, count: int) -> None:
    from rocket_vla.study.convergence import eval_points

    points = eval_points(slots * every, every, count)
    assert points[-1] == slots * every and len(points) == min(count, slots)
    assert all(p % every == 0 for p in points) and points == sorted(set(points))

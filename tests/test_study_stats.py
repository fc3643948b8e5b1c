"""The study's aggregation against hand-computed cases (no simulator)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rocket_vla.pipeline.config import DataConfig
from rocket_vla.study import stats
from rocket_vla.study.config import StudyConfig
from rocket_vla.study.report import aggregate, table


def test_mean_std_and_t_interval_by_hand() -> None:
    # rates 0.5, 0.7, 0.9: mean 0.7, sample variance (0.04 + 0 + 0.04) / 2 = 0.04 -> std 0.2;
    # t(0.975, 2) = 4.302653 -> half width 4.302653 * 0.2 / sqrt(3) = 0.496827
    mean, std = stats.mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
    ci = stats.t_interval([0.5, 0.7, 0.9])
    assert ci.low == pytest.approx(0.7 - 0.496827, abs=1e-6)
    assert ci.high == pytest.approx(0.7 + 0.496827, abs=1e-6)
    assert stats.mean_std([0.4]) == (0.4, None) and stats.t_interval([0.4]) is None


def test_wilson_by_hand() -> None:
    # 8 of 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.7449; half width
    # z * sqrt(0.016 + z^2/400) / (1 + z^2/10) = 0.2450 -> [0.4902, 0.9433]
    ci = stats.wilson(8, 10)
    assert ci.low == pytest.approx(0.4902, abs=1e-4) and ci.high == pytest.approx(0.9433, abs=1e-4)
    zero = stats.wilson(0, 5)
    assert zero.low == 0.0 and zero.high == pytest.approx(1.959964 ** 2 / (5 + 1.959964 ** 2), abs=1e-6)


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_rate(case: tuple[int, int]) -> None:
    wins, n = case
    ci = stats.wilson(wins, n)
    assert 0.0 <= ci.low <= wins / n <= ci.high <= 1.0


def test_summarise_seeds_pools_trials_and_clips() -> None:
    s = stats.summarise_seeds({0: (10, 10), 1: (9, 10), 2: (10, 10)})
    assert s.mean == pytest.approx(29 / 30) and s.successes == 29 and s.trials == 30 and s.seeds == 3
    assert s.ci95.high == 1.0  # the t-interval of rates near 1 is clipped to a rate
    assert s.pooled == stats.wilson(29, 30)


def test_paired_difference_uses_shared_seeds() -> None:
    diff, ci = stats.paired_difference({0: 0.6, 1: 0.8, 2: 0.5, 9: 1.0}, {0: 0.5, 1: 0.6, 2: 0.5})
    # differences 0.1, 0.2, 0.0: mean 0.1, std 0.1, half width 4.302653 * 0.1 / sqrt(3)
    assert diff == pytest.approx(0.1)
    assert ci.high - diff == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)


def _run(variant: str, seed: int, points: dict[int, dict[int, list[bool]]], l1: float) -> dict:
    """A run's result file: per evaluated step, the episodes of each task."""
    def eps(by_task: dict[int, list[bool]]) -> list[dict]:
        return [{"task_id": t, "trial": k, "success": s}
                for t, xs in by_task.items() for k, s in enumerate(xs)]

    return {"variant": variant, "seed": seed, "action_l1": l1,
            "points": [{"step": step, "samples": 4 * step, "flops": None, "wall_s": 1.0, "cpu_s": 1.0,
                        "successes": sum(sum(xs) for xs in by_task.values()),
                        "trials": sum(len(xs) for xs in by_task.values()), "episodes": eps(by_task)}
                       for step, by_task in points.items()]}


def test_aggregate_by_hand() -> None:
    cfg = StudyConfig(data=DataConfig(tasks=[1, 2], demo_first_init=4), variants=["baseline", "rocket"],
                      seeds=[0, 1], eval_trials=2, val_trials=2)
    T, F = True, False
    runs = [
        _run("baseline", 0, {2: {1: [F, F], 2: [F, F]}, 4: {1: [T, F], 2: [F, F]}}, 0.2),  # final 1/4
        _run("baseline", 1, {2: {1: [T, F], 2: [F, F]}, 4: {1: [T, T], 2: [F, T]}}, 0.4),  # final 3/4
        _run("rocket", 0, {2: {1: [T, F], 2: [T, F]}, 4: {1: [T, T], 2: [T, F]}}, 0.1),    # final 3/4
        _run("rocket", 1, {2: {1: [T, T], 2: [T, T]}, 4: {1: [T, T], 2: [T, T]}}, 0.3),    # final 4/4
    ]
    controls = [{**_run("rocket", 0, {4: {1: [F, F], 2: [T, F]}}, 0.5), "teacher": "random-tiny"}]
    budget = {"budget": 4, "checks": [], "reason": "test"}
    out = aggregate(cfg, runs, controls, budget, [2, 4])
    base, rocket = out["variants"]["baseline"], out["variants"]["rocket"]
    assert base["per_task"]["1"]["mean"] == pytest.approx(0.75) and base["per_task"]["2"]["mean"] == 0.25
    assert rocket["per_seed"] == {"0": (3, 4), "1": (4, 4)}
    assert rocket["action_l1"]["mean"] == pytest.approx(0.2)
    samples = out["compute"]["samples"]
    assert "flops" not in out["compute"]  # no student token count: no FLOPs axis
    assert samples["baseline_converged"] == pytest.approx(0.5)
    # level 0.25 (half of 0.5): baseline seed 0 at step 4 interpolated from (2, 0.0) to (4, 0.25) ->
    # step 4 = 16 samples; seed 1 at step 2 (0.25) = 8 samples; rocket seed 0 reaches 0.5 at step 2:
    # 0.25 at half of 8 = 4 samples; seed 1: 1.0 at step 2 -> 0.25 at 2 samples
    base_reach, rocket_reach = (samples["variants"][v]["reach"][0]["per_seed"]
                                for v in ("baseline", "rocket"))
    assert base_reach == {0: pytest.approx(16.0), 1: pytest.approx(8.0)}
    assert rocket_reach == {0: pytest.approx(4.0), 1: pytest.approx(2.0)}
    assert samples["variants"]["rocket"]["ratio"][0]["geo_mean"] == pytest.approx(0.25)
    assert out["control"]["converged"]["mean"] == pytest.approx(0.25)
    assert out["control"]["rocket_minus_control"]["mean"] == pytest.approx(0.5)  # seed 0: 0.75 - 0.25
    assert "| rocket | 87.5 (7/8)" in table(out)


def test_study_config_checks() -> None:
    from rocket_vla.errors import RocketError

    cfg = StudyConfig()
    assert cfg.points(4000) == [500, 1000, 1500, 2500, 4000]
    run = cfg.run_train_config("rocket", 1, 1500, "d", "o", "tiny", "c")
    assert (run.steps, run.save_every, run.keep_last, run.seed) == (1500, 500, 17, 1)
    assert run.schedule == "constant"
    assert cfg.run_train_config("baseline", 0, 500, "d", "o", "tiny", "c").teacher_cache is None
    for bad in (dict(variants=["baseline", "baseline"]), dict(data={"demo_first_init": 5}),
                dict(variants=["fancy"]), dict(data={"train_demos": 40}), dict(train={"seed": 3}),
                dict(train={"steps": 100}), dict(seeds=[])):
        with pytest.raises(RocketError):
            StudyConfig.preset("default", **bad)


def test_pos_embed_reaches_training_and_the_run_identity(tmp_path) -> None:
    """``--pos_embed`` is part of what an aligned run depends on, and never of the baseline's."""
    from rocket_vla.errors import RocketError
    from rocket_vla.study.runs import RunKey, run_identity

    uv = StudyConfig.preset("default", out_dir=str(tmp_path), train={"pos_embed": "vggt-uv"})
    plain = StudyConfig(out_dir=str(tmp_path))
    rocket, base = RunKey("rocket", 0), RunKey("baseline", 0)
    assert uv.run_train_config("rocket", 0, 500, "d", "o", "tiny", None).pos_embed == "vggt-uv"
    assert plain.run_train_config("rocket", 0, 500, "d", "o", "tiny", None).pos_embed is None
    ident = {c.train.pos_embed: (run_identity(c, rocket, {}, "t", {}), run_identity(c, base, {}, None, {}))
             for c in (uv, plain)}
    assert ident["vggt-uv"][0] != ident[None][0] and ident["vggt-uv"][1] == ident[None][1]
    with pytest.raises(RocketError, match="unknown pos_embed 'uv'"):
        StudyConfig.preset("default", train={"pos_embed": "uv"})

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
from rocket_vla.train.config import TrainConfig


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


def test_steps_to_threshold() -> None:
    curve = {800: 0.9, 266: 0.4, 532: 0.75}
    assert stats.steps_to_threshold(curve, 0.75) == 532  # the first evaluated step, in step order
    assert stats.steps_to_threshold(curve, 0.4) == 266
    assert stats.steps_to_threshold(curve, 0.95) is None


def _run(variant: str, seed: int, finals: dict[int, list[bool]], early: dict[int, list[bool]],
         l1: float) -> dict:
    def eps(by_task: dict[int, list[bool]]) -> list[dict]:
        return [{"task_id": t, "trial": k, "success": s}
                for t, xs in by_task.items() for k, s in enumerate(xs)]

    return {"variant": variant, "seed": seed, "evals": {"2": eps(early), "4": eps(finals)},
            "action_l1": l1, "train_seconds": 10.0, "samples_per_s": 5.0}


def test_aggregate_by_hand() -> None:
    cfg = StudyConfig(data=DataConfig(tasks=[1, 2], demo_first_init=2), variants=["baseline", "rocket"],
                      seeds=[0, 1], eval_trials=2, val_trials=0, curve_points=2, curve_trials=1,
                      train=TrainConfig(steps=4))
    T, F = True, False
    runs = {
        "b0": _run("baseline", 0, {1: [T, F], 2: [F, F]}, {1: [F, F], 2: [F, F]}, 0.2),  # final 1/4
        "b1": _run("baseline", 1, {1: [T, T], 2: [F, T]}, {1: [T, F], 2: [F, F]}, 0.4),  # final 3/4
        "r0": _run("rocket", 0, {1: [T, T], 2: [T, F]}, {1: [T, F], 2: [F, F]}, 0.1),    # final 3/4
        "r1": _run("rocket", 1, {1: [T, T], 2: [T, T]}, {1: [T, T], 2: [T, T]}, 0.3),    # final 4/4
    }
    out = aggregate(cfg, runs)["variants"]
    base, rocket = out["baseline"], out["rocket"]
    assert base["final"]["mean"] == pytest.approx(0.5) and base["final"]["successes"] == 4
    assert rocket["final"]["mean"] == pytest.approx(0.875)
    assert base["final"]["std"] == pytest.approx(math.sqrt(2 * 0.25 ** 2))
    assert base["per_task"]["1"]["mean"] == pytest.approx(0.75) and base["per_task"]["2"]["mean"] == 0.25
    # curves use the first trial of each task only: baseline at step 4: seed 0 1/2, seed 1 1/2
    assert base["curve"] == {"2": pytest.approx(0.25), "4": pytest.approx(0.5)}
    assert rocket["curve"] == {"2": pytest.approx(0.75), "4": pytest.approx(1.0)}
    assert rocket["steps_to_baseline"] == 2 and base["steps_to_baseline"] == 4
    assert rocket["vs_baseline"]["mean"] == pytest.approx(0.375)  # (0.75-0.25 + 1.0-0.75) / 2
    assert rocket["action_l1"]["mean"] == pytest.approx(0.2)
    text = table(aggregate(cfg, runs))
    assert "| rocket | 87.5 (7/8) |" in text and "+37.5" in text
    # without a baseline there is no threshold: the column says so instead of "not reached"
    alone = StudyConfig(data=DataConfig(tasks=[1, 2], demo_first_init=2), variants=["rocket"],
                        seeds=[0, 1], eval_trials=2, val_trials=0, curve_points=2, curve_trials=1,
                        train=TrainConfig(steps=4))
    row = table(aggregate(alone, {k: v for k, v in runs.items() if k.startswith("r")})).splitlines()[-1]
    assert row.endswith("| - | - | 0.2000 |")


def test_study_config_checks_and_curve_steps() -> None:
    from rocket_vla.errors import RocketError

    cfg = StudyConfig()
    assert cfg.curve_steps() == [266, 532, 800] and cfg.save_every == 266
    assert (cfg.first_trial, cfg.trials) == (0, cfg.eval_trials)
    val = StudyConfig(split="validation")
    assert (val.first_trial, val.trials) == (cfg.eval_trials, cfg.val_trials)
    for bad in (dict(split="eval"), dict(variants=["rocket", "rocket"]), dict(data={"demo_first_init": 5}),
                dict(curve_trials=50), dict(variants=["fancy"]), dict(data={"train_demos": 40}),
                dict(train={"seed": 3})):
        with pytest.raises(RocketError):
            StudyConfig.preset("default", **bad)


def test_pos_embed_reaches_training_and_the_run_identity(tmp_path) -> None:
    """``--pos_embed`` is part of what an aligned run depends on, and never of the baseline's."""
    from pathlib import Path

    from rocket_vla.errors import RocketError
    from rocket_vla.study.run import train_config
    from rocket_vla.study.runs import RunKey, run_identity

    uv = StudyConfig.preset("default", out_dir=str(tmp_path), train={"pos_embed": "vggt-uv"})
    plain = StudyConfig(out_dir=str(tmp_path))
    rocket, base = RunKey("rocket", 0), RunKey("baseline", 0)
    assert train_config(uv, rocket, Path("d"), None).pos_embed == "vggt-uv"
    assert train_config(plain, rocket, Path("d"), None).pos_embed is None
    ident = {c.train.pos_embed: (run_identity(c, rocket, {}, "t", {}), run_identity(c, base, {}, None, {}))
             for c in (uv, plain)}
    assert ident["vggt-uv"][0] != ident[None][0] and ident["vggt-uv"][1] == ident[None][1]
    with pytest.raises(RocketError, match="unknown pos_embed 'uv'"):
        StudyConfig.preset("default", train={"pos_embed": "uv"})

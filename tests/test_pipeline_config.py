"""The demo's and the study's nested configs resolve to the training runs they always ran:
each variant's TrainConfig is pinned against one written out by hand, field by field."""

from __future__ import annotations

import dataclasses

import pytest

from rocket_vla.demo.config import DemoConfig
from rocket_vla.errors import RocketError
from rocket_vla.study.config import StudyConfig
from rocket_vla.train.config import TrainConfig


@pytest.mark.parametrize("variant", ["baseline", "rocket", "naive"])
def test_the_demo_trains_each_variant_with_its_fixed_recipe(variant: str) -> None:
    cfg = DemoConfig.preset("default")
    got = cfg.variant_config(variant, "data/train", f"runs/demo/train/{variant}", "cache/teacher", False)
    assert got == TrainConfig(
        dataset="data/train", out_dir=f"runs/demo/train/{variant}", student="minivla", student_preset="demo",
        variant=variant, num_pairs=4, teacher="tiny", steps=1500, batch_size=32, lr=1e-3, seed=0,
        decay_after=1200, save_every=750, keep_last=2, progress=False,
        teacher_cache=None if variant == "baseline" else "cache/teacher")


def test_presets_scale_the_schedule_with_the_steps() -> None:
    quick = DemoConfig.preset("quick").variant_config("rocket", "d", "o", None, True)
    assert (quick.steps, quick.decay_after, quick.save_every, quick.progress) == (600, 480, 300, True)
    smoke = DemoConfig.preset("smoke").variant_config("rocket", "d", "o", None, True)
    assert (smoke.steps, smoke.decay_after, smoke.save_every, smoke.batch_size, smoke.student_preset) == (
        6, 4, 3, 4, "tiny")


def test_the_study_trains_each_run_with_its_seed_and_all_checkpoints() -> None:
    cfg = StudyConfig.preset("default", train={"pos_embed": "sincos"})
    got = cfg.run_train_config("shared", 2, 4000, "d", "o", "tiny", "c")
    assert got == TrainConfig(
        dataset="d", out_dir="o", student="minivla", student_preset="demo", variant="shared", num_pairs=4,
        teacher="tiny", steps=4000, batch_size=32, lr=1e-3, schedule="constant", seed=2, pos_embed="sincos",
        decay_after=8000, save_every=500, keep_last=17, progress=False, teacher_cache="c")
    # growing the run (the budget search) keeps every setting a resume compares
    grown = cfg.run_train_config("shared", 2, 500, "d", "o", "tiny", "c")
    assert grown == dataclasses.replace(got, steps=500)
    assert cfg.run_train_config("baseline", 0, 500, "d", "o", "tiny", "c").teacher_cache is None


def test_settings_the_pipeline_sets_per_run_are_refused_in_the_template() -> None:
    with pytest.raises(RocketError, match=r"the demo sets train.out_dir itself; remove --train.out_dir\."):
        DemoConfig.preset("default", train={"out_dir": "elsewhere"})
    with pytest.raises(RocketError, match="unknown pos_embed 'uv'"):
        StudyConfig.preset("default", train={"pos_embed": "uv"})

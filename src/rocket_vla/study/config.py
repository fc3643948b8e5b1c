"""What `rocket reproduce` runs: success against training compute, variants x seeds on one
dataset and teacher. The command line is generated from this dataclass (one place for each
default)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

from rocket_vla.errors import RocketError
from rocket_vla.pipeline.config import DataConfig, PipelineConfig
from rocket_vla.study.convergence import eval_points
from rocket_vla.train.config import TrainConfig

#: The teacher spec of the control: ROCKET against a teacher of random weights.
CONTROL_TEACHER = "random-tiny"


def study_data() -> DataConfig:
    """LIBERO-Spatial tasks 1 and 2 (the bundled tiny teacher was picked by the demo's success
    on task 0); demonstrations from init states 18-39, after the test (0-7) and validation
    (8-17) states and before the tiny teacher's own training states (40-49), so the held-out
    demonstrations (38-39) were seen by no model, the teacher included."""
    return DataConfig(tasks=[1, 2], train_demos=20, heldout_demos=2, demo_first_init=18)


def study_train() -> TrainConfig:
    """The demo's recipe (a demo-size MiniVLA, the bundled tiny teacher, 4 balanced pairs) at a
    constant learning rate: every checkpoint along a long run is then what a run stopped there
    would be, so one run per (variant, seed) gives the whole success-vs-compute curve."""
    return TrainConfig(student_preset="demo", teacher="tiny", num_pairs=4, batch_size=32, lr=1e-3,
                       schedule="constant")


def teacher_training_states(spec: str, suite: str) -> set[int]:
    """Init states the teacher ``spec`` was trained on in ``suite`` (empty when unknown: only
    the bundled tiny teacher records them, in ``assets/tiny_teacher/training_data.json``)."""
    if spec != "tiny":
        return set()
    record = resources.files("rocket_vla") / "assets" / "tiny_teacher" / "training_data.json"
    data = json.loads(record.read_text(encoding="utf-8"))
    return set(data["init_states"]) if data["suite"] == suite else set()


@dataclass
class StudyConfig(PipelineConfig):
    """Success against training compute, the paper's question in miniature.

    One long run per (variant, seed) at a constant learning rate. The budget is found first, on
    the validation init states: the first seed's baseline is trained in steps of
    ``check_every`` and evaluated after each until its success stops rising (``patience``
    checks without a gain above ``min_gain``) or ``max_budget`` is reached. The test init
    states are evaluated only after that, at ``eval_points`` checkpoints fixed by the budget
    alone. Init states of each task never overlap: ``test`` = ``0 .. eval_trials-1``,
    ``validation`` = the next ``val_trials``, demonstrations after both.
    """

    out_dir: str = "runs/study"
    """study folder: budget.json, one sub-folder per run, results.json, report.md, plots"""
    data: DataConfig = field(default_factory=study_data)
    """the demonstrations (data.seed also seeds closed-loop evaluation, the same for every run)"""
    train: TrainConfig = field(default_factory=study_train)
    """the training recipe of every run (the study sets dataset, out_dir, variant, seed, steps and
    checkpointing per run); train.teacher and train.pos_embed are used by the aligned variants"""
    variants: list[str] = field(default_factory=lambda: ["baseline", "spatial_forcing", "rocket"])
    """the paper's variants to compare; the baseline is required (its converged success sets the
    levels)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """training seeds (initialisation and data order); data, teacher and evaluation are shared"""
    eval_trials: int = 8
    """test init states per task (0 .. eval_trials-1), evaluated at every evaluation point"""
    val_trials: int = 10
    """validation init states per task, right after the test ones (the budget search)"""
    check_every: int = 500
    """training steps between the budget search's validation checks; checkpoints every as many"""
    patience: int = 3
    """validation checks without a gain that end the budget search (2 stopped a rising
    baseline on one-trial noise: docs/results.md, Status)"""
    min_gain: float = 0.05
    """a validation success gain at most this large is no gain (one trial of 20 is 0.05)"""
    max_budget: int = 8000
    """the most steps the budget search trains; the budget if the baseline is still rising"""
    eval_points: int = 5
    """checkpoints per run evaluated on the test states, spaced geometrically up to the budget"""
    levels: list[float] = field(default_factory=lambda: [0.5, 0.9])
    """success levels compared, as fractions of the baseline's converged success"""
    control_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds of the control (ROCKET against a random-weight teacher, at the budget); [] for none"""
    max_steps: int | None = None
    """episode step budget (None: the paper's budget for the suite)"""
    grad_batches: int = 4
    """batches averaged for the gradient-conflict matrices (first seed's final checkpoints)"""
    log_seconds: float = 60.0
    """progress line interval while runs train in parallel"""
    only: list[str] = field(default_factory=list)
    """names of the runs this invocation trains and evaluates (e.g. [rocket-seed1,
    rocket-random-tiny-seed0]); [] for all. Splits a long study across sessions or machines: each
    run's result is final once written, and the invocation that finds every result writes the report"""

    NAME: ClassVar[str] = "study"
    RUN_FIELDS: ClassVar[tuple[str, ...]] = (*PipelineConfig.RUN_FIELDS, "seed", "steps")
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        # every stage at the smallest size (the test suite)
        "smoke": {"data": {"tasks": [0], "train_demos": 2, "heldout_demos": 2, "demo_first_init": 2,
                           "frame_stride": 4},
                  "train": {"batch_size": 4, "student_preset": "tiny"},
                  "variants": ["baseline", "rocket"], "seeds": [0], "eval_trials": 1, "val_trials": 1,
                  "check_every": 2, "patience": 1, "max_budget": 4, "eval_points": 2,
                  "control_seeds": [0], "max_steps": 20, "grad_batches": 1, "workers": 1},
    }

    def budget_key_seed(self) -> int:
        """The seed whose baseline run searches the budget (and is then that seed's baseline)."""
        return self.seeds[0]

    def points(self, budget: int) -> list[int]:
        """The evaluated checkpoints of every run once the budget is known."""
        return eval_points(budget, self.check_every, self.eval_points)

    def run_train_config(self, variant: str, seed: int, steps: int, dataset: str, out_dir: str,
                         teacher: str, teacher_cache: str | None) -> TrainConfig:
        """One run's TrainConfig: the template with the run's variant, seed and teacher, trained
        to ``steps`` with a checkpoint every ``check_every`` steps (all kept: any may become an
        evaluation point). ``steps`` grows while the budget is searched; a constant schedule
        makes that the same as one run to the end."""
        # decay_after is unused by the constant schedule; fixed so that a run trained further
        # resumes with the settings it was saved with
        return self.run_config(dataset=dataset, out_dir=out_dir, variant=variant, seed=seed, steps=steps,
                               teacher=teacher, save_every=self.check_every, decay_after=self.max_budget,
                               keep_last=self.max_budget // self.check_every + 1, progress=False,
                               teacher_cache=teacher_cache if variant != "baseline" else None)

    def validate(self) -> None:
        super().validate()
        if "baseline" not in self.variants:
            raise RocketError("the study compares against the baseline; add baseline to --variants.")
        for name, values in (("seeds", self.seeds), ("control_seeds", self.control_seeds)):
            if len(set(values)) != len(values):
                raise RocketError(f"{name} must not repeat; list each once.")
        if not self.seeds:
            raise RocketError("the study needs at least one seed, e.g. --seeds [0,1,2].")
        for name in ("eval_trials", "val_trials", "check_every", "patience", "eval_points", "grad_batches"):
            if getattr(self, name) < 1:
                raise RocketError(f"the study's {name} must be at least 1, got {getattr(self, name)}.")
        if self.max_budget < self.check_every:
            raise RocketError(f"max_budget ({self.max_budget}) must be at least check_every "
                              f"({self.check_every}); raise --max_budget.")
        if not 0.0 <= self.min_gain < 1.0:
            raise RocketError(f"min_gain is a success-rate gain in [0, 1), got {self.min_gain}.")
        if not self.levels or any(not 0.0 < lv <= 1.0 for lv in self.levels):
            raise RocketError("levels are fractions of the baseline's converged success in (0, 1], "
                              "e.g. --levels 0.5,0.9.")
        if self.train.schedule != "constant":
            raise RocketError("the study evaluates checkpoints along one run, which needs a schedule "
                              "that does not depend on the run's length; use --train.schedule constant.")
        if self.data.demo_first_init < self.eval_trials + self.val_trials:
            raise RocketError(
                f"demonstrations start at init state {self.data.demo_first_init} but test and validation "
                f"use 0..{self.eval_trials + self.val_trials - 1}; raise data.demo_first_init.")
        seen = teacher_training_states(self.train.teacher, self.data.suite)
        demos = set(range(self.data.demo_first_init,
                          self.data.demo_first_init + self.data.train_demos + self.data.heldout_demos))
        if seen & demos:
            raise RocketError(
                f"the teacher {self.train.teacher!r} was trained on init states {min(seen)}-{max(seen)} of "
                f"{self.data.suite}, which the demonstrations {min(demos)}-{max(demos)} overlap; move them "
                "below with data.demo_first_init and data.train_demos.")
        if self.max_steps is not None and self.max_steps < 1:
            raise RocketError(f"max_steps must be >= 1 (or null for the paper's budget), got "
                              f"{self.max_steps}.")

"""What `rocket reproduce` runs: variants x seeds on one dataset and teacher, and how it is
evaluated. The command line is generated from this dataclass (one place for each default)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from rocket_vla.align.config import VARIANTS
from rocket_vla.align.resample import check_pos_embed_flag
from rocket_vla.errors import RocketError

SPLITS = ("test", "validation")


@dataclass
class StudyConfig:
    """The paper's ablation in miniature (defaults: about 1.5-2 hours on a 2-core CPU).

    Init states of each task are split three ways and never overlap: ``test`` =
    ``0 .. eval_trials-1`` (what results are reported on), ``validation`` = the next
    ``val_trials`` (where choices are made), demonstrations after both. The default tasks
    are LIBERO-Spatial 1 and 2 because the bundled tiny teacher was once picked by the demo's
    success on task 0.
    """

    out_dir: str = "runs/study"
    """study folder: one sub-folder per (variant, seed), results.json, report.md, plots"""
    cache_dir: str = ".rocket_cache"
    """where collected demonstrations and teacher features are cached"""
    suite: str = "libero_spatial"
    """LIBERO suite of the tasks"""
    tasks: list[int] = field(default_factory=lambda: [1, 2])
    """task ids; one multi-task policy is trained on all of them"""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """the paper's variants to compare (baseline first: its final success is the threshold)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """training seeds (initialisation and data order); data, teacher and evaluation are shared"""
    split: str = "test"
    """init states evaluated: test (reported results) or validation (for choosing settings)"""
    eval_trials: int = 6
    """test init states per task (0 .. eval_trials-1)"""
    val_trials: int = 10
    """validation init states per task, right after the test ones"""
    curve_points: int = 3
    """checkpoints evaluated per run, evenly spaced; the last is the final one"""
    curve_trials: int = 2
    """trials per task at the earlier checkpoints (the first ones of the split)"""
    train_demos: int = 20
    """demonstrations per task for training"""
    heldout_demos: int = 2
    """demonstrations per task held out (action L1)"""
    demo_first_init: int = 20
    """first init state used for demonstrations (after the test and validation ones)"""
    image_size: int = 64
    frame_stride: int = 2
    after_success: int = 16
    model: str = "demo"
    """MiniVLA size preset"""
    steps: int = 800
    batch_size: int = 32
    lr: float = 1e-3
    num_pairs: int = 4
    teacher: str = "tiny"
    """teacher for the aligned variants: tiny (bundled) or a local VGGT checkpoint path"""
    cache_teacher: bool = True
    """compute the teacher's features once and train from the cache"""
    pos_embed: str | None = None
    """position embedding added to the aligned variants' targets: sincos or vggt-uv (None: the
    variant's default for the MiniVLA, sincos)"""
    max_steps: int | None = None
    """episode step budget (None: the paper's budget for the suite)"""
    grad_batches: int = 4
    """batches averaged for the gradient-conflict matrices (first seed's final checkpoints)"""
    workers: int = 2
    """processes for training runs and simulator workers"""
    threads: int = 1
    """torch threads per process (0: torch's default)"""
    seed: int = 0
    """seed of collection and evaluation (the same for every run)"""
    log_seconds: float = 60.0
    overwrite: bool = False
    """redo (variant, seed) runs made with other settings, data, teacher or code instead of refusing"""

    PRESETS = {
        "default": {},
        # every stage at the smallest size (the test suite)
        "smoke": dict(tasks=[0], variants=["baseline", "rocket"], seeds=[0, 1], eval_trials=1,
                      val_trials=1, curve_points=2, curve_trials=1, train_demos=2, heldout_demos=2,
                      demo_first_init=2, steps=4, batch_size=4, model="tiny", frame_stride=4,
                      max_steps=30, grad_batches=1, workers=1),
    }

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> StudyConfig:
        if name not in cls.PRESETS:
            raise RocketError(f"unknown study preset {name!r}; choose one of {', '.join(cls.PRESETS)}.")
        cfg = cls(**{**cls.PRESETS[name], **overrides})
        cfg.validate()
        return cfg

    @property
    def first_trial(self) -> int:
        """The first init state of the evaluated split."""
        return 0 if self.split == "test" else self.eval_trials

    @property
    def trials(self) -> int:
        """Trials per task at the final checkpoint."""
        return self.eval_trials if self.split == "test" else self.val_trials

    @property
    def save_every(self) -> int:
        """Checkpoint spacing: every curve point is a saved checkpoint."""
        return self.steps // self.curve_points

    def curve_steps(self) -> list[int]:
        """Training steps whose checkpoints are evaluated: multiples of :attr:`save_every`,
        then the final step."""
        return sorted({*(k * self.save_every for k in range(1, self.curve_points)), self.steps})

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise RocketError(f"unknown split {self.split!r}; use test or validation.")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise RocketError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}.")
        if len(set(self.variants)) != len(self.variants) or len(set(self.seeds)) != len(self.seeds):
            raise RocketError("variants and seeds must not repeat; list each once.")
        if not self.seeds or not self.tasks:
            raise RocketError("the study needs at least one seed and one task, e.g. --seeds [0,1,2].")
        for name in ("eval_trials", "curve_points", "curve_trials", "train_demos", "steps", "batch_size",
                     "num_pairs", "workers", "image_size", "frame_stride", "grad_batches"):
            if getattr(self, name) < 1:
                raise RocketError(f"the study's {name} must be at least 1, got {getattr(self, name)}.")
        check_pos_embed_flag(self.pos_embed)
        if self.heldout_demos < 2:
            raise RocketError("the study needs at least 2 held-out demonstrations per task.")
        if self.val_trials < 0 or (self.split == "validation" and self.val_trials < 1):
            raise RocketError("val_trials must be >= 0, and >= 1 to evaluate on the validation split.")
        if self.curve_trials > self.trials:
            raise RocketError(f"curve_trials ({self.curve_trials}) cannot exceed the split's trials "
                              f"({self.trials}); lower curve_trials.")
        if self.demo_first_init < self.eval_trials + self.val_trials:
            raise RocketError(
                f"demonstrations start at init state {self.demo_first_init} but test and validation "
                f"use 0..{self.eval_trials + self.val_trials - 1}; raise demo_first_init.")
        if self.demo_first_init + self.train_demos + self.heldout_demos > 50:
            raise RocketError("LIBERO has 50 init states per task; ask for fewer demonstrations.")
        if self.max_steps is not None and self.max_steps < 1:
            raise RocketError(f"max_steps must be >= 1 (or null for the paper's budget), got "
                              f"{self.max_steps}.")
        if self.steps < self.curve_points:
            raise RocketError("steps must be at least curve_points; lower curve_points.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RocketError(f"the study's lr must be a positive finite number, got {self.lr}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

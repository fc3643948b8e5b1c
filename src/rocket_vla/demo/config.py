"""Demo scales. Each preset is chosen to fit its wall-time budget on a 2-core CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rocket_vla.errors import RocketError
from rocket_vla.pipeline.config import DataConfig, PipelineConfig
from rocket_vla.train.config import TrainConfig


def demo_train() -> TrainConfig:
    """The demo's training recipe: a demo-size MiniVLA, the bundled tiny teacher, 4 balanced
    pairs, a short run at a higher learning rate than the paper's (its runs are 20x longer)."""
    return TrainConfig(student_preset="demo", teacher="tiny", num_pairs=4, steps=1500, batch_size=32,
                       lr=1e-3)


@dataclass
class DemoConfig(PipelineConfig):
    """What the demo runs. Demonstrations come from official init states
    ``data.demo_first_init ..``; evaluation uses init states ``0 .. eval_trials - 1``, so no
    evaluated start was ever demonstrated. Every variant trains with ``train.seed``."""

    out_dir: str = "runs/demo"
    """run folder: summary table, plots, the variants' runs"""
    data: DataConfig = field(default_factory=DataConfig)
    """the demonstrations"""
    train: TrainConfig = field(default_factory=demo_train)
    """the training recipe of every variant (the demo sets dataset, out_dir, variant and the
    schedule's decay_after and save_every per run)"""
    variants: list[str] = field(default_factory=lambda: ["baseline", "rocket"])
    """variants trained on the same data and seed"""
    eval_trials: int = 20
    """closed-loop trials per task (init states 0 .. eval_trials - 1)"""
    probe_frames: int = 12
    """frames per episode fed to the spatial probe"""
    parallel_train: bool = True
    """train the variants at the same time, one single-threaded process each (if the machine
    has a core per variant; results are the same as in turn); false trains them in turn"""
    log_seconds: float = 30.0
    """progress line interval while variants train in parallel"""

    NAME: ClassVar[str] = "demo"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        # about 7 minutes on 2 cores
        "quick": {"data": {"train_demos": 12, "heldout_demos": 3, "demo_first_init": 10},
                  "train": {"steps": 600}, "eval_trials": 6, "probe_frames": 8},
        # the smallest run that still exercises every stage (used by the test suite)
        "smoke": {"data": {"train_demos": 2, "heldout_demos": 2, "frame_stride": 4},
                  "train": {"steps": 6, "batch_size": 4, "student_preset": "tiny"},
                  "eval_trials": 1, "probe_frames": 4, "workers": 1},
    }

    def validate(self) -> None:
        super().validate()
        if self.data.demo_first_init < self.eval_trials:
            raise RocketError(
                f"demonstrations start at init state {self.data.demo_first_init} but evaluation uses init "
                f"states 0..{self.eval_trials - 1}; raise data.demo_first_init so they do not overlap."
            )
        for name in ("eval_trials", "probe_frames"):
            if getattr(self, name) < 1:
                raise RocketError(f"the demo's {name} must be at least 1, got {getattr(self, name)}.")

    def variant_config(self, variant: str, dataset: str, out_dir: str, teacher_cache: str | None,
                       progress: bool) -> TrainConfig:
        """The TrainConfig of one variant: the template with this run's fields, a checkpoint
        halfway and at the end."""
        return self.run_config(dataset=dataset, out_dir=out_dir, variant=variant, progress=progress,
                               save_every=max(1, self.train.steps // 2),
                               teacher_cache=teacher_cache if variant != "baseline" else None)

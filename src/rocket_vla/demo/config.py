"""Demo scales. Each preset is chosen to fit its wall-time budget on a 2-core CPU."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from rocket_vla.errors import RocketError


@dataclass
class DemoConfig:
    """What the demo runs. Demonstrations come from official init states
    ``demo_first_init .. demo_first_init + train_demos + heldout_demos - 1``; evaluation uses
    init states ``0 .. eval_trials - 1``, so no evaluated start was ever demonstrated."""

    out_dir: str = "runs/demo"
    cache_dir: str = ".rocket_cache"
    suite: str = "libero_spatial"
    tasks: list[int] = field(default_factory=lambda: [0])
    train_demos: int = 26  # per task
    heldout_demos: int = 4  # per task: action L1 and the probe's test split
    demo_first_init: int = 20
    eval_trials: int = 20  # per task
    image_size: int = 64
    frame_stride: int = 2
    after_success: int = 16  # expert steps recorded after the solve (see CollectConfig)
    model: str = "demo"
    variants: list[str] = field(default_factory=lambda: ["baseline", "rocket"])
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    num_pairs: int = 4
    teacher: str = "tiny"
    # compute the teacher's features of the training frames once and train from that
    # cache (False: run the teacher live on every batch, as `rocket train --teacher` does)
    cache_teacher: bool = True
    workers: int = 2
    # torch threads for training and probing: MiniVLA's matmuls are too small to gain from a
    # second thread, and with the cores shared (e.g. by the simulator workers) a second
    # thread made training several times slower here. 0 keeps torch's default.
    threads: int = 1
    # train the variants at the same time, one single-threaded process each (if the
    # machine has a core per variant); results are the same as training them in turn
    parallel_train: bool = True
    log_seconds: float = 30.0  # progress line interval while variants train in parallel
    seed: int = 0
    probe_frames: int = 12  # frames per episode fed to the spatial probe
    # redo a run folder made with other settings or code instead of refusing it
    overwrite: bool = False

    PRESETS = {
        "default": {},
        "quick": dict(train_demos=12, heldout_demos=3, demo_first_init=10, eval_trials=6, steps=600,
                      probe_frames=8),
        # the smallest run that still exercises every stage (used by the test suite)
        "smoke": dict(train_demos=2, heldout_demos=2, eval_trials=1, steps=6, batch_size=4,
                      model="tiny", probe_frames=4, frame_stride=4, workers=1),
    }

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DemoConfig:
        if name not in cls.PRESETS:
            raise RocketError(f"unknown demo preset {name!r}; choose one of {', '.join(cls.PRESETS)}.")
        values = {**cls.PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.train_demos < 1 or self.heldout_demos < 2:
            raise RocketError("the demo needs at least 1 training and 2 held-out demonstrations per task.")
        if self.demo_first_init < self.eval_trials:
            raise RocketError(
                f"demonstrations start at init state {self.demo_first_init} but evaluation uses init "
                f"states 0..{self.eval_trials - 1}; raise demo_first_init so they do not overlap."
            )
        if self.demo_first_init + self.train_demos + self.heldout_demos > 50:
            raise RocketError("LIBERO has 50 init states per task; ask for fewer demonstrations.")
        for name in ("eval_trials", "steps", "batch_size", "num_pairs", "workers", "probe_frames",
                     "image_size", "frame_stride"):
            if getattr(self, name) < 1:
                raise RocketError(f"the demo's {name} must be at least 1, got {getattr(self, name)}.")
        for name in ("seed", "threads", "after_success"):
            if getattr(self, name) < 0:
                raise RocketError(f"the demo's {name} must be >= 0, got {getattr(self, name)}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RocketError(f"the demo's lr must be a positive finite number, got {self.lr}.")
        if not self.tasks:
            raise RocketError("the demo needs at least one task; pass e.g. --tasks 0.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

"""Demo scales. Each preset is chosen to fit its wall-time budget on a 2-core CPU."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rocket_vla.errors import RocketError


@dataclass
class DemoConfig:
    """What the demo runs. Demonstrations come from official init states
    ``demo_first_init .. demo_first_init + train_demos + heldout_demos - 1``; evaluation uses
    init states ``0 .. eval_trials - 1``, so no evaluated start was ever demonstrated."""

    out_dir: str = "runs/demo"
    """run folder: summary table, plots, the variants' runs"""
    cache_dir: str = ".rocket_cache"
    """where collected demonstrations are cached (shared between runs)"""
    suite: str = "libero_spatial"
    """LIBERO suite the demonstrations and evaluations come from"""
    tasks: list[int] = field(default_factory=lambda: [0])
    """task ids of the suite"""
    train_demos: int = 26
    """training demonstrations per task"""
    heldout_demos: int = 4
    """held-out demonstrations per task: action L1 and the probe's test split"""
    demo_first_init: int = 20
    """official init state of the first demonstration"""
    eval_trials: int = 20
    """closed-loop trials per task (init states 0 .. eval_trials - 1)"""
    image_size: int = 64
    """camera resolution of collection, training and evaluation"""
    frame_stride: int = 2
    """frames recorded every k steps"""
    after_success: int = 16
    """expert steps recorded after the solve (see CollectConfig)"""
    model: str = "demo"
    """MiniVLA size preset"""
    variants: list[str] = field(default_factory=lambda: ["baseline", "rocket"])
    """variants trained on the same data and seed"""
    steps: int = 1500
    """training steps per variant"""
    batch_size: int = 32
    """training batch size"""
    lr: float = 1e-3
    """learning rate"""
    num_pairs: int = 4
    """aligned layer pairs (balanced selection)"""
    teacher: str = "tiny"
    """teacher spec as for `rocket train`"""
    cache_teacher: bool = True
    """compute the teacher's features of the training frames once and train from that cache
    (false: run the teacher live on every batch, as `rocket train --teacher` does)"""
    workers: int = 2
    """parallel simulator workers"""
    threads: int = 1
    """torch threads for training and probing (0: torch's default). MiniVLA's matmuls are too
    small to gain from a second thread, and with the cores shared (e.g. by the simulator
    workers) a second thread made training several times slower here"""
    parallel_train: bool = True
    """train the variants at the same time, one single-threaded process each (if the machine
    has a core per variant; results are the same as in turn); false trains them in turn"""
    log_seconds: float = 30.0
    """progress line interval while variants train in parallel"""
    seed: int = 0
    """seed of collection, training and evaluation"""
    probe_frames: int = 12
    """frames per episode fed to the spatial probe"""
    overwrite: bool = False
    """redo a run folder made with other settings or code instead of refusing it"""

    #: named sets of defaults (``rocket demo --preset NAME``); the first is the default
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        # about 7 minutes on 2 cores
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

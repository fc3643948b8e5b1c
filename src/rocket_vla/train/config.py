"""The training configuration: one dataclass, composed of model / align / data / optimiser.

Why one flat-ish dataclass: it is written verbatim into every checkpoint's
``config.json``, so ``--resume`` can compare it field by field with what the user asked
for now and refuse a silent change of hyper-parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rocket_vla.align.config import VARIANTS
from rocket_vla.data.augment import AugmentConfig
from rocket_vla.errors import RocketError, reject_unknown_keys

SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("auto", "no", "bf16", "fp16")

#: Fields that may differ between a checkpoint and the run resuming it: they change how
#: long the run goes and what it writes, not what any finished step computed.
RESUMABLE_CHANGES = frozenset(
    {"steps", "save_every", "log_every", "keep_last", "out_dir", "progress", "tensorboard",
     "log_samples"}
)


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes.

    ``variant`` picks one of the paper's five presets of the one code path; explicit
    ``student_layers``/``teacher_layers`` override the balanced selection.
    ``teacher``: ``"tiny"`` (bundled tiny geometry teacher), ``"random-tiny"`` (a tiny VGGT
    with random weights: pipeline checks only), or a path to a VGGT checkpoint.
    """

    dataset: str = ""  # LIBERO-layout HDF5 file or folder of them
    out_dir: str = "runs/train"  # run folder: checkpoints/, metrics.jsonl, tb/
    student: str = "minivla"  # student kind from rocket_vla.policies.student.REGISTRY
    student_preset: str | None = None  # the student's size preset (None: its default, MiniVLA "demo")
    student_path: str | None = None  # local pretrained checkpoint dir (local_files_only)
    lora_rank: int = 0  # 0: full fine-tuning; >0: PEFT LoRA on the student's LM linears (paper: 32)
    gradient_checkpointing: bool = False  # recompute block activations in backward (GPU memory)
    variant: str = "rocket"
    student_layers: list[int] | None = None
    teacher_layers: list[int] | None = None
    num_pairs: int = 4
    align_weight: float | None = None  # lambda; None: the student's default (MiniVLA 0.5, pi0 0.125)
    projector_hidden: int = 64
    teacher: str = "tiny"
    teacher_cache: str | None = None
    teacher_size: int = 56
    steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "step"
    decay_after: int = 10_000
    warmup: int = 0
    grad_clip: float = 1.0
    precision: str = "auto"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_episodes: int | None = None
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 20
    progress: bool = True
    log_samples: bool = False  # each rank appends its dataset indices per step to samples/rank<k>.jsonl
    tensorboard: bool = True

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise RocketError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}.")
        if self.schedule not in SCHEDULES:
            raise RocketError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if self.precision not in PRECISIONS:
            raise RocketError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}."
            )
        for name in ("steps", "batch_size", "grad_accum", "save_every", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise RocketError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise RocketError(f"the learning rate must be positive, got {self.lr}.")
        from rocket_vla.policies.student import REGISTRY

        if self.student not in REGISTRY:
            raise RocketError(
                f"unknown student {self.student!r}; choose one of {', '.join(sorted(REGISTRY))}."
            )
        if self.lora_rank < 0:
            raise RocketError(f"lora_rank must be 0 (full fine-tuning) or positive, got {self.lora_rank}.")
        if self.student_path is not None and not Path(self.student_path).is_dir():
            raise RocketError(
                f"student path {self.student_path} is not a folder; pass the local directory of "
                "a pretrained checkpoint (nothing is downloaded)."
            )
        if (self.student_layers is None) != (self.teacher_layers is None):
            raise RocketError(
                "give both --student-layers and --teacher-layers (as `rocket select-layers` "
                "prints them), or neither."
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if "model" in data and "student_preset" not in data:  # checkpoints before students
            data["student_preset"] = data.pop("model")
        reject_unknown_keys(cls, data, "training", "remove or rename them.")
        if isinstance(data.get("augment"), dict):
            data["augment"] = AugmentConfig(**data["augment"])
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def changed_fields(self, other: TrainConfig) -> list[str]:
        """Names of the fields that differ from ``other`` and would change the run's math."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs[k])

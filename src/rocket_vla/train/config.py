"""The training configuration: one dataclass, composed of model / align / data / optimiser.

Why one flat-ish dataclass: it is written verbatim into every checkpoint's
``config.json``, so ``--resume`` can compare it field by field with what the user asked
for now and refuse a silent change of hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rocket_vla.align.config import VARIANTS
from rocket_vla.align.resample import POS_EMBEDS
from rocket_vla.data.augment import AugmentConfig
from rocket_vla.errors import RocketError, reject_unknown_keys

SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("auto", "no", "bf16", "fp16")

#: Fields that may differ between a checkpoint and the run resuming it: they change how
#: long the run goes and what it writes, not what any finished step computed.
RESUMABLE_CHANGES = frozenset(
    {"steps", "save_every", "log_every", "keep_last", "out_dir", "progress", "tensorboard",
     "overwrite", "log_samples"}
)


def check_pos_embed_flag(name: str | None) -> None:
    """Refuse an unknown ``--pos_embed`` value before a run starts (None: the variant's default)."""
    if name is not None and name not in POS_EMBEDS:
        raise RocketError(f"unknown pos_embed {name!r}; pass --pos_embed {' or '.join(POS_EMBEDS)}.")


def check_out_dir(out_dir: str) -> None:
    """Refuse a run folder that cannot be one: empty (the run would spill its checkpoints,
    logs and lock into the working directory), an existing file, or below a file."""
    if not out_dir.strip():
        raise RocketError("out_dir is empty; pass --out_dir FOLDER, a folder for the run's "
                          "checkpoints and logs (use . to mean the working directory).")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise RocketError(f"--out_dir {path} is an existing file, not a folder; pass a folder path "
                          "(a new one, or a run folder to --resume).")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise RocketError(f"--out_dir {path} lies below {above}, which is a file; pass a folder path "
                          "whose parents are folders.")


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes.

    ``variant`` picks one of the paper's five presets of the one code path; explicit
    ``student_layers``/``teacher_layers`` override the balanced selection.
    ``teacher``: ``"tiny"`` (bundled tiny geometry teacher), ``"random-tiny"`` (a tiny VGGT
    with random weights: pipeline checks only), or a path to a VGGT checkpoint.
    """

    dataset: str = ""
    """episode HDF5 file or folder: our collections, the LIBERO release, or a LeRobot dataset"""
    out_dir: str = "runs/train"
    """run folder: checkpoints, TensorBoard, metrics.jsonl"""
    student: str = "minivla"
    """student kind (rocket_vla.policies.student.REGISTRY): minivla, pi0, oft"""
    student_preset: str | None = None
    """the student's size preset, random weights (None: its default) -- minivla: tiny, demo
    (default), small; pi0: tiny (default), base; oft: smolvlm-tiny (default), paligemma-tiny,
    llava-tiny, qwen2.5-vl-tiny"""
    student_path: str | None = None
    """local folder of a pretrained checkpoint (read with local_files_only; nothing is downloaded)"""
    student_config: dict[str, Any] = field(default_factory=dict)
    """fields of the student's own config, one flag each (--student_config.image_size 224,
    --student_config.tokenizer words); the keys are listed in docs/students.md"""
    lora_rank: int = 0
    """0: full fine-tuning; >0: PEFT LoRA of this rank on the student's language-model linears
    (the paper: 32), aligner and action head trained in full"""
    gradient_checkpointing: bool = False
    """recompute block activations in backward (saves GPU memory)"""
    variant: str = "rocket"
    """one of the paper's five presets: baseline, spatial_forcing, naive, shared, rocket"""
    student_layers: list[int] | None = None
    """student hidden-state indices to align (as `rocket select-layers` writes them); with
    teacher_layers, overrides the balanced selection"""
    teacher_layers: list[int] | None = None
    """teacher layers, paired position by position with student_layers"""
    num_pairs: int = 4
    """pairs for the balanced selection when no layers are given"""
    align_weight: float | None = None
    """lambda, the weight of the alignment loss (None: AlignConfig's 0.5, the paper's; the
    paper presets set their own, e.g. 0.125 for pi0)"""
    projector_hidden: int | None = None
    """projector hidden width H (None: AlignConfig's default, the teacher's width as in the
    official code)"""
    pos_embed: str | None = None
    """position embedding added to teacher targets: sincos (MAE-style) or vggt-uv (VGGT's own,
    the official code's, which the paper presets set) -- None: sincos"""
    teacher: str = "tiny"
    """'tiny' (bundled), 'random-tiny' (pipeline checks only), or a VGGT checkpoint path"""
    teacher_cache: str | None = None
    """read teacher features from a `rocket cache-teacher` folder instead of running it"""
    teacher_size: int = 56
    """teacher input side in pixels"""
    teacher_dtype: str = "auto"
    """teacher weights: auto (float32 under the step's autocast, the official PyTorch recipe) or
    bfloat16 (the official JAX pi0 run; faster, features further from float32)"""
    steps: int = 2000
    """optimizer steps"""
    batch_size: int = 32
    """samples per process and micro-step"""
    grad_accum: int = 1
    """micro-steps per optimizer step"""
    lr: float = 5e-4
    """AdamW learning rate (paper: 5e-4)"""
    weight_decay: float = 0.0
    """AdamW weight decay, applied to matrices only"""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas"""
    schedule: str = "step"
    """step (x0.1 after decay_after steps, the paper), cosine, or constant"""
    decay_after: int = 10_000
    """step schedule: optimizer step at which the lr drops to x0.1"""
    lr_floor: float = 0.0
    """cosine schedule: the fraction of lr it decays to at the last step (openpi's pi0 LIBERO
    recipe: 0.1)"""
    warmup: int = 0
    """linear warm-up steps"""
    grad_clip: float = 1.0
    """gradient-norm clip"""
    precision: str = "auto"
    """auto (bf16 on a GPU that supports it), no, bf16 or fp16"""
    seed: int = 0
    """seed of weights, data order and augmentations"""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """random crop and colour jitter (crop boxes travel to the teacher side)"""
    max_episodes: int | None = None
    """use only the first N episodes"""
    save_every: int = 500
    """checkpoint interval in optimizer steps"""
    keep_last: int = 2
    """checkpoints kept (older ones are pruned)"""
    log_every: int = 20
    """metrics interval in optimizer steps"""
    progress: bool = True
    """show a progress bar"""
    log_samples: bool = False
    """each rank appends the dataset indices of every step to samples/rank<k>.jsonl"""
    tensorboard: bool = True
    """write TensorBoard event files"""
    overwrite: bool = False
    """start a fresh run in an out_dir that holds one (its checkpoints, metrics and logs are
    deleted first); without it such a run is refused"""

    def validate(self) -> None:
        check_out_dir(self.out_dir)
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
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise RocketError(f"{name} must be a positive finite number, got {value}.")
        check_pos_embed_flag(self.pos_embed)
        self.augment.validate()
        for name in ("align_weight", "weight_decay"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise RocketError(f"{name} must be a finite number >= 0, got {value}.")
        if not (math.isfinite(self.lr_floor) and 0.0 <= self.lr_floor <= 1.0):
            raise RocketError(f"lr_floor is the fraction of lr the cosine schedule ends at, in [0, 1]; "
                              f"got {self.lr_floor}.")
        if self.teacher_dtype not in ("auto", "float32", "bfloat16"):
            raise RocketError(f"unknown teacher_dtype {self.teacher_dtype!r}; use auto, float32 or bfloat16.")
        self.betas = tuple(self.betas)  # a YAML or JSON list reads as a list
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise RocketError(f"betas must be two numbers in [0, 1), got {self.betas}.")
        for name in ("num_pairs", "projector_hidden", "teacher_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise RocketError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("warmup", "decay_after", "seed"):
            if getattr(self, name) < 0:
                raise RocketError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise RocketError(f"max_episodes must be at least 1 (or unset), got {self.max_episodes}.")
        for layers in (self.student_layers, self.teacher_layers):
            if layers is not None and not layers:
                raise RocketError("a layer list is empty; give at least one layer, e.g. [2,4].")
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
                "give both student_layers and teacher_layers (as `rocket select-layers` "
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

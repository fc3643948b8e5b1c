"""The configuration the demo and the study share: the demonstrations they collect
(:class:`DataConfig`), the training recipe every run starts from (a nested
:class:`~rocket_vla.train.config.TrainConfig`), the run-only settings, and named presets.

Why nested: each default is written once, in the dataclass that owns it; the demo and the
study only choose their own values for the template (``train: TrainConfig`` with the
demo's steps, batch and learning rate) and derive each run from it with
``dataclasses.replace``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from rocket_vla.align.config import VARIANTS
from rocket_vla.errors import RocketError
from rocket_vla.train.config import TrainConfig

#: LIBERO's official init states per task.
INIT_STATES = 50

C = TypeVar("C", bound="PipelineConfig")


@dataclass
class DataConfig:
    """Scripted-expert demonstrations: init states ``demo_first_init ..
    demo_first_init + train_demos + heldout_demos - 1`` of each task, the first ``train_demos``
    for training and the rest held out."""

    suite: str = "libero_spatial"
    """LIBERO suite the demonstrations and evaluations come from"""
    tasks: list[int] = field(default_factory=lambda: [0])
    """task ids of the suite; one policy is trained on all of them"""
    train_demos: int = 26
    """training demonstrations per task"""
    heldout_demos: int = 4
    """held-out demonstrations per task (action L1, the probe's test split)"""
    demo_first_init: int = 20
    """official init state of the first demonstration"""
    image_size: int = 64
    """camera resolution of collection, training and evaluation"""
    frame_stride: int = 2
    """frames recorded every k steps"""
    after_success: int = 16
    """expert steps recorded after the solve (see CollectConfig)"""
    seed: int = 0
    """seed of collection and of closed-loop evaluation"""

    def validate(self) -> None:
        if not self.tasks:
            raise RocketError("at least one task is needed; pass e.g. --data.tasks 0.")
        if self.train_demos < 1 or self.heldout_demos < 2:
            raise RocketError("at least 1 training and 2 held-out demonstrations per task are needed; "
                              "raise --data.train_demos or --data.heldout_demos.")
        if self.demo_first_init + self.train_demos + self.heldout_demos > INIT_STATES:
            raise RocketError(f"LIBERO has {INIT_STATES} init states per task; ask for fewer demonstrations.")
        for name in ("image_size", "frame_stride"):
            if getattr(self, name) < 1:
                raise RocketError(f"data.{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("seed", "after_success", "demo_first_init"):
            if getattr(self, name) < 0:
                raise RocketError(f"data.{name} must be >= 0, got {getattr(self, name)}.")


@dataclass
class PipelineConfig:
    """Settings of the demo and the study that only change where and how fast a run goes;
    the subclasses add the data, the training template and what they evaluate."""

    cache_dir: str = ".rocket_cache"
    """where collected demonstrations and teacher features are cached (shared between runs)"""
    cache_teacher: bool = True
    """compute the teacher's features of the training frames once and train from that cache
    (false: run the teacher live on every batch, as `rocket train --teacher` does)"""
    workers: int = 2
    """processes for training runs and simulator workers"""
    threads: int = 1
    """torch threads per process (0: torch's default). MiniVLA's matmuls are too small to gain
    from a second thread, and on cores shared with other processes a second thread slows
    training down"""
    overwrite: bool = False
    """redo runs made with other settings, data, teacher or code instead of refusing them"""

    #: the command's name in messages
    NAME: ClassVar[str] = "pipeline"
    #: named sets of nested values (``--preset NAME``); the first is the default
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    #: TrainConfig fields the pipeline sets itself (MiniVLA, and each run's folder, data,
    #: variant and schedule); a value given for them is refused
    RUN_FIELDS: ClassVar[tuple[str, ...]] = ("dataset", "out_dir", "student", "variant", "decay_after",
                                             "save_every", "teacher_cache", "progress")

    # The subclasses declare these with their own defaults.
    data: DataConfig = field(init=False, repr=False)
    train: TrainConfig = field(init=False, repr=False)
    variants: list[str] = field(init=False, repr=False)

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The preset ``name`` with ``overrides`` (nested dicts for nested configs, e.g.
        ``train={"steps": 9}``) applied on top, validated."""
        if name not in cls.PRESETS:
            raise RocketError(f"unknown {cls.NAME} preset {name!r}; choose one of {', '.join(cls.PRESETS)}.")
        cfg = with_values(with_values(cls(), cls.PRESETS[name]), overrides)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """The checks the demo and the study share; the subclasses add their own."""
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise RocketError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}.")
        if len(set(self.variants)) != len(self.variants):
            raise RocketError("variants must not repeat; list each once.")
        if self.workers < 1 or self.threads < 0:
            raise RocketError(f"the {self.NAME} needs workers >= 1 and threads >= 0, got "
                              f"{self.workers} and {self.threads}.")
        self.data.validate()
        template = TrainConfig()
        for name in self.RUN_FIELDS:
            if getattr(self.train, name) != getattr(template, name):
                raise RocketError(f"the {self.NAME} sets train.{name} itself; remove --train.{name}.")
        self.train.validate()

    def run_config(self, **fields: Any) -> TrainConfig:
        """One run's TrainConfig: the template ``train`` with the per-run ``fields``; its
        step schedule drops the learning rate at 80% of the run (the paper's drop point is
        for runs 10-20x longer)."""
        steps = fields.get("steps", self.train.steps)
        fields.setdefault("decay_after", max(1, int(steps * 0.8)))
        return dataclasses.replace(self.train, **fields)

    @property
    def aligned(self) -> bool:
        """Whether any variant trains against the teacher."""
        return any(v != "baseline" for v in self.variants)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["train"] = self.train.to_dict()
        return data


def with_values(config: Any, values: dict[str, Any], where: str = "") -> Any:
    """``config`` (a dataclass) with ``values`` set; a dict value for a nested dataclass sets
    its fields. An unknown key is refused, naming it with its dotted path."""
    names = {f.name for f in dataclasses.fields(config) if f.init}
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise RocketError(f"unknown setting '{where}{key}'; see --print_config for the settings.")
        current = getattr(config, key)
        nested = dataclasses.is_dataclass(current) and isinstance(value, dict)
        changes[key] = with_values(current, value, f"{where}{key}.") if nested else value
    return dataclasses.replace(config, **changes)

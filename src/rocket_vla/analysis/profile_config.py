"""The settings of each ``rocket profile`` analysis, one dataclass per kind.

``rocket profile KIND``'s flags are generated from these fields (so each default lives
here once); :meth:`ProfileInputs.subjects` loads the checkpoints and each ``run`` calls
:mod:`rocket_vla.analysis.profiles`, which writes the JSON and PNG files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError


@dataclass
class ProfileInputs:
    """What every analysis reads: checkpoints, samples of a dataset, a teacher."""

    checkpoint: list[str]
    """run folder(s) or step_* checkpoint folder(s) written by `rocket train`"""
    dataset: str | None = None
    """LIBERO-layout HDF5 file or folder (None: the run's dataset)"""
    teacher: str | None = None
    """teacher spec as for `rocket train` (None: the run's teacher)"""
    teacher_size: int | None = None
    """teacher input side in pixels (None: the run's)"""
    samples: int = 256
    """number of samples"""
    batch_size: int = 32
    """samples per batch"""
    seed: int = 0
    """seed of the sample subset"""
    out_dir: str = "runs/profile"
    """output folder for JSON and PNG"""

    def subjects(self, all_steps: bool = False) -> list[Any]:
        """The checkpoints as profile subjects (with ``all_steps``, every saved step of each run)."""
        from rocket_vla.analysis.subject import StudentSubject, checkpoint_steps

        paths = self.checkpoint
        if all_steps:
            paths = [step for p in paths for step in checkpoint_steps(p)]
        return [StudentSubject.load(c, dataset=self.dataset, teacher=self.teacher,
                                    teacher_size=self.teacher_size, seed=self.seed) for c in paths]

    def one_subject(self, kind: str) -> Any:
        if len(self.checkpoint) != 1:
            raise RocketError(f"`profile {kind}` reads one checkpoint; pass a single --checkpoint.")
        return self.subjects()[0]


@dataclass
class CKAProfile(ProfileInputs):
    """Linear CKA of student x teacher layers, and the pairs it recommends."""

    samples: int = 512
    """number of samples"""
    out_dir: str = "runs/profile/cka"
    """output folder for JSON and PNG"""
    student_layers: list[int] | None = None
    """student indices to map (None: every block output)"""
    teacher_layers: list[int] | None = None
    """teacher indices to map (None: every block output)"""
    estimator: str = "debiased"
    """debiased or biased"""
    mode: str = "flatten"
    """per-sample feature: the flattened token map (flatten) or the mean token (mean)"""
    pairs: int | None = None
    """number of pairs to recommend (None: as many as possible)"""
    progress: bool = True
    """show a progress bar"""

    def run(self) -> dict[str, Any]:
        from rocket_vla.analysis.profiles import CKASettings, profile_cka

        settings = CKASettings(self.student_layers, self.teacher_layers, self.samples, self.batch_size,
                               self.mode, self.estimator, self.pairs, progress=self.progress)
        return profile_cka(self.one_subject("cka"), settings, Path(self.out_dir))


@dataclass
class GradProfile(ProfileInputs):
    """Cosines between the per-pair alignment gradients and the action-loss gradient."""

    samples: int = 64
    """number of samples (unused: --batches x --batch_size are drawn)"""
    batch_size: int = 16
    """samples per batch"""
    out_dir: str = "runs/profile/grad"
    """output folder for JSON and PNG"""
    batches: int = 4
    """batches to average over"""
    all_steps: bool = False
    """profile every saved step_* checkpoint of each run (curves over training)"""
    params: str = "all"
    """parameter group: all backbone blocks, one block, or lora weights"""
    block: int | None = None
    """block position for --params block"""
    name_filter: str | None = None
    """regular expression on parameter names (lora default: lora_)"""

    def run(self) -> dict[str, Any]:
        from rocket_vla.analysis.grad_conflict import ParamGroup
        from rocket_vla.analysis.profiles import GradSettings, profile_grad

        group = ParamGroup(self.params, "", self.block, self.name_filter)  # type: ignore[arg-type]
        return profile_grad(self.subjects(self.all_steps), GradSettings(group, self.batches, self.batch_size),
                            Path(self.out_dir))


@dataclass
class ProjectorProfile(ProfileInputs):
    """The projector's fit per pair and its between-pair similarities."""

    out_dir: str = "runs/profile/projector"
    """output folder for JSON and PNG"""
    all_steps: bool = False
    """profile every saved step_* checkpoint of each run"""

    def run(self) -> dict[str, Any]:
        from rocket_vla.analysis.profiles import profile_projector

        return profile_projector(self.subjects(self.all_steps), self.samples, self.batch_size,
                                 Path(self.out_dir))


@dataclass
class ImportanceProfile(ProfileInputs):
    """Mean cos(h_s, h_s+w) per start layer s and block window w."""

    out_dir: str = "runs/profile/importance"
    """output folder for JSON and PNG"""
    windows: list[int] = field(default_factory=lambda: [1, 2, 4])
    """block windows w"""

    def run(self) -> dict[str, Any]:
        from rocket_vla.analysis.profiles import profile_importance

        return profile_importance(self.one_subject("importance"), self.windows, self.samples,
                                  self.batch_size, Path(self.out_dir))


#: ``rocket profile KIND`` -> its settings
PROFILES: dict[str, type[ProfileInputs]] = {
    "cka": CKAProfile, "grad": GradProfile, "projector": ProjectorProfile, "importance": ImportanceProfile,
}

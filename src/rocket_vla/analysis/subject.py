"""What a profile runs on: a student, its aligner, a teacher and a stream of batches.

The analyses themselves (``cka``, ``grad_conflict``, ``projector_sim``, ``importance``)
work on plain tensors; :mod:`rocket_vla.analysis.profiles` drives them through the small
:class:`Subject` protocol below, so any student can be profiled by implementing it.
:class:`StudentSubject` implements it for checkpoints of any student written by
``rocket train`` and LIBERO-layout episodes. Images are only resized (no augmentation) so that the teacher
sees exactly the full frames the student sees and runs are repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rocket_vla.align import AlignConfig, Aligner, LayerTaps
from rocket_vla.align.resample import resample_teacher
from rocket_vla.errors import RocketError
from rocket_vla.policies.student import Student


class Subject(Protocol):
    """The student/teacher pair a profile runs on."""

    label: str
    step: int
    policy: nn.Module
    aligner: Aligner
    blocks_path: str
    depth: int
    teacher_depth: int

    def batches(self, num_samples: int, batch_size: int, minimum: int = 1
                ) -> Iterator[dict[str, Any]]:
        """Deterministic batches covering ``num_samples`` samples, each of >= ``minimum``."""

    def forward(self, batch: dict[str, Any], layers: Sequence[int]
                ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(output, visual-token states ``[B, T, D]`` per layer, valid-token mask ``[B, T]``);
        ``output`` is whatever :meth:`action_loss` turns into the policy's loss."""

    def action_loss(self, batch: dict[str, Any], prediction: torch.Tensor) -> torch.Tensor:
        """The policy's own training loss from :meth:`forward`'s output."""

    def teacher_tokens(self, batch: dict[str, Any], layers: Sequence[int],
                       pos_embed_scale: float = 0.0, pos_embed: str = "sincos") -> list[torch.Tensor]:
        """Teacher features resampled onto the student's visual tokens, ``[B, T, C]`` per layer."""

    def stream(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every hidden state ``0..depth`` ``[B, T, D]`` over visual tokens and its mask."""


def checkpoint_steps(path: str | Path) -> list[Path]:
    """Every ``step_*`` checkpoint of a run (or its ``checkpoints/`` folder), oldest first;
    a single checkpoint folder is returned as is. Used to profile along training."""
    path = Path(path)
    for folder in (path / "checkpoints", path):
        steps = sorted(p for p in folder.glob("step_*") if p.is_dir())
        if steps:
            return steps
    return [path]


def sample_indices(total: int, num_samples: int, seed: int = 0) -> torch.Tensor:
    """``num_samples`` distinct dataset indices, a seeded random subset (all if fewer)."""
    if total < 1:
        raise RocketError("the dataset has no samples; check the dataset path.")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=g)
    return order[: min(num_samples, total)]


@dataclass
class StudentSubject:
    """A checkpoint from ``rocket train`` (any :class:`~rocket_vla.policies.student.Student`)
    with its dataset and teacher."""

    label: str
    step: int
    policy: Student
    aligner: Aligner
    align_config: AlignConfig
    dataset: Any
    teacher: Any
    image_size: int
    seed: int = 0

    @property
    def blocks_path(self) -> str:
        return self.policy.blocks_path

    @property
    def final_path(self) -> str | None:
        return self.policy.final_path

    @property
    def depth(self) -> int:
        return int(self.policy.depth)

    @property
    def teacher_depth(self) -> int:
        return int(self.teacher.num_layers)

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        *,
        dataset: str | None = None,
        teacher: str | None = None,
        teacher_size: int | None = None,
        episodes: Sequence[Any] | None = None,
        teacher_model: Any = None,
        seed: int = 0,
    ) -> StudentSubject:
        """Load weights and configs; the dataset and teacher default to the run's own."""
        from rocket_vla.data.dataset import ChunkDataset
        from rocket_vla.data.normalize import DatasetStats
        from rocket_vla.policies.student import student_from_spec, student_spec
        from rocket_vla.train import checkpoint as ckpt_io
        from rocket_vla.train.loop import RocketModel, load_episodes

        ckpt = ckpt_io.resolve_checkpoint(checkpoint)
        saved = ckpt_io.read_config(ckpt)
        if not {"train", "align", "stats"} <= set(saved):
            raise RocketError(f"{ckpt} is not a checkpoint written by `rocket train`; pass one it wrote.")
        policy = student_from_spec(student_spec(saved, ckpt))
        align_cfg = AlignConfig.from_dict(saved["align"])
        train = saved["train"]
        whole = RocketModel(policy, Aligner(align_cfg))
        if whole.taps is not None:
            whole.taps.remove()  # profiles attach their own taps
        ckpt_io.load_weights(whole, ckpt)
        whole.eval()
        eps = list(episodes) if episodes is not None else load_episodes(dataset or train["dataset"])
        data = ChunkDataset(eps, DatasetStats.from_dict(saved["stats"]), chunk=policy.chunk)
        if teacher_model is None:
            from rocket_vla.teachers.build import teacher_from_spec

            teacher_model = teacher_from_spec(teacher or train["teacher"],
                                              teacher_size or train["teacher_size"])
        if align_cfg.enabled and int(teacher_model.dim) != align_cfg.teacher_dim:
            raise RocketError(
                f"the teacher's width {teacher_model.dim} differs from the checkpoint's "
                f"teacher_dim {align_cfg.teacher_dim}; profile with the teacher it was trained with."
            )
        label = f"{train['variant']}@{int(saved.get('step', 0))}"
        return cls(label, int(saved.get("step", 0)), policy, whole.aligner, align_cfg, data,
                   teacher_model, policy.image_size, seed)

    # -- the protocol ----------------------------------------------------------------
    def batches(self, num_samples: int, batch_size: int, minimum: int = 1
                ) -> Iterator[dict[str, Any]]:
        from torch.utils.data import default_collate

        from rocket_vla.analysis.cka import batch_sizes
        from rocket_vla.data.dataset import images_to_float

        if num_samples < 1 or batch_size < 1:
            raise RocketError(
                f"asked for {num_samples} samples in batches of {batch_size}; both must be at "
                "least 1 (raise --samples/--batches or --batch_size)."
            )
        index = sample_indices(len(self.dataset), num_samples, self.seed)
        sizes = batch_sizes(len(index), batch_size, minimum=min(len(index), minimum))
        start = 0
        for size in sizes:
            batch = default_collate([self.dataset[int(i)] for i in index[start:start + size]])
            batch["frames"] = images_to_float(batch["images"])
            start += size
            yield batch

    def _images(self, batch: dict[str, Any]) -> torch.Tensor:
        from rocket_vla.data.augment import resize

        frames = batch["frames"]
        b, s = frames.shape[:2]
        flat = resize(frames.reshape(b * s, *frames.shape[2:]), self.image_size)
        return flat.reshape(b, s, *flat.shape[1:])

    def forward(self, batch: dict[str, Any], layers: Sequence[int]
                ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(the student's action loss, visual-token states per layer, valid-token mask)."""
        inputs = self.policy.prepare({
            "images": self._images(batch), "proprio": batch["proprio"],
            "instructions": batch["instruction"], "actions": batch["actions"],
            "action_mask": batch["action_mask"],
        })
        with LayerTaps(self.policy, self.blocks_path, list(layers), final=self.final_path) as taps:
            taps.use_tokens(self.policy.visual_index(inputs))
            loss = self.policy.action_loss(inputs)
            states = [s.float() for s in taps.states]
        mask = torch.ones(states[0].shape[:2], dtype=torch.bool)
        return loss, states, mask

    def action_loss(self, batch: dict[str, Any], prediction: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` already returns the student's own loss (its forward *is* the loss)."""
        return prediction

    def teacher_tokens(self, batch: dict[str, Any], layers: Sequence[int],
                       pos_embed_scale: float = 0.0, pos_embed: str = "sincos") -> list[torch.Tensor]:
        feats = self.teacher.features(batch["frames"], list(layers))
        return [resample_teacher(f, self.policy.image_grid, pos_embed_scale=pos_embed_scale,
                                 pos_embed=pos_embed) for f in feats]

    @torch.no_grad()
    def stream(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor], torch.Tensor]:
        _, states, mask = self.forward(batch, list(range(self.depth + 1)))
        return states, mask

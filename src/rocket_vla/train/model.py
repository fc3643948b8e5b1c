"""The trainable whole (student + taps + aligner) and the alignment config a run uses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rocket_vla.align import AlignConfig, Aligner, AlignOutput, LayerTaps, balanced_select
from rocket_vla.policies.student import Student
from rocket_vla.train.config import TrainConfig
from rocket_vla.train.teacher_source import TeacherSource


class RocketModel(nn.Module):
    """The trainable whole: the student policy, its layer taps and the aligner's projectors.

    Kept as one module, with the alignment loss computed inside ``forward``, so that
    Accelerate/DDP wraps (and checkpoints) policy and projectors together.
    """

    def __init__(self, policy: Student, aligner: Aligner) -> None:
        super().__init__()
        self.policy = policy
        self.aligner = aligner
        self.taps: LayerTaps | None = None
        if aligner.enabled:
            self.taps = LayerTaps(policy, policy.blocks_path, aligner.config.student_layers,
                                  final=policy.final_path)
            self.taps.attach()

    def forward(
        self, inputs: dict[str, Any], targets: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, AlignOutput | None]:
        """The student's action loss on prepared ``inputs``, and the alignment output when
        ``targets`` are given."""
        if self.taps is not None:
            self.taps.use_tokens(self.policy.visual_index(inputs))
        loss = self.policy.action_loss(inputs)
        if self.taps is None:
            return loss, None
        if targets is None:  # no teacher: drop the captured states instead of holding them
            self.taps.clear()
            return loss, None
        states = [s.float() for s in self.taps.states]
        self.taps.clear()
        return loss, self.aligner(states, targets)


def build_align_config(cfg: TrainConfig, policy: Student, teacher: TeacherSource | None
                       ) -> AlignConfig:
    """The variant's preset for this student (and teacher, unless it is the baseline)."""
    overrides = {} if cfg.pos_embed is None else {"pos_embed": cfg.pos_embed}
    if cfg.variant == "baseline":
        return AlignConfig.preset("baseline", student_dim=policy.width,
                                  student_depth=policy.depth, **overrides)
    assert teacher is not None
    pairs = min(cfg.num_pairs, policy.depth, teacher.num_layers)
    student_layers, teacher_layers = cfg.student_layers, cfg.teacher_layers
    cached = getattr(teacher, "layers", None)
    if teacher_layers is None and cached is not None and cfg.variant != "spatial_forcing":
        # A cache holds only some layers: pair a balanced subset of them with the student.
        pairs = min(pairs, len(cached))
        teacher_layers = [cached[i] for i in balanced_select(len(cached), pairs)]
        student_layers = [i + 1 for i in balanced_select(policy.depth, pairs)]
    return AlignConfig.preset(
        cfg.variant, student_dim=policy.width, teacher_dim=teacher.dim,
        student_depth=policy.depth, teacher_depth=teacher.num_layers,
        student_layers=student_layers, teacher_layers=teacher_layers, num_pairs=pairs,
        hidden_dim=cfg.projector_hidden, **overrides,
        # lambda: the config's, else AlignConfig's default (the paper's 0.5)
        **({} if cfg.align_weight is None else {"weight": cfg.align_weight}),
    ).resolved()

"""The Aligner: projectors + cosine loss over every aligned layer pair."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rocket_vla.align.config import AlignConfig
from rocket_vla.align.loss import cosine_distance, masked_mean, masked_sample_mean
from rocket_vla.align.projector import PairProjectors
from rocket_vla.align.resample import resample_teacher, sincos_pos_embed_2d
from rocket_vla.errors import RocketError


@dataclass
class AlignOutput:
    """``loss`` carries the graph; ``per_pair`` is detached (log it without a device sync)."""

    loss: torch.Tensor
    per_pair: torch.Tensor
    weighted: torch.Tensor


class Aligner(nn.Module):
    """Pulls tapped student states toward teacher features, pair by pair.

    Build it from an :class:`AlignConfig` (``AlignConfig.preset("rocket", ...)``). Call it
    with the student's visual-token states (one ``[B, T, Ds]`` tensor per pair, e.g.
    ``LayerTaps.states``) and the teacher's features on the same tokens (one ``[B, T, Dt]``
    per pair, e.g. from :meth:`targets`). The baseline config builds no projector.
    """

    def __init__(self, config: AlignConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.projectors: PairProjectors | None = None
        if config.enabled:
            self.projectors = PairProjectors(
                config.num_pairs, config.student_dim, config.hidden_dim, config.teacher_dim,
                shared=config.projector == "shared", widths=config.widths(),
                layernorm=config.layernorm, ensemble=config.ensemble,
            )

    @property
    def enabled(self) -> bool:
        return self.projectors is not None

    def targets(
        self,
        teacher_features: Sequence[torch.Tensor],
        grid: tuple[int, int],
        crop_boxes: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Resample per-layer teacher grids ``[B, S, h, w, C]`` onto the student tokens.

        Layers of one shape are resampled in a single call, stacked along channels: bilinear
        sampling treats every channel on its own, so the numbers are those of one call per
        layer, without paying the per-call cost (grid construction, dispatch) once per
        layer -- on a CPU that is a visible share of a small student's step.
        """
        feats = list(teacher_features)
        scale = self.config.pos_embed_scale
        if len(feats) < 2 or any(f.shape != feats[0].shape or f.dtype != feats[0].dtype
                                 for f in feats) or feats[0].dim() != 5:
            return [resample_teacher(f, grid, crop_boxes=crop_boxes, pos_embed_scale=scale)
                    for f in feats]
        _, _, h, w, c = feats[0].shape
        stacked = torch.cat(feats, dim=-1)
        if scale:
            pos = sincos_pos_embed_2d(c, h, w).to(device=stacked.device, dtype=stacked.dtype)
            stacked = stacked + scale * pos.permute(1, 2, 0).repeat(1, 1, len(feats))
        out = resample_teacher(stacked, grid, crop_boxes=crop_boxes)
        return [part.contiguous() for part in out.split(c, dim=-1)]

    def check_inputs(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> None:
        """RocketError unless there is one student and one teacher tensor per pair, of the
        configured widths (public: the analyses that drive the projectors check the same)."""
        cfg = self.config
        if len(student) != cfg.num_pairs or len(teacher) != cfg.num_pairs:
            raise RocketError(
                f"expected {cfg.num_pairs} student and teacher tensors (one per pair), got "
                f"{len(student)} and {len(teacher)}; tap the configured layers."
            )
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            if s.shape[-1] != cfg.student_dim:
                raise RocketError(
                    f"pair {i}: student width {s.shape[-1]} != configured student_dim "
                    f"{cfg.student_dim}; set student_dim to the model's hidden size."
                )
            if t.shape[-1] != cfg.teacher_dim:
                raise RocketError(
                    f"pair {i}: teacher width {t.shape[-1]} != configured teacher_dim "
                    f"{cfg.teacher_dim}; set teacher_dim to the teacher's feature size."
                )
            if s.shape[:-1] != t.shape[:-1]:
                raise RocketError(
                    f"pair {i}: student tokens {tuple(s.shape[:-1])} and teacher tokens "
                    f"{tuple(t.shape[:-1])} differ; resample the teacher to the student grid."
                )

    def forward(
        self,
        student: Sequence[torch.Tensor],
        teacher: Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> AlignOutput:
        """Alignment loss. ``mask``: ``[B, T]`` or ``[P, B, T]`` bool, True = valid token."""
        if self.projectors is None:
            zero = torch.zeros((), device=student[0].device if student else None)
            return AlignOutput(zero, zero.new_zeros(0), zero)
        self.check_inputs(student, teacher)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.bool()
        sample_losses, sample_valid = [], []
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            distance = cosine_distance(self.projectors(s, i), t.detach())  # [B, T]
            pair_mask = mask[i] if mask is not None and mask.dim() == 3 else mask
            per_sample, valid = masked_sample_mean(distance, pair_mask)
            sample_losses.append(per_sample)
            sample_valid.append(valid)
        losses = torch.stack(sample_losses)  # [P, B]
        valid = torch.stack(sample_valid)  # [P, B]
        per_pair = masked_mean(losses, valid, dim=1)  # [P]
        loss = masked_mean(per_pair, valid.any(dim=1), dim=0)
        return AlignOutput(loss, per_pair.detach(), self.config.weight * loss)

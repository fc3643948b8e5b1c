"""The Aligner: projectors + cosine loss over every aligned layer pair.

The training step's hot path is written so that it never waits for the device: shapes are
checked from metadata, the loss over pairs is a fixed sequence of tensor ops (no Python
branch on a tensor value, no ``.item()``), and constant tables (position embeddings)
are cached per shape, device and dtype. That same property is what
lets ``torch.compile`` take the whole loss -- forward and backward -- as one graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rocket_vla.align.config import AlignConfig
from rocket_vla.align.loss import cosine_distance, masked_mean, masked_sample_mean
from rocket_vla.align.projector import PairProjectors
from rocket_vla.align.resample import resample_layers, resample_teacher
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

    ``compile`` puts the loss (projectors + cosine + masked means, forward and backward)
    under ``torch.compile(fullgraph=True)``. ``None`` (the default) decides per device at
    the first call: on for CUDA (when Triton is available), off elsewhere. Why that default:
    on a GPU the compiled loss fuses LayerNorm, GELU, casts and the cosine into few kernels
    around the matmuls (docs/benchmarks.md, "ROCKET on pi0", gives the measured step times);
    on a CPU a cold compile costs tens of seconds even for a toy config and Inductor needs a
    C++ toolchain, which the project's short CPU runs do not repay: opt in with
    ``compile=True``.
    Compilation never changes the parameters or the state dict.
    """

    def __init__(self, config: AlignConfig, *, compile: bool | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.compile = compile
        self._compiled: dict[str, Callable[..., Any]] = {}
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
        teacher_features: torch.Tensor | Sequence[torch.Tensor],
        grid: tuple[int, int],
        crop_boxes: torch.Tensor | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> list[torch.Tensor]:
        """Resample per-layer teacher grids ``[B, S, h, w, C]`` onto the student tokens.

        ``teacher_features`` is either one tensor with every layer stacked,
        ``[L, B, S, h, w, C]``, resampled in one call; or a sequence with one
        ``[B, S, h, w, C]`` tensor per layer. A sequence of equal tensors is resampled layer
        by layer with shared matrices -- unless it must be cast, in which case the cast
        gathers the layers into one stacked buffer in the same pass -- because stacking
        separate tensors would add a full pass over the step's largest tensor. ``dtype``:
        the step's compute dtype (e.g. bfloat16 under autocast; default: the features'
        dtype); resampling runs at it. Returns one contiguous ``[B, S * gh * gw, C]`` tensor
        per layer, without gradients.

        See :func:`~rocket_vla.align.resample.resample_layers` for how (one interpolation
        call for full frames, two batched matmuls for crop boxes, the configured position
        embedding (``config.pos_embed``) from a table cached per kind, shape, device and
        dtype).
        """
        pos = {"pos_embed_scale": self.config.pos_embed_scale, "pos_embed": self.config.pos_embed}
        with torch.no_grad():
            if isinstance(teacher_features, torch.Tensor):
                if teacher_features.dim() != 6:
                    raise RocketError(
                        f"stacked teacher features must be [L, B, S, h, w, C], got shape "
                        f"{tuple(teacher_features.shape)}; stack the layers on a new first "
                        "dimension or pass a list with one [B, S, h, w, C] tensor per layer."
                    )
                return resample_layers(teacher_features.to(dtype or teacher_features.dtype), grid,
                                       crop_boxes=crop_boxes, **pos)
            feats = list(teacher_features)
            first = feats[0] if feats else None
            if first is None or any(f.dim() != 5 or f.shape != first.shape or f.dtype != first.dtype
                                    or f.device != first.device for f in feats):
                return [resample_teacher(f.to(dtype or f.dtype), grid, crop_boxes=crop_boxes, **pos)
                        for f in feats]
            target = dtype or first.dtype
            gathered = _stack(feats, target) if target != first.dtype else feats
            return resample_layers(gathered, grid, crop_boxes=crop_boxes, **pos)

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

    def compiles_on(self, device: torch.device) -> bool:
        """Whether the loss runs under ``torch.compile`` for inputs on ``device``."""
        if self.compile is not None:
            return self.compile
        if device.type != "cuda":
            return False
        from torch.utils._triton import has_triton

        return has_triton()

    def forward(
        self,
        student: Sequence[torch.Tensor],
        teacher: Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> AlignOutput:
        """Alignment loss. ``mask``: ``[B, T]`` or ``[P, B, T]`` bool, True = valid token.

        Student states may be in a lower precision than the projector (e.g. bfloat16 from
        a bfloat16 model): they are cast inside the loss, where a compiled graph fuses the
        cast into the LayerNorm instead of writing a float32 copy of every state.
        """
        if self.projectors is None:
            zero = torch.zeros((), device=student[0].device if student else None)
            return AlignOutput(zero, zero.new_zeros(0), zero)
        self.check_inputs(student, teacher)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.bool()
        loss_fn = self._pair_losses
        device = student[0].device
        if self.compiles_on(device):
            key = str(device)
            if key not in self._compiled:
                self._compiled[key] = torch.compile(self._pair_losses, fullgraph=True)
            loss_fn = self._compiled[key]
        loss, per_pair = loss_fn(list(student), list(teacher), mask)
        return AlignOutput(loss, per_pair.detach(), self.config.weight * loss)

    def _pair_losses(
        self, student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, per-pair losses): the part that ``torch.compile`` takes as one graph."""
        assert self.projectors is not None
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
        return loss, per_pair

    def __getstate__(self) -> dict[str, Any]:
        # Compiled callables hold code objects that neither pickle nor deep-copy; a copy
        # recompiles on its first call.
        state = self.__dict__.copy()
        state["_compiled"] = {}
        return state


def _stack(feats: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Stack ``L`` equal-shape tensors into ``[L, ...]`` at ``dtype`` in one pass each
    (``copy_`` casts while copying, so a float32 -> bfloat16 gather is one read, one write)."""
    out = torch.empty((len(feats), *feats[0].shape), dtype=dtype, device=feats[0].device)
    for i, f in enumerate(feats):
        out[i].copy_(f)
    return out

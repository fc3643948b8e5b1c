"""Gradient conflict: do the per-pair alignment losses pull the backbone the same way?

For each loss (every pair's alignment loss ``L_i`` and the action loss) we take its
gradient with respect to one parameter group of the student backbone and compare the
gradients by cosine. The paper's argument: with an independent projector per pair the
``L_i`` pull in unrelated or opposite directions (low/negative cosines), with one shared
projector they agree. Each loss gets its own ``torch.autograd.grad`` call (retaining the
graph) instead of one backward of the sum, because the sum would mix exactly the
directions we want to see apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from rocket_vla.align.aligner import Aligner
from rocket_vla.align.loss import cosine_distance, masked_mean, masked_sample_mean
from rocket_vla.align.taps import get_submodule
from rocket_vla.errors import RocketError

GroupKind = Literal["all", "block", "lora"]


@dataclass
class ParamGroup:
    """Which backbone parameters the gradients are taken with respect to.

    ``all``: every trainable parameter under ``blocks_path`` (or the whole model when it
    is empty). ``block``: the trainable parameters of block ``block`` (0-based position in
    the block list). ``lora``: trainable parameters whose name matches ``name_filter``
    (a regular expression, default ``lora_``). ``name_filter`` also narrows ``all`` and
    ``block`` when given.
    """

    kind: GroupKind = "all"
    blocks_path: str = ""
    block: int | None = None
    name_filter: str | None = None

    def select(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The named trainable parameters of the group, in module order."""
        if self.kind not in ("all", "block", "lora"):
            raise RocketError(f"unknown parameter group {self.kind!r}; use 'all', 'block' or 'lora'.")
        root = get_submodule(model, self.blocks_path) if self.blocks_path else model
        prefix = f"{self.blocks_path}." if self.blocks_path else ""
        if self.kind == "block":
            if not isinstance(root, (nn.ModuleList, nn.Sequential)):
                raise RocketError(
                    "the 'block' parameter group needs blocks_path to point at the list of blocks."
                )
            if self.block is None or not 0 <= self.block < len(root):
                raise RocketError(
                    f"block {self.block} is out of range for {len(root)} blocks; "
                    f"use 0..{len(root) - 1}."
                )
            prefix = f"{prefix}{self.block}."
            root = root[self.block]
        pattern = self.name_filter or ("lora_" if self.kind == "lora" else None)
        regex = re.compile(pattern) if pattern else None
        chosen = [
            (prefix + name, p)
            for name, p in root.named_parameters()
            if p.requires_grad and (regex is None or regex.search(prefix + name))
        ]
        if not chosen:
            raise RocketError(
                f"the parameter group {self.kind!r} (filter {pattern!r}) matches no trainable "
                "parameter; check the filter and that the weights are trainable."
            )
        return chosen


def gradient_matrix(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Flattened gradient of each loss w.r.t. ``params``: ``[num_losses, num_params]``.

    A parameter a loss does not reach contributes zeros (``allow_unused``).
    """
    params = list(params)
    rows = []
    for loss in losses:
        if not loss.requires_grad:
            rows.append(torch.cat([torch.zeros(p.numel(), dtype=torch.float32, device=p.device)
                                   for p in params]))
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([
            (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
            for g, p in zip(grads, params, strict=True)
        ]))
    return torch.stack(rows)


def cosine_matrix(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise cosine ``[L, L]`` of row vectors; a zero row gives NaN (no direction)."""
    v = vectors.double()
    norms = v.norm(dim=1)
    cos = (v @ v.T) / (norms[:, None] * norms[None, :]).clamp_min(eps)
    dead = norms <= eps
    cos[dead, :] = float("nan")
    cos[:, dead] = float("nan")
    return cos


@dataclass
class GradConflict:
    """Cosines between per-loss gradients, averaged over the batches seen."""

    names: list[str]
    cosine: torch.Tensor
    norms: torch.Tensor
    num_batches: int = 1
    num_params: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def mean_offdiag(self, names: Sequence[str] | None = None) -> float:
        """Mean cosine over distinct pairs among ``names`` (default: all but 'action')."""
        chosen = list(names) if names is not None else [n for n in self.names if n != "action"]
        idx = [self.names.index(n) for n in chosen]
        sub = self.cosine[idx][:, idx]
        off = sub[~torch.eye(len(idx), dtype=torch.bool)]
        off = off[torch.isfinite(off)]
        return float(off.mean()) if off.numel() else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "cosine": [[None if v != v else float(v) for v in r] for r in self.cosine.tolist()],
            "grad_norms": self.norms.tolist(),
            "num_batches": self.num_batches,
            "num_params": self.num_params,
            "mean_inter_pair_cosine": self.mean_offdiag(),
            **self.meta,
        }


def grad_conflict(
    losses: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]
) -> GradConflict:
    """Per-loss gradients w.r.t. ``params`` and their pairwise cosine, for one batch."""
    names = list(losses)
    grads = gradient_matrix([losses[n] for n in names], params)
    return GradConflict(names, cosine_matrix(grads), grads.double().norm(dim=1),
                        num_params=int(grads.shape[1]))


def average(results: Sequence[GradConflict]) -> GradConflict:
    """Mean cosine and norm over batches (per-batch cosines, as a training step sees them)."""
    if not results:
        raise RocketError("no gradient-conflict batch was computed; give at least one batch.")
    names = results[0].names
    if any(r.names != names for r in results):
        raise RocketError("gradient-conflict results name different losses; average like with like.")
    cos = torch.stack([r.cosine for r in results]).nanmean(dim=0)
    norms = torch.stack([r.norms for r in results]).mean(dim=0)
    return GradConflict(names, cos, norms, num_batches=sum(r.num_batches for r in results),
                        num_params=results[0].num_params, meta=dict(results[0].meta))


def pair_losses(
    aligner: Aligner,
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    mask: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Each pair's alignment loss *with its graph* (``AlignOutput.per_pair`` is detached).

    Uses the same reduction as :class:`Aligner` (token mean per sample, then mean over
    samples with a valid token), so ``mean(pair_losses) == aligner(...).loss``.
    """
    if aligner.projectors is None:
        raise RocketError(
            "this checkpoint's aligner has no projector (baseline); gradient conflict needs "
            "an aligned variant."
        )
    aligner.check_inputs(student, teacher)
    if mask is not None:
        mask = mask.bool()
    out = []
    for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
        distance = cosine_distance(aligner.projectors(s, i), t.detach())
        pair_mask = mask[i] if mask is not None and mask.dim() == 3 else mask
        per_sample, valid = masked_sample_mean(distance, pair_mask)
        out.append(masked_mean(per_sample, valid, dim=0))
    return out

"""Projector similarity: what the projectors do to each pair and how pairs relate.

Per pair ``i``: the mean token cosine between the projected student ``P_i(s_i)`` and the
teacher ``t_i`` (``= 1 - L_i`` on the same tokens). Between pairs ``i, j`` (same token
positions): the mean token cosine of the inputs ``s_i, s_j``, of the projected outputs
``P_i(s_i), P_j(s_j)`` and of the teacher features ``t_i, t_j`` (when their widths agree).
Why token cosines and not CKA here: the question is whether different layers land at the
*same place* in the teacher space (a shared projector forces one map), which is a
pointwise question; CKA would factor out exactly the linear maps we want to see.
All sums are accumulated over batches, so any number of samples fits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rocket_vla.align.aligner import Aligner
from rocket_vla.errors import RocketError


def _token_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask.to(device=x.device, dtype=torch.bool)


def _pairwise_token_cos(
    tensors: Sequence[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Sum over valid tokens of cos(tensors[i], tensors[j]) for all i, j: ``[P, P]``."""
    unit = torch.stack([F.normalize(t.double(), dim=-1, eps=1e-12) for t in tensors])  # P,B,T,D
    unit = unit * mask[None, :, :, None].to(unit.dtype)
    flat = unit.reshape(len(tensors), -1, unit.shape[-1])  # [P, N, D]
    return torch.einsum("pnd,qnd->pq", flat, flat)


@dataclass
class ProjectorSimilarity:
    """Accumulated projector statistics for one aligner."""

    num_pairs: int
    _fit: torch.Tensor = field(init=False, repr=False)
    _inputs: torch.Tensor = field(init=False, repr=False)
    _outputs: torch.Tensor = field(init=False, repr=False)
    _teacher: torch.Tensor | None = field(init=False, repr=False, default=None)
    tokens: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        p = self.num_pairs
        self._fit = torch.zeros(p, dtype=torch.float64)
        self._inputs = torch.zeros(p, p, dtype=torch.float64)
        self._outputs = torch.zeros(p, p, dtype=torch.float64)

    @torch.no_grad()
    def update(
        self,
        aligner: Aligner,
        student: Sequence[torch.Tensor],
        teacher: Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> None:
        """Add one batch of student states and teacher features (one per pair, ``[B, T, D]``).

        ``mask`` ``[B, T]``: valid tokens (one mask for every pair, so the between-pair
        cosines compare the same tokens).
        """
        if aligner.projectors is None:
            raise RocketError(
                "this checkpoint has no projector (baseline variant); `profile projector` "
                "needs a checkpoint trained with alignment (naive, shared or rocket)."
            )
        if len(student) != self.num_pairs:
            raise RocketError(
                f"expected {self.num_pairs} pairs, got {len(student)}; tap the configured layers."
            )
        aligner.check_inputs(student, teacher)
        m = _token_mask(student[0], mask)
        projected = [aligner.projectors(s, i) for i, s in enumerate(student)]
        fit = torch.stack([
            (F.cosine_similarity(p.double(), t.to(p.device).double(), dim=-1) * m).sum()
            for p, t in zip(projected, teacher, strict=True)
        ])
        self._fit += fit.cpu()
        self._inputs += _pairwise_token_cos(student, m).cpu()
        self._outputs += _pairwise_token_cos(projected, m).cpu()
        if len({t.shape[-1] for t in teacher}) == 1:
            tcos = _pairwise_token_cos([t.to(m.device) for t in teacher], m).cpu()
            self._teacher = tcos if self._teacher is None else self._teacher + tcos
        self.tokens += int(m.sum())

    def compute(self) -> dict[str, Any]:
        """Means over all valid tokens seen: ``fit [P]`` and ``[P, P]`` matrices."""
        if self.tokens == 0:
            raise RocketError("no valid token was seen; add batches (with unmasked tokens) first.")
        n = float(self.tokens)
        return {
            "fit": (self._fit / n).tolist(),
            "inputs": (self._inputs / n).tolist(),
            "outputs": (self._outputs / n).tolist(),
            "teacher": None if self._teacher is None else (self._teacher / n).tolist(),
            "tokens": self.tokens,
        }

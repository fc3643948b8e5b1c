"""Projectors that map student hidden states into the teacher's feature space.

``P(h) = W2[:, :d] GELU(W1[:d] LN(h) + b1[:d]) + b2`` with ``d`` the active hidden
width. One :class:`Projector` shared by every pair is ROCKET's layer-invariant map;
with Matryoshka widths each pair uses a prefix of its hidden units. Slicing the weight
prefix (instead of masking full-width activations) means a shallow pair also *costs*
less, which is where the compute saving of Matryoshka comes from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rocket_vla.errors import RocketError


class Projector(nn.Module):
    """Two-layer MLP with optional student-side LayerNorm and a prefix-width switch."""

    def __init__(
        self, student_dim: int, hidden_dim: int, teacher_dim: int, *, layernorm: bool = True
    ) -> None:
        super().__init__()
        self.student_dim, self.hidden_dim, self.teacher_dim = student_dim, hidden_dim, teacher_dim
        self.norm: nn.Module = nn.LayerNorm(student_dim) if layernorm else nn.Identity()
        self.fc1 = nn.Linear(student_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, teacher_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases, as the paper initialises them."""
        for linear in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, width: int | None = None) -> torch.Tensor:
        d = self.hidden_dim if width is None else width
        if not 1 <= d <= self.hidden_dim:
            raise RocketError(f"projector width {d} is outside 1..{self.hidden_dim}.")
        # States from a lower-precision model meet float32 parameters here; under autocast
        # the linears still run in the autocast dtype after the (float32) LayerNorm.
        h = self.norm(x.to(self.fc1.weight.dtype))
        h = F.gelu(F.linear(h, self.fc1.weight[:d], self.fc1.bias[:d]))
        return F.linear(h, self.fc2.weight[:, :d], self.fc2.bias)


class PairProjectors(nn.Module):
    """Routes pair ``i`` to its projector at its width.

    ``shared=True`` holds one :class:`Projector` for every pair (ROCKET / shared);
    ``shared=False`` holds one full-width projector per pair (naive multi-layer, Spatial
    Forcing). ``ensemble`` members are averaged, which gives a lower-variance target map
    for ablations at ``ensemble`` times the projector cost.
    """

    def __init__(
        self,
        num_pairs: int,
        student_dim: int,
        hidden_dim: int,
        teacher_dim: int,
        *,
        shared: bool,
        widths: Sequence[int] | None = None,
        layernorm: bool = True,
        ensemble: int = 1,
    ) -> None:
        super().__init__()
        if widths is not None and not shared:
            raise RocketError(
                "Matryoshka widths apply only to a shared projector; per-pair projectors "
                "always use their full width (set projector='shared' or drop matryoshka)."
            )
        self.num_pairs, self.shared, self.ensemble = num_pairs, shared, ensemble
        self.widths = list(widths) if widths is not None else [hidden_dim] * num_pairs
        per_member = 1 if shared else num_pairs
        self.members = nn.ModuleList(
            nn.ModuleList(
                Projector(student_dim, hidden_dim, teacher_dim, layernorm=layernorm)
                for _ in range(per_member)
            )
            for _ in range(ensemble)
        )

    def projector(self, pair: int, member: int = 0) -> Projector:
        return self.members[member][0 if self.shared else pair]

    def forward(self, x: torch.Tensor, pair: int) -> torch.Tensor:
        out = self.projector(pair, 0)(x, self.widths[pair])
        for m in range(1, self.ensemble):
            out = out + self.projector(pair, m)(x, self.widths[pair])
        return out / self.ensemble if self.ensemble > 1 else out

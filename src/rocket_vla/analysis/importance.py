"""Layer importance: how much does the residual stream change over ``w`` blocks?

``importance[s, w] = mean cos(h_s, h_{s+w})`` over valid visual tokens, with ``h_k`` the
stream after block ``k`` (0 = embeddings). A low cosine means blocks ``s+1..s+w`` rewrite
the stream a lot -- aligning there moves much of the model; a cosine near 1 means those
blocks barely touch it. Several windows ``w`` separate a single busy block from a slow
drift. Padding tokens are excluded because their states are arbitrary and would dilute
the mean; sums and token counts are accumulated so any number of batches fits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError


@dataclass
class LayerImportance:
    """Accumulates ``sum cos(h_s, h_{s+w})`` for ``s = 0..depth-w`` and every window."""

    depth: int
    windows: tuple[int, ...] = (1, 2, 4)
    _sums: torch.Tensor = field(init=False, repr=False)
    tokens: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.windows = tuple(int(w) for w in self.windows)
        if self.depth < 1:
            raise RocketError(f"layer importance needs a model with blocks, got depth {self.depth}.")
        if not self.windows or any(not 1 <= w <= self.depth for w in self.windows):
            raise RocketError(
                f"windows {list(self.windows)} must lie in 1..{self.depth} (the number of blocks)."
            )
        self._sums = torch.zeros(self.depth, len(self.windows), dtype=torch.float64)

    @torch.no_grad()
    def update(self, states: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> None:
        """Add one batch: ``states[k]`` ``[B, T, D]`` is hidden-state index ``k = 0..depth``."""
        if len(states) != self.depth + 1:
            raise RocketError(
                f"expected {self.depth + 1} hidden states (embeddings + {self.depth} blocks), "
                f"got {len(states)}; tap every index 0..{self.depth}."
            )
        m = (torch.ones(states[0].shape[:2], dtype=torch.bool) if mask is None
             else mask.to(torch.bool)).cpu()
        for wi, w in enumerate(self.windows):
            for s in range(self.depth - w + 1):
                cos = F.cosine_similarity(states[s].double(), states[s + w].double(), dim=-1)
                self._sums[s, wi] += cos.cpu()[m].sum()
        self.tokens += int(m.sum())

    def compute(self) -> dict[str, Any]:
        """``matrix[s][wi]`` = mean cosine between index ``s`` and ``s + windows[wi]`` (None
        where ``s + w`` is past the last block)."""
        if self.tokens == 0:
            raise RocketError("no valid token was seen; add batches (with unmasked tokens) first.")
        mean = self._sums / self.tokens
        matrix = [
            [float(mean[s, wi]) if s + w <= self.depth else None
             for wi, w in enumerate(self.windows)]
            for s in range(self.depth)
        ]
        return {"windows": list(self.windows), "start_layers": list(range(self.depth)),
                "matrix": matrix, "tokens": self.tokens}

"""Which student layer aligns with which teacher layer.

Three ways, all returning pairs in ascending student depth:
- :func:`balanced_select`: the paper's training-free choice of ``k`` of ``n`` layers,
  anchored at the deepest layer and evenly spaced; pairing the i-th chosen student layer
  with the i-th chosen teacher layer is :func:`balanced_pairs`.
- :func:`pair_hungarian`: one-to-one pairs maximising total similarity (e.g. a CKA map);
  crossings allowed, as in the paper's analysis.
- :func:`pair_monotone`: the best one-to-one pairing that preserves depth order on both
  sides (deeper student layer <-> deeper teacher layer), by dynamic programming. This is
  what a Matryoshka schedule, which assumes ascending depth, wants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rocket_vla.errors import RocketError


def balanced_select(n: int, k: int) -> list[int]:
    """Positions (0-based, ascending) of ``k`` evenly spaced, deep-anchored layers of ``n``."""
    if n < 1 or k < 1:
        raise RocketError(f"cannot choose {k} of {n} layers; both counts must be at least 1.")
    if k >= n:
        return list(range(n))
    if n % k == 0:
        chosen = {n - 1 - i * (n // k) for i in range(k)}
    elif n % (n - k) == 0:
        step = n // (n - k)
        dropped = {i * step for i in range(n - k)}
        chosen = set(range(n)) - dropped
    else:
        chosen = {math.floor(n - 1 - i * n / k + 0.5) for i in range(k)}
    return sorted(chosen)


def balanced_pairs(
    student_depth: int, teacher_depth: int, num_pairs: int
) -> tuple[list[int], list[int]]:
    """Balanced student and teacher layers as hidden-state indices (block ``p`` -> ``p+1``).

    Candidates are the block outputs ``1..depth`` (the embeddings are never a target).
    """
    k = min(num_pairs, student_depth, teacher_depth)
    student = [p + 1 for p in balanced_select(student_depth, k)]
    teacher = [p + 1 for p in balanced_select(teacher_depth, k)]
    return student, teacher


@dataclass
class LayerSelectionConfig:
    """A balanced selection (``rocket select-layers``'s flags are generated from it)."""

    student_depth: int
    """number of student blocks"""
    teacher_depth: int = 24
    """number of teacher blocks (VGGT: 24)"""
    pairs: int = 10
    """number of pairs (paper: 10)"""

    def select(self) -> tuple[list[int], list[int]]:
        """The pairs as hidden-state indices: :func:`balanced_pairs` of these settings."""
        return balanced_pairs(self.student_depth, self.teacher_depth, self.pairs)


def _as_matrix(similarity: torch.Tensor | Sequence[Sequence[float]]) -> torch.Tensor:
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    if sim.dim() != 2 or sim.numel() == 0:
        raise RocketError("the similarity matrix must be 2-D [student layers, teacher layers].")
    if not torch.isfinite(sim).all():
        raise RocketError("the similarity matrix has NaN or inf entries; recompute it first.")
    return sim


def pair_hungarian(similarity: torch.Tensor | Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Maximum-total-similarity one-to-one pairs (rows, cols) via scipy's Hungarian solver."""
    sim = _as_matrix(similarity)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # pragma: no cover - scipy ships with the [analysis] extra
        raise RocketError(
            "Hungarian pairing needs scipy; install it with `pip install rocket-vla[analysis]`."
        ) from None
    rows, cols = linear_sum_assignment(sim.numpy(), maximize=True)
    return sorted(zip(rows.tolist(), cols.tolist(), strict=True))


def pair_monotone(
    similarity: torch.Tensor | Sequence[Sequence[float]], num_pairs: int | None = None
) -> list[tuple[int, int]]:
    """Best order-preserving pairs: ``s_1 < s_2 < ...`` and ``t_1 < t_2 < ...``.

    Maximises the summed similarity of exactly ``num_pairs`` pairs (default: as many as
    the smaller side has layers). ``O(rows * cols * num_pairs)`` dynamic program.
    """
    sim = _as_matrix(similarity)
    rows, cols = sim.shape
    k = min(rows, cols) if num_pairs is None else num_pairs
    if not 1 <= k <= min(rows, cols):
        raise RocketError(
            f"cannot make {k} order-preserving pairs from a {rows}x{cols} matrix; "
            f"ask for 1..{min(rows, cols)}."
        )
    s = sim.tolist()
    neg = -math.inf
    # best[c][i][j]: best sum of c pairs using rows < i and cols < j.
    best = [[[0.0] * (cols + 1) for _ in range(rows + 1)]]
    for c in range(1, k + 1):
        prev, cur = best[c - 1], [[neg] * (cols + 1) for _ in range(rows + 1)]
        for i in range(1, rows + 1):
            for j in range(1, cols + 1):
                take = prev[i - 1][j - 1] + s[i - 1][j - 1]
                cur[i][j] = max(cur[i - 1][j], cur[i][j - 1], take)
        best.append(cur)
    pairs: list[tuple[int, int]] = []
    i, j, c = rows, cols, k
    while c > 0:
        if best[c][i][j] == best[c][i - 1][j]:
            i -= 1
        elif best[c][i][j] == best[c][i][j - 1]:
            j -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j, c = i - 1, j - 1, c - 1
    return pairs[::-1]

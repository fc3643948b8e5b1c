"""Turn a similarity map (e.g. a CKA map) into recommended layer pairs.

The pairing algorithms live in :mod:`rocket_vla.align.pairing`; this module adds the one
thing the analysis needs on top: exactly ``k`` Hungarian pairs. The plain Hungarian
solver pairs ``min(S, T)`` layers; asking for fewer by keeping the ``k`` best of those
pairs is not optimal, so :func:`hungarian_k` solves the exact ``k``-cardinality problem
by padding the matrix with dummy rows and columns (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from rocket_vla.align.pairing import pair_hungarian, pair_monotone
from rocket_vla.errors import RocketError

PairMethod = Literal["hungarian", "monotone"]


def hungarian_k(similarity: torch.Tensor, num_pairs: int) -> list[tuple[int, int]]:
    """Best one-to-one ``num_pairs`` pairs of an ``S x T`` matrix (crossings allowed).

    Padding: ``T - k`` dummy rows that may match only real columns and ``S - k`` dummy
    columns that may match only real rows, all at value 0. A perfect matching of the
    padded square matrix leaves exactly ``k`` real-real matches, and since the dummy
    matches add a constant, maximising the total maximises the ``k`` real pairs.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    s, t = sim.shape
    if not 1 <= num_pairs <= min(s, t):
        raise RocketError(
            f"cannot make {num_pairs} pairs from a {s}x{t} similarity map; ask for 1..{min(s, t)}."
        )
    if num_pairs == min(s, t):
        return pair_hungarian(sim)
    from scipy.optimize import linear_sum_assignment

    forbid = -1e9 * (1.0 + float(sim.abs().max()))
    size = s + t - num_pairs
    padded = torch.zeros(size, size, dtype=torch.float64)
    padded[:s, :t] = sim
    padded[s:, t:] = forbid
    rows, cols = linear_sum_assignment(padded.numpy(), maximize=True)
    return sorted((r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
                  if r < s and c < t)


def recommend_pairs(
    similarity: torch.Tensor,
    student_layers: Sequence[int],
    teacher_layers: Sequence[int],
    method: PairMethod = "hungarian",
    num_pairs: int | None = None,
) -> tuple[list[int], list[int]]:
    """Student and teacher layer indices paired position by position, ascending student depth.

    ``similarity`` rows/cols follow ``student_layers``/``teacher_layers``; NaN entries (a
    layer with no signal) count as the lowest similarity present.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    if sim.shape != (len(student_layers), len(teacher_layers)):
        raise RocketError(
            f"the similarity map is {tuple(sim.shape)} but {len(student_layers)} student and "
            f"{len(teacher_layers)} teacher layers were given."
        )
    finite = sim[torch.isfinite(sim)]
    if finite.numel() == 0:
        raise RocketError("the similarity map has no finite entry; collect more samples.")
    sim = torch.where(torch.isfinite(sim), sim, finite.min() - 1.0)
    k = min(sim.shape) if num_pairs is None else num_pairs
    if method == "hungarian":
        pairs = hungarian_k(sim, k)
    elif method == "monotone":
        pairs = pair_monotone(sim, k)
    else:
        raise RocketError(f"unknown pairing method {method!r}; use 'hungarian' or 'monotone'.")
    return [student_layers[i] for i, _ in pairs], [teacher_layers[j] for _, j in pairs]

"""Matryoshka widths: how many projector hidden units each aligned pair may use."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rocket_vla.errors import RocketError


def matryoshka_ratios(num_pairs: int, *, low: float = 0.2, reverse: bool = False) -> list[float]:
    """Linearly spaced ratios from ``low`` (shallowest pair) to 1 (deepest pair).

    The paper gives shallow pairs a prefix of the hidden units and deep pairs more, which
    balances their losses; ``reverse`` flips that for ablations.
    """
    if num_pairs < 1:
        raise RocketError("Matryoshka needs at least one aligned pair; add a layer pair.")
    if num_pairs == 1:
        ratios = [1.0]
    else:
        # min() keeps float error (0.2 + 0.8 * 3/3 = 1.0000000000000002) inside (0, 1].
        ratios = [min(1.0, low + (1.0 - low) * i / (num_pairs - 1)) for i in range(num_pairs)]
    return ratios[::-1] if reverse else ratios


def matryoshka_widths(
    hidden_dim: int,
    num_pairs: int | None = None,
    *,
    ratios: Sequence[float] | None = None,
    reverse: bool = False,
) -> list[int]:
    """Active hidden width ``d_i = max(1, floor(H * r_i))`` for every pair.

    >>> matryoshka_widths(2048, 10)
    [409, 591, 773, 955, 1137, 1319, 1501, 1683, 1865, 2048]
    """
    if ratios is None:
        if num_pairs is None:
            raise RocketError("Give either the number of pairs or explicit Matryoshka ratios.")
        ratios = matryoshka_ratios(num_pairs, reverse=reverse)
    elif num_pairs is not None and len(ratios) != num_pairs:
        raise RocketError(
            f"{len(ratios)} Matryoshka ratios were given for {num_pairs} pairs; give one per pair."
        )
    for r in ratios:
        if not 0.0 < r <= 1.0:
            raise RocketError(f"Matryoshka ratio {r} is outside (0, 1]; use fractions of the width.")
    # The small epsilon keeps exact products such as 2048 * 1.0 from flooring to 2047
    # through float error while leaving genuine fractions untouched.
    return [max(1, math.floor(hidden_dim * r + 1e-9)) for r in ratios]

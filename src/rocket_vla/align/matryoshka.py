"""Matryoshka widths: how many projector hidden units each aligned pair may use.

The numbers are computed exactly as the official ROCKET code computes them (its
``AlignProjector`` in ``openvla-ROCKET/prismatic/models/projectors_rocket.py``,
``openpi-ROCKET/src/openpi/models_pytorch/projectors.py`` and the JAX copy in
``openpi-ROCKET/src/openpi/models/pi0_align.py``): ratios
``0.2 + 0.8 * i / max(n - 1, 1)`` and widths ``max(1, int(H * r))``. Reproducing a run
means reproducing its float rounding too, so the expression is kept term for term: a
single pair gets ratio 0.2 (not 1), and a product such as ``1000 * 0.92`` that lands a hair
below an integer is truncated (919), as ``int`` does there.
"""

from __future__ import annotations

from collections.abc import Sequence

from rocket_vla.errors import RocketError

#: Ratio of the shallowest pair in the official schedule.
LOW_RATIO = 0.2


def matryoshka_ratios(num_pairs: int, *, reverse: bool = False) -> list[float]:
    """The official linear schedule ``0.2 + 0.8 * i / max(n - 1, 1)`` (shallow -> deep).

    Shallow pairs get a prefix of the hidden units and deep pairs more, which balances their
    losses; ``reverse`` flips that (the official ``shallow_to_deep_increase=False``).
    """
    if num_pairs < 1:
        raise RocketError("Matryoshka needs at least one aligned pair; add a layer pair.")
    ratios = [LOW_RATIO + 0.8 * i / max(num_pairs - 1, 1) for i in range(num_pairs)]
    return ratios[::-1] if reverse else ratios


def matryoshka_widths(
    hidden_dim: int,
    num_pairs: int | None = None,
    *,
    ratios: Sequence[float] | None = None,
    reverse: bool = False,
) -> list[int]:
    """Active hidden width ``d_i = max(1, int(H * r_i))`` for every pair, as the official code.

    >>> matryoshka_widths(2048, 10)
    [409, 591, 773, 955, 1137, 1319, 1501, 1683, 1865, 2048]
    >>> matryoshka_widths(2048, 1)
    [409]
    >>> matryoshka_widths(1000, 11)[9]
    919
    """
    if ratios is None:
        if num_pairs is None:
            raise RocketError("Give either the number of pairs or explicit Matryoshka ratios.")
        ratios = matryoshka_ratios(num_pairs, reverse=reverse)
    else:
        if num_pairs is not None and len(ratios) != num_pairs:
            raise RocketError(
                f"{len(ratios)} Matryoshka ratios were given for {num_pairs} pairs; give one per pair."
            )
        for r in ratios:
            if not 0.0 < r <= 1.0:
                raise RocketError(f"Matryoshka ratio {r} is outside (0, 1]; use fractions of the width.")
    # min(): the last default ratio may exceed 1 by one ulp; a prefix cannot be wider than H.
    return [min(hidden_dim, max(1, int(hidden_dim * r))) for r in ratios]

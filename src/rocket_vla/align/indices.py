"""The one layer-index convention of rocket-vla.

Hidden-state index ``k`` is the residual stream *after* block ``k``; ``0`` is the
embeddings entering block 1; negative indices count from the end, so ``-1`` is the
output of the last block for every model, student or teacher alike. A model with
``depth`` blocks therefore has valid indices ``0..depth`` (and ``-(depth+1)..-1``).
This matches the ``hidden_states`` tuple of transformers models, so indices from papers
that use that tuple carry over unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from rocket_vla.errors import RocketError


def resolve_layer(index: int, depth: int, *, what: str = "layer") -> int:
    """Map one (possibly negative) hidden-state index onto ``0..depth``."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise RocketError(f"{what} index {index!r} is not an integer; pass whole numbers.")
    resolved = index + depth + 1 if index < 0 else index
    if not 0 <= resolved <= depth:
        raise RocketError(
            f"{what} index {index} is out of range for a model with {depth} blocks; "
            f"use an index in 0..{depth} (or -{depth + 1}..-1)."
        )
    return resolved


def resolve_layers(indices: Sequence[int], depth: int, *, what: str = "layer") -> list[int]:
    """Resolve a list of indices; duplicates are rejected because each tap is one pair."""
    resolved = [resolve_layer(i, depth, what=what) for i in indices]
    if len(set(resolved)) != len(resolved):
        raise RocketError(
            f"{what} indices {list(indices)} resolve to duplicates {resolved}; list each layer once."
        )
    return resolved

"""Small argument-parsing helpers shared by several commands (parsing only, no logic)."""

from __future__ import annotations


def split_csv(values: list[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated flag values -> one flat list (None when absent).

    ``--tasks 0,1 --tasks 4`` -> ``["0", "1", "4"]``; empty items are dropped.
    """
    if not values:
        return None
    return [v for item in values for v in item.split(",") if v]

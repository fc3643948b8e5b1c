"""User-facing errors.

A :class:`RocketError` is a mistake the user can fix (bad layer index, missing dataset,
corrupt cache entry, ...). Its message is one sentence that names the fix. The CLI prints
it without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RocketError(ValueError):
    """A user-caused error whose message says how to fix it."""


def reject_unknown_keys(config_cls: type, data: dict, what: str, fix: str) -> None:
    """Refuse a config dict with keys the dataclass does not have, naming them.

    Shared by every ``from_dict`` so a stale or hand-edited config fails the same way.
    """
    import dataclasses

    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(config_cls)})
    if unknown:
        raise RocketError(f"unknown {what} config keys {unknown}; {fix}")

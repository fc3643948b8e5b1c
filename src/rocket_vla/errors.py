"""User-facing errors.

A :class:`RocketError` is a mistake the user can fix (bad layer index, missing dataset,
corrupt cache entry, ...). Its message is one sentence that names the fix. The CLI prints
it without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

_C = TypeVar("_C", bound="DictConfig")


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


class DictConfig:
    """``to_dict`` / ``from_dict`` for a flat config dataclass (checkpoints store configs as
    JSON). ``from_dict`` refuses keys the dataclass lacks, naming them, so a stale or
    hand-edited config fails the same way everywhere; subclasses name themselves in
    ``CONFIG_WHAT`` and the fix in ``CONFIG_FIX``."""

    CONFIG_WHAT: ClassVar[str] = "configuration"
    CONFIG_FIX: ClassVar[str] = "remove or rename them."

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        reject_unknown_keys(cls, data, cls.CONFIG_WHAT, cls.CONFIG_FIX)
        return cls(**data)

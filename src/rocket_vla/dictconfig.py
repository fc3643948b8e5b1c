"""The ``to_dict`` / ``from_dict`` mixin of the config dataclasses that checkpoints store.

Why a leaf module of its own: students, the aligner and the trainer all record their settings
as JSON and rebuild them from it, so the mixin sits below all of them and imports nothing of
the project but :mod:`rocket_vla.errors`.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from rocket_vla.errors import reject_unknown_keys

_C = TypeVar("_C", bound="DictConfig")


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

"""Load VGGT checkpoints into the aggregator: read the file, map its keys, load strictly.

A weight that silently fails to load would give a plausible-looking but wrong teacher, so
every difference between the file and the configured aggregator -- other than the heads a
teacher does not need -- is an error naming the keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rocket_vla.errors import RocketError

if TYPE_CHECKING:
    from rocket_vla.teachers.vggt import Aggregator

log = logging.getLogger(__name__)

# Top-level modules of the full VGGT model that are not the aggregator. Their keys are
# skipped (and reported) when loading, because a teacher needs the aggregator only.
HEAD_PREFIXES = ("camera_head", "depth_head", "point_head", "track_head")


@dataclass
class LoadReport:
    """What a checkpoint load did: how many aggregator tensors, which head keys were skipped."""

    path: str
    loaded: int
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        heads = sorted({k.split(".", 1)[0] for k in self.ignored})
        extra = f"; ignored {len(self.ignored)} head keys ({', '.join(heads)})" if heads else ""
        return f"loaded {self.loaded} aggregator tensors from {self.path}{extra}"


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a pickle read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise RocketError(f"VGGT checkpoint {path} does not exist; pass the path of model.pt.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RocketError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise RocketError(
            f"could not read the checkpoint {path} ({type(err).__name__}: {err}); "
            "re-download it or pass a .pt/.safetensors state dict."
        ) from err
    if isinstance(state, Mapping) and len(state) == 1:
        (only,) = state.values()
        if isinstance(only, Mapping):  # {"model": state_dict} style wrappers
            state = only
    tensors_only = isinstance(state, Mapping) and all(
        isinstance(v, torch.Tensor) for v in state.values()
    )
    if not tensors_only:
        raise RocketError(f"{path} does not hold a state dict of tensors; pass VGGT's model.pt.")
    return dict(state)


def split_checkpoint(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Split a full or aggregator-only state dict into (aggregator, head keys, foreign keys).

    Aggregator keys come back *without* the ``aggregator.`` prefix. A full model is
    recognised by that prefix; without it the dict is taken to be the aggregator alone.
    """
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    full = any(k.startswith("aggregator.") for k in state)
    agg: dict[str, torch.Tensor] = {}
    heads: list[str] = []
    foreign: list[str] = []
    for key, value in state.items():
        top = key.split(".", 1)[0]
        if top in HEAD_PREFIXES:
            heads.append(key)
        elif full and key.startswith("aggregator."):
            agg[key[len("aggregator."):]] = value
        elif full:
            foreign.append(key)
        else:
            agg[key] = value
    return agg, sorted(heads), sorted(foreign)


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_aggregator(
    aggregator: Aggregator, state: Mapping[str, torch.Tensor], source: str
) -> LoadReport:
    """Strictly load ``state`` (full model or aggregator-only) into ``aggregator``.

    Head keys are skipped and listed in the report; any other difference -- a missing
    or unexpected aggregator key, or a shape that does not match the config -- raises a
    RocketError naming the keys, so a wrong file or config never loads half-way.
    """
    agg, heads, foreign = split_checkpoint(state)
    expected = aggregator.state_dict()
    missing = sorted(set(expected) - set(agg))
    unexpected = sorted(set(agg) - set(expected)) + foreign
    wrong_shape = sorted(
        f"{k} {tuple(agg[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(agg) & set(expected)
        if tuple(agg[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(['aggregator.' + k for k in missing])}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches: {_listing(wrong_shape)}")
        raise RocketError(
            f"checkpoint {source} does not match the VGGT aggregator config ("
            + "; ".join(parts)
            + "); pass the official VGGT checkpoint or a VGGTConfig matching the file."
        )
    on_meta = any(t.device.type == "meta" for t in expected.values())
    aggregator.load_state_dict(agg, strict=True, assign=on_meta)
    report = LoadReport(path=source, loaded=len(agg), ignored=heads)
    log.info(report.summary())
    return report

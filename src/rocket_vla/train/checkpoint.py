"""Checkpoints written atomically: a kill at any instant leaves the previous one loadable.

Layout of a run folder::

    checkpoints/step_000500/model.safetensors   student ("policy.*") + aligner weights
    checkpoints/step_000500/config.json         format rocket-vla/checkpoint/2: the student's
                                                kind, config and LoRA settings, TrainConfig,
                                                align config, normalisation statistics, step
    checkpoints/step_000500/trainer_state.pt    optimizer, scheduler, RNG, data position
    checkpoints/latest                          name of the newest complete checkpoint

Why a temp dir + rename: the three files are written into ``.tmp-step_X-<pid>``, fsynced,
and only then is the directory renamed to ``step_X`` and the ``latest`` pointer replaced
(both ``os.replace``, atomic on POSIX). A crash before the rename leaves a stray temp dir
that the next save removes; ``latest`` never names a half-written checkpoint.
``trainer_state.pt`` is a pickle read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rocket_vla.errors import RocketError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATE = "trainer_state.pt"
LATEST = "latest"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    config: dict[str, Any],
    trainer_state: dict[str, Any],
    *,
    keep_last: int = 2,
) -> Path:
    """Write ``root/step_<step>`` atomically, point ``latest`` at it, prune old ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{step:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS))
    (tmp / CONFIG).write_text(json.dumps({**config, "step": step}, indent=2))
    torch.save(trainer_state, tmp / STATE)
    for f in (WEIGHTS, CONFIG, STATE):
        _fsync_file(tmp / f)
    _fsync_dir(tmp)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / f".tmp-{LATEST}-{os.getpid()}"
    pointer.write_text(name)
    _fsync_file(pointer)
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    _prune(root, keep_last, keep=name)
    return final


def _prune(root: Path, keep_last: int, keep: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir from a run folder, a ``checkpoints`` folder or the dir itself."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / WEIGHTS).is_file() and (candidate / CONFIG).is_file():
            return candidate
        pointer = candidate / LATEST
        if pointer.is_file():
            target = candidate / pointer.read_text().strip()
            if (target / WEIGHTS).is_file():
                return target
    raise RocketError(
        f"no checkpoint found at {path}; pass a run folder, its checkpoints/ folder or a "
        "step_* directory written by `rocket train`."
    )


def read_config(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RocketError(f"cannot read {ckpt / CONFIG} ({err}); the checkpoint is damaged.") from err


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Strict load that lists missing/unexpected keys and shape mismatches in one sentence."""
    state = load_file(str(ckpt / WEIGHTS))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise RocketError(
            f"checkpoint {ckpt} does not match this model (missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}, shape mismatches {shapes[:5]}); it was trained "
            "with another configuration -- use the same --model/--variant/layers or a new run."
        )
    model.load_state_dict(state)


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / STATE, map_location="cpu", weights_only=True)

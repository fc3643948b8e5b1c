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
from safetensors.torch import save_file
from torch import nn

from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import file_digest
from rocket_vla.weights import load_strict, read_safetensors

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
    torch.save(trainer_state, tmp / STATE)
    digests = {f: file_digest(tmp / f) for f in (WEIGHTS, STATE)}
    (tmp / CONFIG).write_text(json.dumps({**config, "step": step, "digests": digests}, indent=2))
    for f in (WEIGHTS, CONFIG, STATE):
        _fsync_file(tmp / f)
    _fsync_dir(tmp)
    final = root / name
    if final.exists():  # move the old one aside first: a crash never leaves no step dir
        trash = root / f".tmp-old-{name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
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


def verify_file(ckpt: Path, name: str, config: dict[str, Any] | None = None) -> None:
    """Refuse a checkpoint file whose bytes differ from the digest its config.json records
    (written at save time), so flipped bits are refused instead of trained on.

    Checkpoints written before digests were recorded carry none and are not checked.
    """
    config = read_config(ckpt) if config is None else config
    expected = (config.get("digests") or {}).get(name)
    if not (ckpt / name).is_file():
        raise RocketError(f"{ckpt / name} is missing; resume from another checkpoint (step_*) or "
                          "start a new run with --overwrite.")
    if expected is not None and file_digest(ckpt / name) != expected:
        raise RocketError(
            f"{ckpt / name} is damaged (its checksum does not match the one recorded when it was "
            "saved); resume from another checkpoint (step_*) or start a new run with --overwrite."
        )


def has_checkpoints(out_dir: str | Path) -> bool:
    """True when a run folder already holds a checkpoint (complete or being pointed at)."""
    root = Path(out_dir) / "checkpoints"
    return (root / LATEST).is_file() or any(p.is_dir() for p in root.glob("step_*"))


def prepare_fresh_run(out_dir: str | Path, overwrite: bool, *, clear: bool = True) -> None:
    """Refuse to start a new run over an old one, or clear the old one with ``overwrite``.

    Without this, a fresh run replaces the old run's checkpoints step by step (a mix of the
    two until it passes the old last step) and appends its metrics to the old ones.
    ``clear``: delete (only one process of a multi-process run should).
    """
    out = Path(out_dir)
    if not has_checkpoints(out):
        return
    if not overwrite:
        raise RocketError(
            f"{out} already holds a training run with checkpoints; pass --resume {out} to continue "
            "it, --overwrite to replace it, or a new --out_dir folder."
        )
    if not clear:
        return
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    shutil.rmtree(out / "tb", ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir from a run folder, a ``checkpoints`` folder or the dir itself."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / WEIGHTS).is_file() and (candidate / CONFIG).is_file():
            return candidate
        pointer = candidate / LATEST
        if pointer.is_file():
            try:
                target = candidate / pointer.read_text().strip()
            except (OSError, UnicodeDecodeError):
                continue
            if (target / WEIGHTS).is_file():
                return target
    raise RocketError(
        f"no checkpoint found at {path}; pass a run folder, its checkpoints/ folder or a "
        "step_* directory written by `rocket train`."
    )


def read_config(ckpt: Path) -> dict[str, Any]:
    try:
        data = json.loads((ckpt / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RocketError(
            f"cannot read {ckpt / CONFIG} ({type(err).__name__}); the checkpoint is damaged -- pass "
            "another checkpoint (step_*) or start a new run with --overwrite."
        ) from err
    if not isinstance(data, dict):
        raise RocketError(f"{ckpt / CONFIG} is not a checkpoint config; the checkpoint is damaged -- "
                          "pass another checkpoint (step_*) or start a new run with --overwrite.")
    return data


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Strict load that lists missing/unexpected keys and shape mismatches in one sentence."""
    verify_file(ckpt, WEIGHTS)
    load_strict(model, read_safetensors(ckpt / WEIGHTS), f"checkpoint {ckpt}",
                "it was trained with another configuration -- use the same --student/--variant/"
                "layers or a new run.")


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    verify_file(ckpt, STATE)
    try:
        state = torch.load(ckpt / STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated pickles raise many different types
        raise RocketError(
            f"{ckpt / STATE} is truncated or damaged ({type(err).__name__}); resume from another "
            "checkpoint (step_*) or start a new run with --overwrite."
        ) from err
    missing = [k for k in ("optimizer", "scheduler", "rng", "step") if not isinstance(state, dict)
               or k not in state]
    if missing:
        raise RocketError(f"{ckpt / STATE} lacks {missing}; it is not a `rocket train` trainer state -- "
                          "resume from another checkpoint or start a new run with --overwrite.")
    return state

"""Checkpoints written atomically: a kill at any instant leaves the previous one loadable.

Layout of a run folder::

    checkpoints/step_000500/model.safetensors   student ("policy.*") + aligner weights
    checkpoints/step_000500/config.json         format rocket-vla/checkpoint/2: the student's
                                                kind, config and LoRA settings, TrainConfig,
                                                align config, normalisation statistics, step,
                                                compute record (:mod:`rocket_vla.train.compute`)
    checkpoints/step_000500/trainer_state.pt    optimizer, scheduler, RNG, data position,
                                                compute spent (samples, wall and CPU seconds)
    checkpoints/latest                          name of the newest complete checkpoint

Why a temp dir + rename: the three files are written into ``.tmp-step_X-<pid>``, fsynced,
and only then is the directory renamed to ``step_X`` and the ``latest`` pointer replaced
(both ``os.replace``, atomic on POSIX). A crash before the rename leaves a stray temp dir
that the next save removes; ``latest`` never names a half-written checkpoint.
``trainer_state.pt`` is a pickle read with ``torch.load(weights_only=True)``.

What makes a checkpoint trustworthy, checked where it is written and where it is read:

* ``config.json`` records a blake2b digest of the two other files and one of its own
  content (``config_digest``, see :mod:`rocket_vla.weights`): a flipped bit or an edited
  normalisation number is refused on load; a resume refuses a config without its digest
  as made by other code;
* weights that are not finite are never written (a NaN checkpoint named "latest" would
  be resumed and evaluated as if it were good);
* a failed write (a full disk, say) removes its temp dir and leaves ``latest`` and the
  previous checkpoint as they were, and is reported in one sentence naming the folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import file_digest
from rocket_vla.weights import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_WEIGHTS,
    LATEST,
    STUDENT_ASSETS,
    check_config_digest,
    load_strict,
    locate_checkpoint,
    read_safetensors,
    seal_config,
)

WEIGHTS = CHECKPOINT_WEIGHTS
CONFIG = CHECKPOINT_CONFIG
STATE = "trainer_state.pt"
#: folder of a checkpoint holding the student's tokenizer/processor files (``Student.asset_files``)
ASSETS = STUDENT_ASSETS
#: Less free space than this after a failed write means the disk is full (libraries report
#: ENOSPC in their own words, or not at all: torch.save says "unexpected pos").
_FULL_BELOW = 1 << 20


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
    assets: Sequence[Path] = (),
) -> Path:
    """Write ``root/step_<step>`` atomically, point ``latest`` at it, prune old ones.

    Refused before anything is written when the weights are not finite; a write that fails
    (a full disk) removes its temp dir and leaves the previous checkpoint current.
    """
    root = Path(root)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _refuse_non_finite(state, root, step)
    name = f"step_{step:06d}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, root, f"the checkpoint of step {step}") from err
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        _write_files(tmp, state, {**config, "step": step}, trainer_state, assets)
    except Exception as err:  # a kill (KeyboardInterrupt here) leaves it for the next save
        failure = storage_error(err, root, f"the checkpoint of step {step}")
        shutil.rmtree(tmp, ignore_errors=True)
        if failure is None:
            raise
        raise failure from err
    final = _publish(root, tmp, name, step)
    _prune(root, keep_last, keep=name)
    return final


def _write_files(tmp: Path, state: dict[str, torch.Tensor], config: dict[str, Any],
                 trainer_state: dict[str, Any], assets: Sequence[Path] = ()) -> None:
    """The three files (and the student's ``assets``, under ``student/``) into ``tmp``,
    fsynced; config.json last, with the others' digests."""
    tmp.mkdir()
    save_file(state, str(tmp / WEIGHTS))
    torch.save(trainer_state, tmp / STATE)
    copied = []
    if assets:
        (tmp / ASSETS).mkdir()
        for src in assets:
            shutil.copyfile(src, tmp / ASSETS / Path(src).name)
            copied.append(f"{ASSETS}/{Path(src).name}")
            _fsync_file(tmp / copied[-1])
    digests = {f: file_digest(tmp / f) for f in (WEIGHTS, STATE, *copied)}
    (tmp / CONFIG).write_text(json.dumps(seal_config({**config, "digests": digests}), indent=2))
    for f in (WEIGHTS, CONFIG, STATE):
        _fsync_file(tmp / f)
    _fsync_dir(tmp)


def _publish(root: Path, tmp: Path, name: str, step: int) -> Path:
    """Rename ``tmp`` to ``root/name`` and point ``latest`` at it (both atomic)."""
    final = root / name
    pointer = root / f".tmp-{LATEST}-{os.getpid()}"
    added = False  # a new step dir that `latest` does not name yet
    try:
        if final.exists():  # move the old one aside first: a crash never leaves no step dir
            trash = root / f".tmp-old-{name}-{os.getpid()}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
            added = True
        pointer.write_text(name)
        _fsync_file(pointer)
        os.replace(pointer, root / LATEST)
        _fsync_dir(root)
    except OSError as err:
        failure = storage_error(err, root, f"the checkpoint of step {step}")
        for leftover in (tmp, final) if added else (tmp,):
            shutil.rmtree(leftover, ignore_errors=True)
        pointer.unlink(missing_ok=True)
        raise failure from err
    return final


def _refuse_non_finite(state: dict[str, torch.Tensor], root: Path, step: int) -> None:
    """Never write a checkpoint whose weights hold NaN or inf: it would become the one a
    resume or an evaluation picks up as the latest good one."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise RocketError(
            f"the weights at step {step} are not finite (e.g. {', '.join(bad[:3])}), so no "
            f"checkpoint was written; {after_bad_step(root)}"
        )


def last_good(root: str | Path) -> Path | None:
    """The checkpoint ``latest`` names in ``root`` (a run or ``checkpoints/`` folder), if any.

    Every checkpoint written by this code had finite weights that gave a finite loss, so
    the newest one is the last good one.
    """
    try:
        return locate_checkpoint(root)
    except RocketError:
        return None


def after_bad_step(root: str | Path) -> str:
    """The end of a message about weights gone bad: what is safe to resume, and the fix."""
    check = ("check the data and teacher cache (`rocket cache-teacher --check`), lower --lr or "
             "--align_weight")
    last = last_good(root)
    if last is None:
        return f"there is no good checkpoint to resume from yet -- {check} and start again."
    return f"nothing was saved past the last good checkpoint ({last}) -- {check}, then --resume."


def storage_error(err: BaseException, folder: Path, what: str) -> RocketError | None:
    """One sentence for a failed write into ``folder``: a full disk said as such, another
    OS error with its reason; None for errors that are not about storage (bugs)."""
    if is_disk_full(err) or _nearly_full(folder):
        return RocketError(
            f"the disk holding {folder} is full, so {what} could not be written (anything "
            "written before is intact); free space there or pass another --out_dir."
        )
    if isinstance(err, OSError):
        return RocketError(f"cannot write {what} into {folder} ({err.strerror or err}); fix the "
                           "folder (permissions, disk) or pass another --out_dir.")
    return None


def is_disk_full(err: BaseException) -> bool:
    """True when ``err`` or an error it was raised from says the disk (or quota) is full."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "os error 28" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _nearly_full(folder: Path) -> bool:
    """After a failed write only: torch.save reports a full disk in words of its own."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < _FULL_BELOW


def _prune(root: Path, keep_last: int, keep: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def verify_file(ckpt: Path, name: str, config: dict[str, Any] | None = None) -> None:
    """Refuse a checkpoint file whose bytes differ from the digest its config.json records
    (written at save time), so flipped bits are refused instead of trained on.

    A config that records no digest for ``name`` leaves it unchecked (a resume refuses such
    configs first: :func:`require_config_digest`).
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
    return locate_checkpoint(path)


def read_config(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's config.json, refused when it does not parse or differs from the
    digest recorded in it (a config without that digest is read unchecked)."""
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
    check_config_digest(data, ckpt / CONFIG, "pass another checkpoint (step_*) or start a new run "
                        "with --overwrite.", required=False)
    return data


def require_config_digest(ckpt: Path, saved: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint whose config.json records no digest of its content:
    nothing then says that its statistics are the ones the weights were trained with."""
    check_config_digest(saved, ckpt / CONFIG, "resume with the rocket-vla code that wrote it, or "
                        "start a new run (a new --out_dir folder, or --overwrite).", required=True)


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
    missing = [k for k in ("optimizer", "scheduler", "rng", "step", "compute") if not isinstance(state, dict)
               or k not in state]
    if missing:
        raise RocketError(f"{ckpt / STATE} lacks {missing}; it is not a `rocket train` trainer state -- "
                          "resume from another checkpoint or start a new run with --overwrite.")
    return state

"""One (variant, seed) run of the study: its folder, its identity and whether it can be reused.

A finished run is reused only when everything its results depend on is unchanged -- the
training and evaluation settings, the demonstrations' content, the teacher's weights and the
code; a run folder made otherwise is refused (or redone with ``overwrite``), never mixed into
a table. Which init states were evaluated (split, first trial, trial counts) names the result
file instead, so one trained run can hold results of several splits side by side."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError
from rocket_vla.study.config import StudyConfig

IDENTITY_FILE = "identity.json"
#: Identity keys computed from what the study produced rather than from its settings.
_PRODUCED = ("teacher_fingerprint", "data", "code")


@dataclass(frozen=True)
class RunKey:
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}-seed{self.seed}"


def run_dir(cfg: StudyConfig, key: RunKey) -> Path:
    return Path(cfg.out_dir) / "runs" / key.name


def result_file(cfg: StudyConfig, key: RunKey) -> Path:
    """Written when a run is trained and evaluated on the configured split (its presence
    marks the run finished for that split)."""
    return run_dir(cfg, key) / (
        f"result-{cfg.split}-from{cfg.first_trial}-t{cfg.trials}-c{cfg.curve_trials}.json")


def eval_dir(cfg: StudyConfig, key: RunKey, step: int, trials: int) -> Path:
    """The `rocket eval` folder of one checkpoint, named by the init states it evaluates."""
    return run_dir(cfg, key) / "eval" / f"{cfg.split}-from{cfg.first_trial}-step{step}-t{trials}"


def settings_identity(cfg: StudyConfig, key: RunKey) -> dict[str, Any]:
    """Every study setting the run's training or evaluation depends on.

    Settings of the demonstrations are also covered by their content fingerprint (``data``)
    once collected; naming them here refuses a change before anything is collected. The
    teacher's settings are None for the baseline, which never sees one, so a new teacher
    reuses its runs."""
    aligned = key.variant != "baseline"
    return {
        "variant": key.variant, "seed": key.seed,
        # training
        "model": cfg.model, "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "num_pairs": cfg.num_pairs, "image_size": cfg.image_size, "curve_steps": cfg.curve_steps(),
        "teacher": cfg.teacher if aligned else None,
        "cache_teacher": cfg.cache_teacher if aligned else None,
        "pos_embed": cfg.pos_embed if aligned else None,
        # the demonstrations
        "suite": cfg.suite, "tasks": list(cfg.tasks), "train_demos": cfg.train_demos,
        "heldout_demos": cfg.heldout_demos, "demo_first_init": cfg.demo_first_init,
        "frame_stride": cfg.frame_stride, "after_success": cfg.after_success,
        # closed-loop evaluation (collection shares the seed)
        "max_steps": cfg.max_steps, "env_seed": cfg.seed,
    }


def run_identity(cfg: StudyConfig, key: RunKey, data: dict[str, str], teacher: str | None,
                 code: dict[str, Any]) -> dict[str, Any]:
    """What a run's results depend on: its settings, and the demonstrations' content, the
    teacher's fingerprint (None for the baseline) and the code that made it."""
    aligned = key.variant != "baseline"
    return {**settings_identity(cfg, key), "teacher_fingerprint": teacher if aligned else None,
            "data": data, "code": code}


def check_settings(cfg: StudyConfig, keys: Iterable[RunKey]) -> None:
    """Refuse, before any collection or training, runs of ``keys`` made with other settings.

    :func:`claim` compares the full identity once data and teacher are known; this compares
    the part known from the configuration alone, so a rerun with another ``--max_steps``
    (say) stops at once instead of after collecting demonstrations."""
    if cfg.overwrite:
        return
    for key in keys:
        folder = run_dir(cfg, key)
        old = _saved_identity(folder)
        if old is not None:
            _refuse_changes(folder, old, settings_identity(cfg, key))
        elif folder.exists() and any(folder.iterdir()):
            _refuse_unknown(folder)


def claim(cfg: StudyConfig, key: RunKey, identity: dict[str, Any]) -> bool:
    """Prepare a run's folder; True when its result for this split can be reused as is.

    A folder of another identity is refused with a message naming the differing settings,
    or cleared first when ``cfg.overwrite``. Unfinished runs of the same identity resume."""
    folder = run_dir(cfg, key)
    saved = folder / IDENTITY_FILE
    old = _saved_identity(folder)
    if old is not None:
        if _changes(old, identity):
            if not cfg.overwrite:
                _refuse_changes(folder, old, identity)
            shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()) and not cfg.overwrite:
        _refuse_unknown(folder)
    elif folder.exists():
        shutil.rmtree(folder)
    if not saved.is_file():
        from rocket_vla.study.stages import write_json_atomic

        write_json_atomic(saved, identity)
    return result_file(cfg, key).is_file()


def _saved_identity(folder: Path) -> dict[str, Any] | None:
    """The recorded identity; None when there is none; ``{}`` when it cannot be read (which
    matches no identity)."""
    path = folder / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys of ``new`` whose recorded value differs or was not recorded (a key the old code
    did not record may have had any value), and keys only ``old`` has."""
    return sorted(k for k in set(old) | set(new) if k not in old or k not in new or old[k] != new[k])


def _describe(key: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    if key == "code":
        return "other rocket-vla code"
    if key in ("data", "teacher_fingerprint"):
        return f"other {'demonstrations' if key == 'data' else 'teacher weights'} ({key})"
    if key not in old:
        return f"no recorded {key}"
    if key not in new:
        return f"{key}={old[key]!r} (no longer a setting)"
    return f"{key}={old[key]!r} (now {new[key]!r})"


def _refuse_changes(folder: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Raise when ``new`` differs from the recorded ``old`` (only the keys ``new`` holds are
    compared when it is the settings part of an identity)."""
    if not old:
        raise RocketError(f"the study run {folder} has an unreadable {IDENTITY_FILE}; pass "
                          "--overwrite true to redo it, or use a new --out_dir.")
    compared = {k: v for k, v in old.items() if k in new or k not in _PRODUCED}
    changed = _changes(compared, new)
    if changed:
        what = ", ".join(_describe(k, old, new) for k in changed)
        raise RocketError(f"the study run {folder} was made with {what}; pass --overwrite true to "
                          "redo it, or use a new --out_dir.")


def _refuse_unknown(folder: Path) -> None:
    raise RocketError(f"{folder} holds files but no {IDENTITY_FILE}; pass --overwrite true to redo "
                      "it, or use a new --out_dir.")

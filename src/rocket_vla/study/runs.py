"""One (variant, seed) run of the study: its folder, its identity and whether it can be reused.

A finished run is reused only when everything its results depend on is unchanged -- the
training settings, the demonstrations' content, the teacher's weights and the code; a run
folder made otherwise is refused (or redone with ``overwrite``), never mixed into a table."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError
from rocket_vla.study.config import StudyConfig

IDENTITY_FILE = "identity.json"


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
    return run_dir(cfg, key) / f"result-{cfg.split}-t{cfg.trials}-c{cfg.curve_trials}.json"


def run_identity(cfg: StudyConfig, key: RunKey, data: dict[str, str], teacher: str | None,
                 code: dict[str, Any]) -> dict[str, Any]:
    """What a run's training depends on. ``teacher``: the teacher's fingerprint (None for the
    baseline, which never sees one)."""
    aligned = key.variant != "baseline"
    return {
        "variant": key.variant, "seed": key.seed, "model": cfg.model, "steps": cfg.steps,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "num_pairs": cfg.num_pairs,
        "image_size": cfg.image_size, "curve_steps": cfg.curve_steps(),
        "teacher": cfg.teacher if aligned else None, "teacher_fingerprint": teacher if aligned else None,
        "cache_teacher": cfg.cache_teacher if aligned else None,
        "pos_embed": cfg.pos_embed if aligned else None,
        "data": data, "code": code,
    }


def claim(cfg: StudyConfig, key: RunKey, identity: dict[str, Any]) -> bool:
    """Prepare a run's folder; True when its result for this split can be reused as is.

    A folder of another identity is refused with a message naming the differing keys, or
    cleared first when ``cfg.overwrite``. Unfinished runs of the same identity resume."""
    folder = run_dir(cfg, key)
    saved = folder / IDENTITY_FILE
    if saved.is_file():
        try:
            old = json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {"unreadable": True}
        changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        if changed and not cfg.overwrite:
            what = ", ".join("rocket-vla code" if k == "code" else k for k in changed)
            raise RocketError(
                f"the study run {folder} was made with other {what}; pass --overwrite true to redo "
                "it, or a new --out_dir.")
        if changed:
            shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()) and not cfg.overwrite:
        raise RocketError(f"{folder} holds files but no {IDENTITY_FILE}; pass --overwrite true to redo "
                          "it, or a new --out_dir.")
    elif folder.exists():
        shutil.rmtree(folder)
    if not saved.is_file():
        from rocket_vla.study.stages import write_json_atomic

        write_json_atomic(saved, identity)
    return result_file(cfg, key).is_file()

"""One run of the study: its folder, its identity and whether it can be reused.

A run is one long training of one (variant, seed) -- or of the control, ROCKET against a
random-weight teacher. Its folder is reused only when everything its checkpoints depend on is
unchanged -- the training recipe, the demonstrations' content, the teacher's weights and the
code; a folder made otherwise is refused (or redone with ``overwrite``), never mixed into a
table. How long it trains is not part of the identity: the schedule is constant, so a run
trained further is the same run with more checkpoints."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError
from rocket_vla.kernels import PIN_FIX
from rocket_vla.records import write_json_atomic
from rocket_vla.study.config import StudyConfig
from rocket_vla.train.config import RESUMABLE_CHANGES

IDENTITY_FILE = "identity.json"
#: Identity keys computed from what the study produced rather than from its settings.
_PRODUCED = ("teacher_fingerprint", "data", "code")
#: TrainConfig fields only the aligned variants read (a baseline run ignores them, so a new
#: teacher or pairing reuses the baseline's runs).
ALIGN_ONLY = ("student_layers", "teacher_layers", "num_pairs", "align_weight", "projector_hidden",
              "pos_embed", "teacher", "teacher_cache", "teacher_size", "teacher_dtype")


@dataclass(frozen=True)
class RunKey:
    """A run: its variant and seed, and for the control the teacher it trains against instead
    of the study's (None: the study's teacher)."""

    variant: str
    seed: int
    teacher: str | None = None

    @property
    def name(self) -> str:
        middle = "" if self.teacher is None else f"-{self.teacher}"
        return f"{self.variant}{middle}-seed{self.seed}"


def run_dir(cfg: StudyConfig, key: RunKey) -> Path:
    return Path(cfg.out_dir) / "runs" / key.name


def checkpoint_dir(cfg: StudyConfig, key: RunKey, step: int) -> Path:
    return run_dir(cfg, key) / "train" / "checkpoints" / f"step_{step:06d}"


def result_file(cfg: StudyConfig, key: RunKey, points: list[int]) -> Path:
    """Written when a run is evaluated at ``points`` on the test states (its presence marks
    the run finished for those points)."""
    return run_dir(cfg, key) / f"result-test-t{cfg.eval_trials}-{'-'.join(map(str, points))}.json"


def eval_dir(cfg: StudyConfig, key: RunKey, split: str, step: int, first: int, trials: int) -> Path:
    """The `rocket eval` folder of one checkpoint, named by the init states it evaluates."""
    return run_dir(cfg, key) / "eval" / f"{split}-from{first}-t{trials}-step{step}"


def run_teacher(cfg: StudyConfig, key: RunKey) -> str:
    """The teacher spec the run trains against."""
    return key.teacher or cfg.train.teacher


def settings_identity(cfg: StudyConfig, key: RunKey) -> dict[str, Any]:
    """Every setting the run's checkpoints and their evaluation depend on.

    The training recipe is the study's TrainConfig template without the fields that only say
    how long a run goes and what it writes; a baseline run drops the fields only alignment
    reads. Settings of the demonstrations are also covered by their content fingerprint once
    collected; naming them here refuses a change before anything is collected."""
    aligned = key.variant != "baseline"
    recipe = {k: v for k, v in cfg.train.to_dict().items()
              if k not in RESUMABLE_CHANGES and k not in cfg.RUN_FIELDS and (aligned or k not in ALIGN_ONLY)}
    if aligned:
        recipe["teacher"] = run_teacher(cfg, key)
    identity = {"variant": key.variant, "seed": key.seed, "train": recipe, "check_every": cfg.check_every,
                "cache_teacher": cfg.cache_teacher if aligned else None,
                "data_settings": dataclasses.asdict(cfg.data), "max_steps": cfg.max_steps}
    return json.loads(json.dumps(identity))  # as it reads back from identity.json (tuples as lists)


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
        old = saved_identity(folder / IDENTITY_FILE)
        if old is not None:
            refuse_changes(folder, old, settings_identity(cfg, key))
        elif folder.exists() and any(folder.iterdir()):
            _refuse_unknown(folder)


def claim(cfg: StudyConfig, key: RunKey, identity: dict[str, Any]) -> None:
    """Prepare a run's folder for ``identity``: a folder of another identity is refused with a
    message naming the differing settings, or cleared first when ``cfg.overwrite``; a folder of
    the same identity is kept and resumes."""
    folder = run_dir(cfg, key)
    old = saved_identity(folder / IDENTITY_FILE)
    if old is not None:
        if changes(old, identity):
            if not cfg.overwrite:
                refuse_changes(folder, old, identity)
            shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()) and not cfg.overwrite:
        _refuse_unknown(folder)
    elif folder.exists():
        shutil.rmtree(folder)
    if not (folder / IDENTITY_FILE).is_file():
        write_json_atomic(folder / IDENTITY_FILE, identity)


def saved_identity(path: Path) -> dict[str, Any] | None:
    """The recorded identity; None when there is none; ``{}`` when it cannot be read (which
    matches no identity)."""
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys of ``new`` whose recorded value differs or was not recorded (a key the old code
    did not record may have had any value), and keys only ``old`` has."""
    return sorted(k for k in set(old) | set(new) if k not in old or k not in new or old[k] != new[k])


def _describe(key: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    if key == "code":
        before, now = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(now, dict) and set(changes(before, now)) == {"kernels"}:
            return f"other CPU kernels ({before.get('kernels')} -> {now.get('kernels')}; {PIN_FIX})"
        return "other rocket-vla code"
    if key in ("data", "teacher_fingerprint"):
        return f"other {'demonstrations' if key == 'data' else 'teacher weights'} ({key})"
    if key not in old:
        return f"no recorded {key}"
    if key not in new:
        return f"{key}={old[key]!r} (no longer a setting)"
    if isinstance(old[key], dict) and isinstance(new[key], dict):
        inner = changes(old[key], new[key])
        return ", ".join(f"{key}.{k}={old[key].get(k)!r} (now {new[key].get(k)!r})" for k in inner)
    return f"{key}={old[key]!r} (now {new[key]!r})"


def refuse_changes(folder: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Raise when ``new`` differs from the recorded ``old`` (only the keys ``new`` holds are
    compared when it is the settings part of an identity)."""
    if not old:
        raise RocketError(f"the study run {folder} has an unreadable {IDENTITY_FILE}; pass "
                          "--overwrite true to redo it, or use a new --out_dir.")
    compared = {k: v for k, v in old.items() if k in new or k not in _PRODUCED}
    changed = changes(compared, new)
    if changed:
        what = ", ".join(_describe(k, old, new) for k in changed)
        raise RocketError(f"the study run {folder} was made with {what}; pass --overwrite true to "
                          "redo it, or use a new --out_dir.")


def _refuse_unknown(folder: Path) -> None:
    raise RocketError(f"{folder} holds files but no {IDENTITY_FILE}; pass --overwrite true to redo "
                      "it, or use a new --out_dir.")

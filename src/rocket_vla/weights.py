"""Reading checkpoints back: where one is, whether its config is intact, and its tensors.

Why a module of its own: checkpoints are read by the trainer (``train/``, to resume) and by
evaluation (``policies/``, to act), which must not import each other; both need the same
lookup of a run folder's ``latest`` checkpoint, the same check of ``config.json`` against
the digest recorded in it, and the same damaged-file and mismatched-key messages.

Why ``config.json`` carries a digest of its own content: it holds the normalisation
statistics, so one changed number shifts every action at evaluation and on resume, yet it
parses fine. The digest (``config_digest``) covers every other key -- among them the
digests of the weight and trainer-state files -- in a canonical JSON form, so a config
rewritten with other indentation or key order still matches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rocket_vla.errors import RocketError

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"
#: a checkpoint's copy of the student's tokenizer/processor files, so the run folder is portable
STUDENT_ASSETS = "student"
#: The file of a ``checkpoints/`` folder that names its newest complete ``step_*`` folder.
LATEST = "latest"
#: The key of ``config.json`` that holds the digest of the rest of the file.
CONFIG_DIGEST = "config_digest"


# ----------------------------------------------------------------------------- config digest
def config_digest(config: dict[str, Any]) -> str:
    """blake2b of ``config`` without its own digest key, as canonical JSON (sorted keys)."""
    body = {k: v for k, v in config.items() if k != CONFIG_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def seal_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as it reads back from JSON (tuples become lists, ...), with its digest added.

    The digest is taken of the read-back form, so the loader recomputes the same value.
    """
    body = json.loads(json.dumps({k: v for k, v in config.items() if k != CONFIG_DIGEST}))
    return {**body, CONFIG_DIGEST: config_digest(body)}


def check_asset_digests(saved: dict[str, Any], ckpt: Path) -> None:
    """The student files copied into ``ckpt/student/`` match the digests recorded at saving."""
    from rocket_vla.fingerprint import file_digest

    recorded = {k: v for k, v in (saved.get("digests") or {}).items()
                if k.startswith(STUDENT_ASSETS + "/")}
    present = {f"{STUDENT_ASSETS}/{p.name}" for p in (ckpt / STUDENT_ASSETS).iterdir()}
    for name in sorted(present | set(recorded)):
        if name not in recorded or name not in present or file_digest(ckpt / name) != recorded[name]:
            raise RocketError(f"{ckpt / name} is not the file saved with the checkpoint (changed, added "
                              "or missing); copy the checkpoint folder again or pass another step_*.")


def check_config_digest(config: dict[str, Any], path: Path, fix: str, *, required: bool) -> None:
    """Refuse a checkpoint config whose content differs from the digest recorded in it.

    ``required``: a config without a digest was written by code older than the digest and
    counts as made by other code (as an unrecorded code version does); otherwise it passes
    unchecked (evaluation still reads older checkpoints).
    """
    recorded = config.get(CONFIG_DIGEST)
    if recorded is None:
        if required:
            raise RocketError(f"{path} was made by other rocket-vla code (it records no digest of "
                              f"its content, so a changed number in it cannot be seen); {fix}")
        return
    if recorded != config_digest(config):
        raise RocketError(
            f"{path} was changed after it was saved (its content, e.g. the normalisation "
            f"statistics, no longer matches the digest recorded in it); {fix}"
        )


# ----------------------------------------------------------------------------- locating
def is_checkpoint(folder: Path) -> bool:
    """True for a folder holding both files every checkpoint has (weights and config)."""
    return (folder / CHECKPOINT_WEIGHTS).is_file() and (folder / CHECKPOINT_CONFIG).is_file()


def checkpoint_steps(root: Path) -> list[str]:
    """Names of the complete ``step_*`` folders in a ``checkpoints/`` folder, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.glob("step_*") if is_checkpoint(p))


def _pointer_target(pointer: Path) -> str | None:
    try:
        return pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _pick_one(root: Path, steps: list[str]) -> str:
    if not steps:
        return ("there is no other checkpoint (step_*) there -- train again into a new --out_dir "
                "or with --overwrite")
    return (f"the checkpoints there are {', '.join(steps)} -- pass one of them directly "
            f"(e.g. --resume or --checkpoint {root / steps[-1]}) or write its name into "
            f"{root / LATEST}")


def locate_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself, a ``checkpoints/`` folder or a run folder.

    A ``latest`` pointer that names a missing or incomplete step is reported as such, with
    the steps that are there, rather than as no checkpoint at all.
    """
    path = Path(path)
    candidates = (path, path / "checkpoints")
    for candidate in candidates:
        if is_checkpoint(candidate):
            return candidate
        pointer = candidate / LATEST
        if not pointer.is_file():
            continue
        name = _pointer_target(pointer)
        if name and "/" not in name and is_checkpoint(candidate / name):
            return candidate / name
        raise RocketError(
            f"{pointer} names {name!r}, which is not a complete checkpoint in {candidate}; "
            f"{_pick_one(candidate, checkpoint_steps(candidate))}."
        )
    for candidate in candidates:
        steps = checkpoint_steps(candidate)
        if steps:
            raise RocketError(f"{candidate} has no {LATEST} file naming its newest checkpoint; "
                              f"{_pick_one(candidate, steps)}.")
    raise RocketError(
        f"no checkpoint found at {path}; pass a run folder, its checkpoints/ folder or a "
        "step_* directory written by `rocket train`."
    )


# ----------------------------------------------------------------------------- tensors
def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a file that does not parse is one clear error."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any parse failure means a damaged file
        raise RocketError(
            f"{path} is not a readable safetensors file ({type(err).__name__}); it is truncated or "
            "damaged -- pass another checkpoint (step_*) or retrain."
        ) from err


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str, fix: str) -> None:
    """``module.load_state_dict(state)`` that names missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise RocketError(
            f"{where} does not match (missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]}, shape mismatches {shapes[:5]}); {fix}"
        )
    module.load_state_dict(state)

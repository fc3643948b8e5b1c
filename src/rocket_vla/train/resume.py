"""What a resumed run must share with the checkpoint it continues, refused in one sentence.

A resume continues the data stream, the schedule and the weights exactly only when the
hyper-parameters, the code, the student's architecture and the alignment config are the
ones the checkpoint ran; anything else would silently train a different model on top of
the saved one. The inputs (dataset, teacher) are compared in :mod:`rocket_vla.train.inputs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rocket_vla.align import AlignConfig
from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import check_same_code
from rocket_vla.policies.student import student_spec
from rocket_vla.train import checkpoint as ckpt_io
from rocket_vla.train.config import TrainConfig


def check_resume(cfg: TrainConfig, resume: str | Path | None) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume and its config, refused when settings or code differ;
    ``(None, None)`` for a fresh run."""
    if resume is None:
        return None, None
    ckpt = ckpt_io.resolve_checkpoint(resume)
    saved = ckpt_io.read_config(ckpt)
    if "train" not in saved:
        raise RocketError(f"{ckpt} is not a `rocket train` checkpoint; pass one it wrote.")
    ckpt_io.require_config_digest(ckpt, saved)
    student_spec(saved, ckpt)  # refuses configs of other formats in one sentence
    before = TrainConfig.from_dict(saved["train"])
    changed = cfg.changed_fields(before)
    if changed:
        detail = ", ".join(f"{k}: {before.to_dict()[k]!r} -> {cfg.to_dict()[k]!r}" for k in changed)
        raise RocketError(
            f"cannot resume {ckpt} with changed hyper-parameters ({detail}); use the "
            "checkpoint's settings or start a new run."
        )
    check_same_code(saved.get("code_version"), f"the checkpoint {ckpt}",
                    "resume with the rocket-vla code that wrote it, or start a new run "
                    "(a new --out_dir folder, or --overwrite).")
    if cfg.schedule == "cosine" and cfg.steps != before.steps:
        raise RocketError(
            "the cosine schedule depends on --steps; resume with the same --steps "
            f"({before.steps}) or start a new run."
        )
    return ckpt, saved


def check_same_student(saved: dict[str, Any], ckpt: Path, policy: Any) -> None:
    """Refuse to resume into a student of another architecture than the one saved.

    Where the pretrained folder lies is not architecture: a run resumed on another machine
    passes its own ``--student_path``.
    """
    spec = student_spec(saved, ckpt)

    def arch(config: Any) -> Any:
        return ({k: v for k, v in config.items() if k != "student_path"}
                if isinstance(config, dict) else config)

    if spec["kind"] != policy.kind or arch(spec["config"]) != arch(
            json.loads(json.dumps(policy.config_dict()))):
        raise RocketError(
            f"{ckpt} holds a {spec['kind']} student of another configuration; "
            "resume with the checkpoint's --student/--student_preset or start a new run."
        )


def check_same_alignment(saved: dict[str, Any], align_config: AlignConfig) -> None:
    """Refuse to resume with another alignment config than the checkpoint's.

    The saved one is read back through ``from_dict``, so complete configs are compared: a
    field the saved dict leaves out counts at its default, not as a change.
    """
    if saved.get("align") and (
            AlignConfig.from_dict(saved["align"]).to_dict() != align_config.to_dict()):
        raise RocketError(
            "the checkpoint's alignment config (teacher dim/layers, position embedding) "
            "differs from this run's; resume with the same teacher, layer pairs and --pos_embed."
        )

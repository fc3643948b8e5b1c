"""`rocket train-teacher`: train the small geometry teacher on collected LIBERO frames.

Thin wiring: the flags are generated from
:class:`rocket_vla.teachers.geometry.run.GeometryRunConfig` (the training settings of
:class:`GeometryTrainConfig` plus data, output and process options);
:func:`~rocket_vla.teachers.geometry.run.run_training` trains the teacher (and, unless
``--single_view false``, its single-view variant), evaluates them on held-out episodes
against the constant-depth predictor, and writes ``model.safetensors`` / ``config.json`` /
``metrics.json`` / ``MODEL_CARD.md`` under ``--out_dir``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

DESCRIPTION = (
    "Train a small VGGT-architecture model to predict per-pixel depth and world points of the "
    "agent-view and wrist cameras (a 2-view input per step) from frames collected with `rocket "
    "collect` (which records depth and camera parameters). Evaluates on held-out episodes against "
    "the best constant depth and a single-view variant, and writes model.safetensors, config.json "
    "and metrics.json. --config reads YAML; --print_config shows the resolved configuration."
)
HELP = "train the small geometry teacher (depth + world points) on collected frames"


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.teachers.geometry.run import GeometryRunConfig, run_training, summary

    cfg, _ = parse_command(argv, GeometryRunConfig, "rocket train-teacher", DESCRIPTION)
    command = ["rocket", "train-teacher", *argv] if sys.argv else None
    out, metrics = run_training(cfg, command=command, progress=lambda msg: print(msg, flush=True))
    print(json.dumps(summary(metrics), indent=2))
    print(f"wrote {out / 'model.safetensors'}, config.json, metrics.json and MODEL_CARD.md")
    return 0

"""`rocket train`: train a student (MiniVLA, pi0, OFT-style) on LIBERO episodes, one of five variants.

The flags are generated from :class:`rocket_vla.train.TrainConfig` (its fields, defaults
and attribute docstrings), so nothing here repeats a default. ``--config FILE.yaml`` (or a
shipped name such as ``rocket``) sets any of them; later flags override. Every check
(dataset layout, teacher, resume compatibility) happens in
:class:`rocket_vla.train.Trainer` before the first step; the trainer also locks ``--out_dir``
for the whole run, so a second `rocket train` into it is refused. Several processes:
``accelerate launch -m rocket_vla.cli train ...``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

DESCRIPTION = (
    "Train on LIBERO-layout HDF5 episodes. --variant picks one of the paper's five presets; "
    "--config reads YAML (e.g. what `rocket select-layers --format yaml` writes); "
    "--print_config shows the resolved configuration."
)
HELP = "train a student with ROCKET alignment (or a baseline) on LIBERO episodes"


@dataclass
class Options:
    resume: str | None = None
    """run folder (its latest checkpoint) or one checkpoint folder (RUN/checkpoints/step_N) to
    continue from ('auto' = --out_dir)"""


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.train import Trainer
    from rocket_vla.train.config import TrainConfig

    cfg, opts = parse_command(argv, TrainConfig, "rocket train", DESCRIPTION, Options, shipped=True)
    cfg.variant = cfg.variant.replace("-", "_")
    resume = cfg.out_dir if opts.resume == "auto" else opts.resume
    trainer = Trainer(cfg, resume=resume)
    result = trainer.fit()
    summary = {"step": result.step, "seconds": round(result.seconds, 2),
               "samples_per_s": round(result.samples_per_s, 2),
               "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "last": result.history[-1] if result.history else None}
    if trainer.accelerator.is_main_process:
        print(json.dumps(summary))
    return 0

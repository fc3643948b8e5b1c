"""`rocket reproduce`: the paper's five variants x seeds, evaluated closed-loop, with a report.

The flags are generated from :class:`rocket_vla.study.config.StudyConfig`; ``--preset smoke``
starts from the smallest study (every stage in a minute or two), later flags override it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DESCRIPTION = (
    "Train every variant x seed on the same scripted-expert LIBERO data and teacher, evaluate each "
    "run's checkpoints closed-loop, measure gradient conflict, and write results.json, report.md and "
    "plots. Reruns resume; finished runs are reused only when settings, data, teacher and code match."
)
HELP = "the paper's ablation in miniature: variants x seeds, closed-loop, with a report"


def _command_options(parser: Any) -> None:
    parser.add_argument("--preset", type=str, default="default",
                        help="starting point: default (about 1.5-2 h on 2 cores) or smoke (tests)")


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import build_parser, parse_config
    from rocket_vla.study.config import StudyConfig
    from rocket_vla.study.run import run_study

    parser = build_parser(StudyConfig, "rocket reproduce", DESCRIPTION, _command_options)
    parser.set_defaults(StudyConfig.preset_values(_preset(argv)))  # flags and --config override it
    cfg, _ = parse_config(parser, StudyConfig, argv, extra_keys=("preset",))
    cfg.validate()
    run_study(cfg)
    return 0


def _preset(argv: Sequence[str]) -> str:
    """The ``--preset`` value (the last one given), read before parsing sets its defaults."""
    name = "default"
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    return name

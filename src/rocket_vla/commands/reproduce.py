"""`rocket reproduce`: the paper's five variants x seeds, evaluated closed-loop, with a report.

The flags are generated from :class:`rocket_vla.study.config.StudyConfig`; ``--preset``
(default, smoke) picks one of its named sets of defaults, which ``--config`` files and flags
override.
"""

from __future__ import annotations

from collections.abc import Sequence

DESCRIPTION = (
    "Train every variant x seed on the same scripted-expert LIBERO data and teacher, evaluate each "
    "run's checkpoints closed-loop, measure gradient conflict, and write results.json, report.md and "
    "plots. Reruns resume; finished runs are reused only when settings, data, teacher and code match. "
    "--preset smoke is the smallest study exercising every stage."
)
HELP = "the paper's ablation in miniature: variants x seeds, closed-loop, with a report"


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.study.config import StudyConfig
    from rocket_vla.study.run import run_study

    run_study(parse_command(argv, StudyConfig, "rocket reproduce", DESCRIPTION)[0])  # validated by run_study
    return 0

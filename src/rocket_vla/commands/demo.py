"""`rocket demo`: the offline end-to-end job (collect, train baseline + ROCKET, evaluate).

The flags are generated from :class:`rocket_vla.demo.config.DemoConfig`; ``--preset``
(default, quick, smoke) picks one of its named sets of defaults, which ``--config`` files
and flags override.
"""

from __future__ import annotations

from collections.abc import Sequence

DESCRIPTION = (
    "Collect LIBERO-Spatial demonstrations with the scripted experts (cached), train a baseline and "
    "a ROCKET MiniVLA with the bundled tiny teacher on the same data and seed, evaluate both "
    "closed-loop, and write a summary table and plots to the run folder. --preset quick is a "
    "smaller run (about 7 minutes on 2 cores), --preset smoke the smallest exercising every stage."
)
HELP = "offline end-to-end run: LIBERO demos -> baseline vs ROCKET MiniVLA -> closed-loop evaluation"


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.demo.config import DemoConfig
    from rocket_vla.demo.run import run_demo

    run_demo(parse_command(argv, DemoConfig, "rocket demo", DESCRIPTION)[0])  # validated by run_demo
    return 0

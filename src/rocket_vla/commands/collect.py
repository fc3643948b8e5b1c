"""`rocket collect`: record scripted-expert demonstrations in the LIBERO HDF5 layout.

The flags are generated from :class:`rocket_vla.envs.collect.CollectConfig`, plus ``--quiet``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DESCRIPTION = (
    "Run the scripted experts from official init states (and randomised variations), keep "
    "successful episodes, and write each as a LIBERO-layout HDF5 file with RGB, metric depth and "
    "camera intrinsics/extrinsics every --frame_stride steps. Resumable: a rerun skips attempts "
    "already logged in OUT/attempts.jsonl. --config reads YAML; --print_config shows the "
    "resolved configuration."
)
HELP = "collect scripted-expert demonstrations (LIBERO HDF5 + depth + cameras)"


@dataclass
class Options:
    quiet: bool = False
    """no progress bar"""


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.envs.collect import CollectConfig, run_collection
    from rocket_vla.envs.suites import setup_headless_gl

    cfg, opts = parse_command(argv, CollectConfig, "rocket collect", DESCRIPTION, Options)
    setup_headless_gl()
    counts = run_collection(cfg, progress=not opts.quiet)
    total_kept = sum(c["kept"] for c in counts.values())
    total = sum(c["attempts"] for c in counts.values())
    for key, c in sorted(counts.items()):
        print(f"{key}\tkept {c['kept']}/{c['attempts']}")
    print(f"# {total_kept}/{total} successful demonstrations under {cfg.out_dir} "
          "(read them with rocket_vla.data.episodes.read_episodes)")
    return 0

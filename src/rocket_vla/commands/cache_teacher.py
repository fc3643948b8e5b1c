"""`rocket cache-teacher`: compute teacher features for every frame of a dataset, once.

Wiring only: flags generated from :class:`rocket_vla.teachers.fill.CacheFillConfig` ->
:func:`rocket_vla.teachers.fill.fill_from_config`, or :meth:`FeatureCache.verify` for
``--check``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DESCRIPTION = (
    "Run the frozen teacher once over every frame of a dataset and store the chosen layers' "
    "full-frame patch features (float16). Resumable; damaged or stale entries are detected by "
    "checksums and fingerprints and recomputed. --config reads YAML; --print_config shows the "
    "resolved configuration."
)
HELP = "precompute teacher features for a dataset (read by training instead of the teacher)"


@dataclass
class Options:
    check: bool = False
    """only verify the cache at --out_dir and list damaged or stale entries"""


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.teachers.cache import FeatureCache
    from rocket_vla.teachers.fill import CacheFillConfig, fill_from_config

    cfg, opts = parse_command(argv, CacheFillConfig, "rocket cache-teacher", DESCRIPTION, Options)
    if opts.check:
        bad = FeatureCache.open(cfg.out_dir).verify()
        for name, problem in bad.items():
            print(f"{name}: {problem}")
        print(f"checked {cfg.out_dir}: {len(bad)} bad entries")
        return 1 if bad else 0
    cache, report = fill_from_config(cfg, log=print)
    for episode, problem in report.repaired.items():
        print(f"recomputed episode {episode}: {problem}")
    print(f"{cache.root}: {report.summary()}")
    return 0

"""`rocket check-env`: does the installed simulator reproduce the official LIBERO one?

The flags are generated from :class:`rocket_vla.envs.check_env.CheckEnvConfig`.
Exit code 0: every checked init state matches the shipped reference; 1: some differ (the
table says which and the likely cause); 2: a usage error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = (
    "Rebuild, for every task of the four LIBERO suites and a few init states, the object poses and "
    "camera fingerprints after the official episode start (hard reset, env.seed(0), 10 no-op steps) "
    "and compare them with the reference shipped with rocket-vla (made on the pinned mujoco 3.2.3 "
    "stack). --quick checks three telling tasks in about 30 s; --premises also tabulates, for every "
    "init state, the task's :init relations that do not hold after the wait."
)
HELP = "check that the installed simulator reproduces the official LIBERO one"


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.envs import check_env as ce
    from rocket_vla.envs.suites import setup_headless_gl

    cfg, _ = parse_command(argv, ce.CheckEnvConfig, "rocket check-env", DESCRIPTION)
    setup_headless_gl()
    if cfg.write_reference:
        path = ce.write_reference(cfg)
        print(f"# wrote the reference ({path.stat().st_size // 1024} KiB) to {path}")
        return 0
    result = ce.run_check(cfg)
    text = ce.report(result, cfg.tolerances)
    print(text, end="")
    out = Path(cfg.out_dir) if cfg.out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "check_env.json").write_text(json.dumps(
            {"passed": result.passed, "stack": result.stack, "reference_stack": result.reference_stack,
             "wall_s": round(result.wall_s, 1), "rows": result.rows}, indent=1), encoding="utf-8")
        (out / "check_env.md").write_text(text, encoding="utf-8")
    if cfg.premises:
        assert out is not None  # CheckEnvConfig requires --out_dir with --premises
        table = ce.premise_table(cfg)
        (out / "premises.json").write_text(json.dumps(table, indent=1), encoding="utf-8")
        md = ce.premise_markdown(table)
        (out / "premises.md").write_text(md, encoding="utf-8")
        print(md, end="")
        print(f"# premise table ({table['wall_s']:.0f} s): {out}/premises.md")
    return 0 if result.passed else 1

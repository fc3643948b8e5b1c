"""`rocket eval`: evaluate a policy on LIBERO under the paper's protocol.

The flags are generated from :class:`rocket_vla.envs.runner.EvalConfig`; the options below
are the command's own modes (merge finished runs, list tasks) and ``--checkpoint``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DESCRIPTION = (
    "Run trials of LIBERO tasks (trial k starts from init state k), with the paper's step budgets "
    "(spatial 220, object 280, goal 300, libero_10 520) after 10 no-op steps, executing each action "
    "chunk open-loop. Writes one JSON line per episode to OUT/episodes.jsonl (a rerun resumes), and "
    "OUT/summary.{json,md}. --config reads YAML; --print_config shows the resolved configuration."
)
HELP = "evaluate a policy on LIBERO (paper protocol, parallel, resumable)"


def _command_options(parser: Any) -> None:
    parser.add_argument("--checkpoint", type=str | None, default=None,
                        help="checkpoint path passed to the policy factory (checkpoint=PATH)")
    parser.add_argument("--merge", default=None, nargs="+", metavar="DIR",
                        help="combine finished evaluation folders (same settings, disjoint "
                        "episodes) into --out_dir instead of evaluating")
    parser.add_argument("--list_tasks", type=bool, default=False, help="print the tasks and exit")
    parser.add_argument("--quiet", type=bool, default=False, help="no progress bar")


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import build_parser, parse_config
    from rocket_vla.envs.runner import EvalConfig

    parser = build_parser(EvalConfig, "rocket eval", DESCRIPTION, _command_options)
    cfg, extra = parse_config(parser, EvalConfig, argv,
                              extra_keys=("checkpoint", "merge", "list_tasks", "quiet"))
    if extra["merge"]:
        from rocket_vla.envs.runner import summary_markdown
        from rocket_vla.envs.shards import merge_runs

        print(summary_markdown(merge_runs(extra["merge"], cfg.out_dir)), end="")
        print(f"# merged {len(extra['merge'])} folders into {cfg.out_dir}/episodes.jsonl")
        return 0
    from rocket_vla.envs.suites import list_tasks, setup_headless_gl

    setup_headless_gl()
    if extra["list_tasks"]:
        for suite in cfg.suites:
            for t in list_tasks(suite):
                print(f"{suite}\t{t.task_id}\t{t.language}")
        return 0
    import dataclasses

    from rocket_vla.envs.policy import factory_kwargs
    from rocket_vla.envs.runner import run_evaluation, summary_markdown

    kwargs = factory_kwargs(cfg.policy, cfg.policy_kwargs, extra["checkpoint"])
    cfg = dataclasses.replace(cfg, policy_kwargs=kwargs)
    summary = run_evaluation(cfg, progress=not extra["quiet"])
    print(summary_markdown(summary), end="")
    print(f"# results: {cfg.out_dir}/episodes.jsonl, {cfg.out_dir}/summary.json")
    return 0

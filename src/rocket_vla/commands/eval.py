"""`rocket eval`: evaluate a policy on LIBERO under the paper's protocol.

The flags are generated from :class:`rocket_vla.envs.runner.EvalConfig`, plus the
command's own :class:`Options` (merge finished runs, list tasks, ``--checkpoint``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DESCRIPTION = (
    "Run trials of LIBERO tasks (trial k starts from init state k), with the paper's step budgets "
    "(spatial 220, object 280, goal 300, libero_10 520) after 10 no-op steps, executing each action "
    "chunk open-loop. Writes one JSON line per episode to OUT/episodes.jsonl (a rerun resumes), and "
    "OUT/summary.{json,md}. --config reads YAML; --print_config shows the resolved configuration."
)
HELP = "evaluate a policy on LIBERO (paper protocol, parallel, resumable)"


@dataclass
class Options:
    """What `rocket eval` does besides evaluating (no part of the evaluation's settings)."""

    checkpoint: str | None = None
    """checkpoint path passed to the policy factory (checkpoint=PATH); a `rocket train` run
    folder means its newest step, which the evaluation pins and records: a resume must load
    the same step (pass RUN/checkpoints/step_N once the run has trained further)"""
    merge: list[str] | None = None
    """combine these finished evaluation folders (same settings, disjoint episodes) into
    --out_dir instead of evaluating: --merge DIR DIR ..."""
    list_tasks: bool = False
    """print the tasks of --suites and exit"""
    quiet: bool = False
    """no progress bar"""


def main(argv: Sequence[str]) -> int:
    from rocket_vla.config_cli import parse_command
    from rocket_vla.envs.runner import EvalConfig, summary_markdown

    cfg, opts = parse_command(argv, EvalConfig, "rocket eval", DESCRIPTION, Options)
    if opts.merge:
        from rocket_vla.envs.shards import merge_runs

        print(summary_markdown(merge_runs(opts.merge, cfg.out_dir)), end="")
        print(f"# merged {len(opts.merge)} folders into {cfg.out_dir}/episodes.jsonl")
        return 0
    from rocket_vla.envs.suites import list_tasks, setup_headless_gl

    setup_headless_gl()
    if opts.list_tasks:
        for suite in cfg.suites:
            for t in list_tasks(suite):
                print(f"{suite}\t{t.task_id}\t{t.language}")
        return 0
    import dataclasses

    from rocket_vla.envs.policy import factory_kwargs
    from rocket_vla.envs.runner import run_evaluation

    kwargs = factory_kwargs(cfg.policy, cfg.policy_kwargs, opts.checkpoint, cfg.device)
    cfg = dataclasses.replace(cfg, policy_kwargs=kwargs)
    summary = run_evaluation(cfg, progress=not opts.quiet)
    print(summary_markdown(summary), end="")
    print(f"# results: {cfg.out_dir}/episodes.jsonl, {cfg.out_dir}/summary.json")
    return 0

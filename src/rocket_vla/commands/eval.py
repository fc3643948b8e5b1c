"""`rocket eval`: evaluate a policy on LIBERO under the paper's protocol."""

from __future__ import annotations

import argparse
from typing import Any

from rocket_vla.errors import RocketError


def parse_policy_args(pairs: list[str], checkpoint: str | None) -> dict[str, Any]:
    """``--policy-arg k=v`` (JSON-typed when possible) plus ``--checkpoint`` -> factory kwargs."""
    import json

    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RocketError(
                f"--policy-arg {pair!r} is not key=value; write e.g. --policy-arg temperature=0."
            )
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    if checkpoint:
        kwargs["checkpoint"] = checkpoint
    return kwargs


def run(args: argparse.Namespace) -> int:
    from rocket_vla.config_cli import split_csv
    from rocket_vla.envs.runner import EvalConfig, run_evaluation, summary_markdown
    from rocket_vla.envs.shards import merge_runs, parse_shard
    from rocket_vla.envs.suites import list_tasks, normalize_suite, setup_headless_gl

    if args.merge:
        summary = merge_runs(args.merge, args.out)
        print(summary_markdown(summary), end="")
        print(f"# merged {len(args.merge)} folders into {args.out}/episodes.jsonl")
        return 0
    if not args.suite:
        raise RocketError("--suite is required (or --merge DIR... to combine finished runs).")
    setup_headless_gl()
    suites = [normalize_suite(s) for s in split_csv(args.suite) or []]
    if args.list_tasks:
        for suite in suites:
            for t in list_tasks(suite):
                print(f"{suite}\t{t.task_id}\t{t.language}")
        return 0
    if args.policy == "checkpoint" and not args.checkpoint:
        raise RocketError("--policy checkpoint needs --checkpoint PATH.")
    from rocket_vla.policies.student import REGISTRY

    policy_kwargs = parse_policy_args(args.policy_arg or [], args.checkpoint)
    if args.policy in REGISTRY:  # a student kind: the checkpoint must hold that kind
        policy_kwargs.setdefault("student", args.policy)
    cfg = EvalConfig(
        out_dir=args.out, suites=suites, tasks=split_csv(args.tasks), trials=args.trials,
        first_trial=args.first_trial, policy=args.policy,
        policy_kwargs=policy_kwargs,
        workers=args.workers, image_size=args.image_size, render=args.render, seed=args.seed,
        max_steps=args.max_steps, num_wait=args.num_wait, video=args.video,
        video_format=args.video_format, videos_per_task=args.videos_per_task,
        seeding=args.seeding.replace("-", "_"), env_seed=args.env_seed, gripper=args.gripper,
        actions_per_chunk=args.actions_per_chunk, on_error=args.on_error,
        shard=parse_shard(args.shard),
    )
    summary = run_evaluation(cfg, progress=not args.quiet)
    print(summary_markdown(summary), end="")
    print(f"# results: {args.out}/episodes.jsonl, {args.out}/summary.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a policy on LIBERO (paper protocol, parallel, resumable)",
        description="Run trials of LIBERO tasks (trial k starts from init state k), with the "
        "paper's step budgets (spatial 220, object 280, goal 300, libero_10 520) after 10 no-op "
        "steps, executing each action chunk open-loop. Writes one JSON line per episode to "
        "OUT/episodes.jsonl (a rerun resumes), and OUT/summary.{json,md}.",
    )
    p.add_argument("--suite", action="append", default=None,
                   help="libero_spatial | libero_object | libero_goal | libero_10, or a LIBERO-PRO "
                   "variant <suite>_swap|_object|_lan|_task (repeat or comma-separate for several; "
                   "with perturbed suites OUT/robustness.md compares them)")
    p.add_argument("--tasks", action="append", default=None,
                   help="task ids or names, comma-separated (default: all 10)")
    p.add_argument("--trials", type=int, default=50, help="trials per task (paper: 50)")
    p.add_argument("--first-trial", type=int, default=0, help="first init-state index")
    p.add_argument("--policy", default="expert",
                   help="registered policy name ('expert' = scripted experts; a student kind "
                   "such as 'minivla' or 'pi0', or 'checkpoint', with --checkpoint RUN from "
                   "`rocket train`), or 'package.module:factory'")
    p.add_argument("--checkpoint", default=None, help="checkpoint path passed to the policy factory")
    p.add_argument("--policy-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="extra keyword argument for the policy factory (repeatable)")
    p.add_argument("--out", default="runs/eval", help="run folder (results, summary, videos)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--image-size", type=int, default=256,
                   help="camera resolution (default 256, as the official clients)")
    p.add_argument("--render", choices=("decision", "every_step"), default="decision",
                   help="render cameras only when the policy reads them (default) or every step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeding", choices=("official", "per-episode"), default="official",
                   help="official: seed once, env.seed(0) per task env, trial k = k-th reset "
                   "(OpenVLA-OFT/openpi clients); per-episode: re-seed every episode")
    p.add_argument("--env-seed", type=int, default=0,
                   help="official seeding: the env.seed() of every task env (OpenVLA-OFT 0, openpi 7)")
    p.add_argument("--gripper", choices=("unit", "signed", "env"), default=None,
                   help="gripper output convention (default: what the policy declares): unit/"
                   "signed are binarised and inverted (OpenVLA-OFT), env passes through (openpi)")
    p.add_argument("--actions-per-chunk", type=int, default=None,
                   help="actions of each chunk executed before re-planning (default: the policy's "
                   "setting, else the whole chunk; OpenVLA-OFT 8, openpi 5)")
    p.add_argument("--on-error", choices=("abort", "fail"), default=None,
                   help="an exception in the policy aborts the run, or counts the episode as a "
                   "failure (openpi); default: the policy's setting, else abort")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="run only the K-th (0-based) of N contiguous slices of the (task, trial) list")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="combine finished evaluation folders (same settings, disjoint episodes) "
                   "into --out instead of evaluating")
    p.add_argument("--max-steps", type=int, default=None,
                   help="override the suite's step budget (default: paper budgets)")
    p.add_argument("--num-wait", type=int, default=10, help="no-op steps before acting")
    p.add_argument("--video", choices=("none", "failures", "successes", "all"), default="none")
    p.add_argument("--video-format", choices=("mp4", "gif"), default="mp4")
    p.add_argument("--videos-per-task", type=int, default=2)
    p.add_argument("--list-tasks", action="store_true", help="print the tasks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

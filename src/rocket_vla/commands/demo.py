"""`rocket demo`: the offline end-to-end job (collect, train baseline + ROCKET, evaluate)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from rocket_vla.demo.config import DemoConfig
    from rocket_vla.demo.run import run_demo

    preset = "quick" if args.quick else ("smoke" if args.smoke else "default")
    cfg = DemoConfig.preset(
        preset, out_dir=args.out, cache_dir=args.cache_dir, steps=args.steps, workers=args.workers,
        tasks=[int(t) for t in args.tasks.split(",")] if args.tasks else None,
        parallel_train=False if args.sequential else None, seed=args.seed,
        overwrite=args.overwrite or None,
    )
    run_demo(cfg)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline end-to-end run: LIBERO demos -> baseline vs ROCKET MiniVLA -> closed-loop "
        "evaluation",
        description="Collect LIBERO-Spatial demonstrations with the scripted experts (cached), train "
        "a baseline and a ROCKET MiniVLA with the bundled tiny teacher on the same data and seed, "
        "evaluate both closed-loop, and write a summary table and plots to the run folder.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller run (about 7 minutes on 2 cores)")
    size.add_argument("--smoke", action="store_true", help="smallest run exercising every stage (tests)")
    p.add_argument("--out", default=None, help="run folder (default runs/demo)")
    p.add_argument("--cache-dir", default=None,
                   help="where collected demos are cached (default .rocket_cache)")
    p.add_argument("--tasks", default=None, help="comma-separated libero_spatial task ids")
    p.add_argument("--steps", type=int, default=None, help="training steps per variant")
    p.add_argument("--workers", type=int, default=None, help="parallel simulator workers")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of collection, training and evaluation (default 0)")
    p.add_argument("--sequential", action="store_true",
                   help="train the variants one after the other instead of one process each")
    p.add_argument("--overwrite", action="store_true",
                   help="redo a run folder made with other settings or code instead of refusing it")
    p.set_defaults(func=run)

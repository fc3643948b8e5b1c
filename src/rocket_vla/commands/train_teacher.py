"""`rocket train-teacher`: train the small geometry teacher on collected LIBERO frames.

Thin wiring around :mod:`rocket_vla.teachers.geometry`: parse options into a
:class:`GeometryTrainConfig`, train (the teacher and, unless disabled, its single-view
variant), evaluate on held-out episodes against the constant-depth predictor, and write
``model.safetensors`` / ``config.json`` / ``metrics.json`` / ``MODEL_CARD.md`` under
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rocket_vla.errors import RocketError


def register(sub: argparse._SubParsersAction) -> None:
    defaults = _defaults()
    p = sub.add_parser(
        "train-teacher",
        help="train the small geometry teacher (depth + world points) on collected frames",
        description="Train a small VGGT-architecture model to predict per-pixel depth and "
        "world points of the agent-view and wrist cameras (a 2-view input per step) from "
        "frames collected with `rocket collect` (which records depth and camera "
        "parameters). Evaluates on held-out episodes against the best constant depth and a "
        "single-view variant, and writes model.safetensors, config.json and metrics.json.",
    )
    p.add_argument("--data", required=True, help="folder (or file) of collected episodes")
    p.add_argument("--out", default="runs/tiny_teacher", help="output folder")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="frame pairs per step")
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--holdout", type=float, default=defaults.holdout_fraction,
                   help="fraction of EPISODES held out for evaluation")
    p.add_argument("--input-size", type=int, default=defaults.input_size,
                   help="native teacher input side (multiple of 14)")
    p.add_argument("--small-size", type=int, default=defaults.small_size,
                   help="second input side trained every --small-every steps")
    p.add_argument("--small-every", type=int, default=defaults.small_every,
                   help="0 trains at --input-size only")
    p.add_argument("--target-size", type=int, default=defaults.target_size,
                   help="side of the predicted/scored depth and point maps")
    p.add_argument("--embed-dim", type=int, default=defaults.embed_dim)
    p.add_argument("--depth", type=int, default=defaults.depth, help="frame/global block pairs")
    p.add_argument("--heads", type=int, default=defaults.num_heads)
    p.add_argument("--patch-embed-depth", type=int, default=defaults.patch_embed_depth)
    p.add_argument("--head-dim", type=int, default=defaults.head_dim)
    p.add_argument("--no-single-view", action="store_true",
                   help="skip training the single-view comparison model")
    p.add_argument("--sequential", action="store_true",
                   help="train the single-view variant after the teacher instead of at the same "
                   "time in a second process")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads per model (0 = torch's default, or half the cores each "
                   "when the two models train at the same time)")
    p.set_defaults(func=run)


def _defaults():
    from rocket_vla.teachers.geometry import GeometryTrainConfig

    return GeometryTrainConfig()


def run(args: argparse.Namespace) -> int:
    import torch

    from rocket_vla.data.episodes import list_episode_files
    from rocket_vla.teachers.geometry import (
        GeometryTrainConfig,
        render_model_card,
        save_run,
        train_geometry,
    )

    data = Path(args.data)
    if not data.exists():
        raise RocketError(
            f"data {data} does not exist; collect frames with `rocket collect --out_dir {data}`."
        )
    list_episode_files(data)  # a folder without episodes fails here, before any work
    parallel = not args.sequential and not args.no_single_view
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    elif parallel:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    cfg = GeometryTrainConfig(
        embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads,
        patch_embed_depth=args.patch_embed_depth, head_dim=args.head_dim,
        input_size=args.input_size, small_size=args.small_size, small_every=args.small_every,
        target_size=args.target_size, holdout_fraction=args.holdout, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
    )
    run_ = train_geometry(data, cfg, single_view_baseline=not args.no_single_view, parallel=parallel,
                          progress=lambda msg: print(msg, flush=True))
    out = save_run(run_, args.out, command=["rocket", *sys.argv[1:]] if sys.argv else None)
    (out / "MODEL_CARD.md").write_text(render_model_card(out, data))
    print(json.dumps(_summary(run_.metrics), indent=2))
    print(f"wrote {out / 'model.safetensors'}, config.json, metrics.json and MODEL_CARD.md")
    return 0


def _summary(metrics: dict) -> dict:
    """Held-out pooled depth errors of each predictor, and where the models place the wrist
    camera's surfaces in the scene (world-point error, metres), for the terminal."""
    rows = {"constant_depth": metrics["constant_depth"]["heldout"]["all"],
            "teacher": metrics["teacher"]["heldout"]["all"]}
    if "single_view" in metrics:
        rows["single_view"] = metrics["single_view"]["heldout"]["all"]
    summary = {k: {m: round(v[m], 4) for m in ("abs_rel", "rmse")} for k, v in rows.items()}
    for key in ("teacher", "single_view"):
        if key in summary:
            wrist = metrics[key]["heldout"]["eye_in_hand"]
            summary[key]["wrist_point_error"] = round(wrist["point_error"], 4)
    return summary

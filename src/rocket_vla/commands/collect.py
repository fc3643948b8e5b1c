"""`rocket collect`: record scripted-expert demonstrations in the LIBERO HDF5 layout."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from rocket_vla.config_cli import split_csv
    from rocket_vla.envs.collect import CollectConfig, run_collection
    from rocket_vla.envs.suites import setup_headless_gl

    setup_headless_gl()
    cfg = CollectConfig(
        out_dir=args.out, suites=split_csv(args.suite) or [], tasks=split_csv(args.tasks),
        init_states=args.init_states, first_init=args.first_init, variations=args.variations,
        variation_xy=args.variation_xy, frame_stride=args.frame_stride,
        image_size=args.image_size, depth=not args.no_depth, workers=args.workers,
        seed=args.seed, max_steps=args.max_steps, after_success=args.after_success,
    )
    counts = run_collection(cfg, progress=not args.quiet)
    total_kept = sum(c["kept"] for c in counts.values())
    total = sum(c["attempts"] for c in counts.values())
    for key, c in sorted(counts.items()):
        print(f"{key}\tkept {c['kept']}/{c['attempts']}")
    print(f"# {total_kept}/{total} successful demonstrations under {args.out} "
          "(read them with rocket_vla.data.episodes.read_episodes)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="collect scripted-expert demonstrations (LIBERO HDF5 + depth + cameras)",
        description="Run the scripted experts from official init states (and randomised "
        "variations), keep successful episodes, and write each as a LIBERO-layout HDF5 file "
        "with RGB, metric depth and camera intrinsics/extrinsics every --frame-stride steps. "
        "Resumable: a rerun skips attempts already logged in OUT/attempts.jsonl.",
    )
    p.add_argument("--suite", action="append", required=True,
                   help="libero_spatial | libero_object | libero_goal (comma-separate for several)")
    p.add_argument("--tasks", action="append", default=None, help="task ids or names (default: all)")
    p.add_argument("--init-states", type=int, default=50, help="official init states per task")
    p.add_argument("--first-init", type=int, default=0)
    p.add_argument("--variations", type=int, default=0,
                   help="randomised variations per init state (objects shifted, arm jittered)")
    p.add_argument("--variation-xy", type=float, default=0.02, help="object shift range (metres)")
    p.add_argument("--frame-stride", type=int, default=1, help="render frames every k steps")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--no-depth", action="store_true", help="skip depth maps")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--after-success", type=int, default=16,
                   help="steps recorded after the task is solved (the release and retreat)")
    p.add_argument("--out", default="runs/demos", help="dataset folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)

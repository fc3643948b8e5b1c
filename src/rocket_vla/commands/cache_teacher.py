"""`rocket cache-teacher`: compute teacher features for every frame of a dataset, once.

Wiring only: flags -> :func:`rocket_vla.teachers.fill.fill_from_dataset` (reading episodes,
building the teacher, filling) or :meth:`FeatureCache.verify` for ``--check``.
"""

from __future__ import annotations

import argparse

from rocket_vla.errors import RocketError
from rocket_vla.teachers.build import KINDS, TeacherConfig, parse_size
from rocket_vla.teachers.cache import FeatureCache
from rocket_vla.teachers.fill import DEFAULT_CAMERAS, PAPER_TEACHER_LAYERS, fill_from_dataset


def _parse_layers(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RocketError(f"layers {text!r} are not comma-separated integers, e.g. 3,5,24.") from None


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise RocketError(f"shard {text!r} is not INDEX/COUNT, e.g. 0/4.") from None
    return index, count


def run(args: argparse.Namespace) -> int:
    cameras = [c for c in args.cameras.split(",") if c]
    layers = _parse_layers(args.layers)
    shard = _parse_shard(args.shard)
    if args.check:
        cache = FeatureCache.open(args.out)
        bad = cache.verify()
        for name, problem in bad.items():
            print(f"{name}: {problem}")
        print(f"checked {args.out}: {len(bad)} bad entries")
        return 1 if bad else 0
    if not args.dataset:
        raise RocketError("no dataset was given; pass the episode file or folder to cache.")
    teacher_config = TeacherConfig(
        kind=args.teacher, path=args.teacher_path, input_size=parse_size(args.input_size),
        autocast=args.autocast, device=args.device, vggt_size=args.vggt_size, seed=args.seed,
    )
    cache, report = fill_from_dataset(
        args.dataset, args.out, teacher_config, layers=layers, cameras=cameras,
        batch_size=args.batch_size, shard=shard, overwrite=args.overwrite,
        verify_existing=args.verify, log=print,
    )
    for episode, problem in report.repaired.items():
        print(f"recomputed episode {episode}: {problem}")
    print(f"{cache.root}: {report.summary()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache-teacher",
        help="precompute teacher features for a dataset (read by training instead of the teacher)",
        description="Run the frozen teacher once over every frame of a dataset and store the "
        "chosen layers' full-frame patch features (float16). Resumable; damaged or stale "
        "entries are detected by checksums and fingerprints and recomputed.",
    )
    p.add_argument("dataset", nargs="?", default="", help="episode file or folder")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--teacher", choices=KINDS, default="vggt")
    p.add_argument("--teacher-path", help="VGGT model.pt/.safetensors, or a transformers folder")
    p.add_argument("--vggt-size", choices=("1b", "tiny"), default="1b")
    p.add_argument("--seed", type=int, default=0, help="weights seed of --teacher vggt-random")
    p.add_argument("--layers", default=",".join(map(str, PAPER_TEACHER_LAYERS)),
                   help="teacher layers, index k = after block k, -1 = last (default: paper's)")
    p.add_argument("--cameras", default=",".join(DEFAULT_CAMERAS),
                   help="views fed together to the teacher, in the student's image order")
    p.add_argument("--input-size", default="",
                   help="resize frames to HxW for the teacher (sides multiple of its patch)")
    p.add_argument("--batch-size", type=int, default=4, help="steps per teacher call")
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", choices=("auto", "off", "bfloat16", "float16"), default="auto")
    p.add_argument("--shard", default="0/1", help="INDEX/COUNT: fill only this share of episodes")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="re-checksum existing entries before skipping them (default; --no-verify "
                   "trusts their headers)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cache built for another teacher, layers or dataset")
    p.add_argument("--check", action="store_true",
                   help="only verify the cache at --out and list damaged or stale entries")
    p.set_defaults(func=run)

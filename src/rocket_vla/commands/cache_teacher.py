"""`rocket cache-teacher`: compute teacher features for every frame of a dataset, once.

Thin wiring: read episodes, build the teacher, hand ``(episode, frames, steps)`` items to
:func:`rocket_vla.teachers.cache.fill_cache`. Episode ids are the episodes' positions in
``read_episodes`` order as strings (``"0"``, ``"1"``, ...) -- the ``episode`` index the
training dataset yields -- and the dataset fingerprint is the content hash of the dataset
files, so a changed dataset never reads features of the old one.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import Teacher
from rocket_vla.teachers.build import KINDS, TeacherConfig, build_teacher, parse_size
from rocket_vla.teachers.cache import (
    FeatureCache,
    FillReport,
    FramesSource,
    fill_cache,
    fingerprint_files,
    spec_for,
)

# The paper's VGGT layers (0-based 2, 4, ..., 18, 23) in our convention (after block k).
PAPER_TEACHER_LAYERS = (3, 5, 7, 9, 11, 13, 15, 17, 19, 24)
DEFAULT_CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")

Item = tuple[str, FramesSource, Sequence[int]]


def cache_episodes(
    teacher: Teacher,
    items: Iterable[Item],
    out: str | Path,
    *,
    layers: Sequence[int],
    cameras: Sequence[str],
    dataset_fingerprint: str,
    frame_size: tuple[int, int],
    batch_size: int = 4,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    verify_existing: bool = False,
    progress: bool = True,
    total: int | None = None,
) -> tuple[FeatureCache, FillReport]:
    """Create (or resume) the cache at ``out`` and fill it from ``items``.

    The core of the command, independent of any dataset class: ``items`` yield
    ``(episode_id, frames_by_camera, step_indices)`` with frames ``[N, H, W, 3]`` uint8.
    """
    spec = spec_for(teacher, layers, cameras, dataset_fingerprint, frame_size)
    cache = FeatureCache.create(out, spec, overwrite=overwrite)
    report = fill_cache(
        cache, teacher, items, batch_size=batch_size, shard=shard,
        verify_existing=verify_existing, progress=progress, total=total,
    )
    return cache, report


def episode_items(episodes: Iterable[object], cameras: Sequence[str]) -> Iterator[Item]:
    """``(str(index), frames, steps)`` for LIBERO-layout episodes.

    Frames are ``obs[camera]`` rows; ``steps`` is the episode's ``frame_index`` (the step
    of each image row; every step when absent), so entries are keyed by true step.
    """
    for index, episode in enumerate(episodes):
        obs = episode.obs  # type: ignore[attr-defined]
        frames = {c: _as_tensor(obs[c]) for c in cameras if c in obs}
        rows = len(next(iter(frames.values()))) if frames else 0
        frame_index = getattr(episode, "frame_index", None)
        steps = [int(v) for v in frame_index] if frame_index is not None else list(range(rows))
        yield str(index), frames, steps


def _as_tensor(array: object):
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


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
    try:
        from rocket_vla.data.episodes import iter_episodes, list_episode_files
    except ImportError as err:
        raise RocketError(
            "the episode reader (rocket_vla.data.episodes) is not available in this install; "
            "update rocket-vla."
        ) from err
    files = list_episode_files(args.dataset)
    stream = iter_episodes(args.dataset)  # one episode in memory at a time
    first = next(stream, None)
    if first is None:
        raise RocketError(f"dataset {args.dataset} has no episodes; collect demonstrations first.")
    missing = [c for c in cameras if c not in first.obs]
    if missing:
        raise RocketError(
            f"episodes have no {missing} images (have {sorted(first.obs)}); pick --cameras."
        )
    frame_size = tuple(first.obs[cameras[0]].shape[1:3])

    teacher = build_teacher(TeacherConfig(
        kind=args.teacher, path=args.teacher_path, input_size=parse_size(args.input_size),
        autocast=args.autocast, device=args.device, vggt_size=args.vggt_size, seed=args.seed,
    ))
    resolved = teacher.resolve_layers(layers)
    print(f"# teacher {teacher.fingerprint()}: layers {resolved} (index k = after block k), "
          f"grid {teacher.patch_grid(*frame_size)} per view, views {cameras}")
    cache, report = cache_episodes(
        teacher, episode_items(itertools.chain([first], stream), cameras), args.out,
        layers=resolved, cameras=cameras, dataset_fingerprint=fingerprint_files(files),
        frame_size=frame_size, batch_size=args.batch_size, shard=shard,
        overwrite=args.overwrite, verify_existing=args.verify,
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
    p.add_argument("--verify", action="store_true",
                   help="re-checksum existing entries before skipping them")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cache built for another teacher, layers or dataset")
    p.add_argument("--check", action="store_true",
                   help="only verify the cache at --out and list damaged or stale entries")
    p.set_defaults(func=run)

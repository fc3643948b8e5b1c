"""Fill a teacher cache from a dataset: what `rocket cache-teacher` and the demo both run.

Episode ids are the episodes' positions in ``read_episodes`` order as strings (``"0"``,
``"1"``, ...) -- the ``episode`` index the training dataset yields -- and the dataset
fingerprint is the content hash of the dataset files, so a changed dataset never reads
features of the old one (training compares it before the first step).

A rerun re-checksums existing entries by default (``verify_existing``): a damaged entry
is recomputed instead of being skipped because its header looks fine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import Teacher
from rocket_vla.teachers.build import TeacherConfig, build_teacher
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


@dataclass
class CacheFillConfig:
    """One `rocket cache-teacher` run; its flags are generated from these fields."""

    dataset: str = ""
    """episode file or folder whose frames are cached"""
    out_dir: str = "runs/teacher_cache"
    """cache directory"""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """the teacher (--teacher.kind, --teacher.path, ...)"""
    layers: list[int] = field(default_factory=lambda: list(PAPER_TEACHER_LAYERS))
    """teacher layers, index k = after block k, -1 = last (default: the paper's)"""
    cameras: list[str] = field(default_factory=lambda: list(DEFAULT_CAMERAS))
    """views fed together to the teacher, in the student's image order"""
    batch_size: int = 4
    """steps per teacher call"""
    shard: tuple[int, int] | str = (0, 1)
    """INDEX/COUNT: fill only this share of the episodes"""
    verify: bool = True
    """re-checksum existing entries before skipping them (false trusts their headers)"""
    overwrite: bool = False
    """replace a cache built for another teacher, layers or dataset"""

    def __post_init__(self) -> None:
        if isinstance(self.shard, str):
            index, _, count = self.shard.partition("/")
            try:
                self.shard = (int(index), int(count))
            except ValueError:
                raise RocketError(f"shard {self.shard!r} is not INDEX/COUNT, e.g. 0/4.") from None
        if self.batch_size < 1:
            raise RocketError(f"--batch_size must be at least 1, got {self.batch_size}.")


def fill_from_config(cfg: CacheFillConfig,
                     log: Callable[[str], None] = print) -> tuple[FeatureCache, FillReport]:
    """:func:`fill_from_dataset` with the settings of one `rocket cache-teacher` run."""
    if not cfg.dataset:
        raise RocketError("no dataset was given; pass --dataset (the episode file or folder to cache).")
    return fill_from_dataset(
        cfg.dataset, cfg.out_dir, cfg.teacher, layers=cfg.layers, cameras=cfg.cameras,
        batch_size=cfg.batch_size, shard=tuple(cfg.shard), overwrite=cfg.overwrite,  # type: ignore[arg-type]
        verify_existing=cfg.verify, log=log,
    )


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
    verify_existing: bool = True,
    progress: bool = True,
    total: int | None = None,
) -> tuple[FeatureCache, FillReport]:
    """Create (or resume) the cache at ``out`` and fill it from ``items``.

    Independent of any dataset class: ``items`` yield ``(episode_id, frames_by_camera,
    step_indices)`` with frames ``[N, H, W, 3]`` uint8.
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


def fill_from_dataset(
    dataset: str | Path,
    out: str | Path,
    teacher_config: TeacherConfig,
    *,
    layers: Sequence[int],
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    batch_size: int = 4,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    verify_existing: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[FeatureCache, FillReport]:
    """Read a LIBERO-layout dataset one episode at a time and cache the teacher's features.

    Checks that every camera exists before building the teacher (which may take a while
    for VGGT-1B), and logs the resolved layers and grid.
    """
    from rocket_vla.data.episodes import iter_episodes, list_episode_files

    if not cameras:
        raise RocketError("no cameras were given; name at least one view, e.g. agentview_rgb.")
    files = list_episode_files(dataset)
    stream = iter_episodes(dataset)  # one episode in memory at a time
    first = next(stream, None)
    if first is None:
        raise RocketError(f"dataset {dataset} has no episodes; collect demonstrations first.")
    missing = [c for c in cameras if c not in first.obs]
    if missing:
        raise RocketError(
            f"episodes have no {missing} images (have {sorted(first.obs)}); pick --cameras."
        )
    frame_size = tuple(first.obs[cameras[0]].shape[1:3])
    teacher = build_teacher(teacher_config)
    resolved = teacher.resolve_layers(list(layers))
    log(f"# teacher {teacher.fingerprint()}: layers {resolved} (index k = after block k), "
        f"grid {teacher.patch_grid(*frame_size)} per view, views {list(cameras)}")
    return cache_episodes(
        teacher, episode_items(itertools.chain([first], stream), cameras), out,
        layers=resolved, cameras=cameras, dataset_fingerprint=fingerprint_files(files),
        frame_size=(int(frame_size[0]), int(frame_size[1])), batch_size=batch_size, shard=shard,
        overwrite=overwrite, verify_existing=verify_existing, progress=progress,
    )

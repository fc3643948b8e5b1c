"""Fill a teacher cache: run the teacher once per dataset frame and store its features.

This is what `rocket cache-teacher` and the demo both run. :func:`fill_cache` knows nothing
about dataset classes: it takes any iterable of ``(episode_id, frames)`` where ``frames``
maps camera name to ``[T, H, W, 3]`` uint8 (or ``[T, 3, H, W]`` float in [0, 1]) -- or a
zero-argument callable returning that mapping, so episodes already cached are never loaded.
Writes go to a temporary file renamed into place, so an interrupted fill leaves either the
old entry or the new one, and a rerun resumes where it stopped.

:func:`fill_from_dataset` feeds it a LIBERO-layout dataset. Episode ids are the episodes'
positions in ``read_episodes`` order as strings (``"0"``, ``"1"``, ...) -- the ``episode``
index the training dataset yields -- and the dataset fingerprint is the content hash of the
dataset files, so a changed dataset never reads features of the old one (training compares
it before the first step).

A rerun re-checksums existing entries by default (``verify_existing``): a damaged entry
is recomputed instead of being skipped because its header looks fine.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import Teacher
from rocket_vla.teachers.build import TeacherConfig, build_teacher
from rocket_vla.teachers.cache import FeatureCache, fingerprint_files
from rocket_vla.teachers.cache_files import disk_full_is_one_sentence
from rocket_vla.teachers.cache_format import STORE_DTYPE, spec_for

# The paper's VGGT layers (0-based 2, 4, ..., 18, 23) in our convention (after block k).
PAPER_TEACHER_LAYERS = (3, 5, 7, 9, 11, 13, 15, 17, 19, 24)
DEFAULT_CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")

Frames = Mapping[str, torch.Tensor]
FramesSource = Frames | Callable[[], Frames]

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


def _as_tensor(array: object) -> torch.Tensor:
    import numpy as np

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


@dataclass
class FillReport:
    """What a fill did; ``repaired`` lists entries found damaged or stale and recomputed."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    repaired: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (
            f"wrote {len(self.written)} episodes ({self.frames} steps, {rate:.2f} steps/s), "
            f"skipped {len(self.skipped)} already cached, recomputed {len(self.repaired)} "
            "damaged or stale"
        )


def frames_to_views(frames: Frames, cameras: Sequence[str]) -> torch.Tensor:
    """Stack per-camera frames into the teacher layout [T, S, 3, H, W] float in [0, 1]."""
    views = []
    for camera in cameras:
        if camera not in frames:
            raise RocketError(
                f"episode has no camera {camera!r} (has {sorted(frames)}); pick cameras that "
                "every episode records."
            )
        x = torch.as_tensor(frames[camera])
        if x.ndim != 4:
            raise RocketError(
                f"camera {camera!r} frames must be [T, H, W, 3] or [T, 3, H, W], got "
                f"{tuple(x.shape)}."
            )
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        if x.shape[0] == 0:
            raise RocketError(f"camera {camera!r} has no frames; drop empty episodes first.")
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        views.append(x)
    if len({tuple(v.shape) for v in views}) != 1:
        raise RocketError(
            f"cameras {list(cameras)} have different frame shapes "
            f"{[tuple(v.shape) for v in views]}; resize them to one size first."
        )
    return torch.stack(views, dim=1)


def in_shard(episode: str, shard: tuple[int, int]) -> bool:
    """Stable assignment of episodes to ``shard = (index, count)`` (for parallel fills)."""
    index, count = shard
    digest = hashlib.blake2b(episode.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count == index


def fill_cache(
    cache: FeatureCache,
    teacher: Teacher,
    items: Iterable[tuple[str, FramesSource] | tuple[str, FramesSource, Sequence[int]]],
    *,
    batch_size: int = 8,
    shard: tuple[int, int] = (0, 1),
    verify_existing: bool = False,
    progress: bool = True,
    total: int | None = None,
) -> FillReport:
    """Compute and store features for every episode not yet (validly) cached.

    Each item is ``(episode_id, frames)`` or ``(episode_id, frames, steps)``; ``steps``
    are the step indices of the stored frames (episodes that keep images only once per
    action chunk), ``0..T-1`` by default.

    Resumable: episodes with a valid entry are skipped without loading their frames.
    Damaged or stale entries are recomputed and listed in the report. ``shard`` splits
    the episodes between processes (one per GPU, say) by a stable hash of their id;
    One background thread checksums and writes each batch while the teacher computes
    the next (a single thread, because a file is written in step order).
    """
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise RocketError(f"shard {index}/{count} is invalid; use an index in 0..count-1.")
    if batch_size < 1:
        raise RocketError(f"batch size {batch_size} must be at least 1.")
    report = FillReport()
    bar = _progress(total, progress)
    start = time.perf_counter()
    try:
        with disk_full_is_one_sentence(cache.root), ThreadPoolExecutor(max_workers=1) as pool:
            for item in items:
                episode, source, *rest = item
                if not in_shard(episode, shard):
                    continue
                status = cache.check(episode, verify=verify_existing)
                if status == "ok":
                    report.skipped.append(episode)
                    bar.update(1)
                    continue
                if status != "missing":
                    report.repaired[episode] = status
                frames = source() if callable(source) else source
                views = frames_to_views(frames, cache.spec.cameras)
                steps = [int(v) for v in rest[0]] if rest else list(range(views.shape[0]))
                if len(steps) != views.shape[0]:
                    raise RocketError(
                        f"episode {episode!r} has {views.shape[0]} frames but {len(steps)} step "
                        "indices; give one step index per stored frame."
                    )
                _write_episode(cache, teacher, pool, episode, views, steps, batch_size)
                report.written.append(episode)
                report.frames += len(steps)
                bar.update(1)
                bar.set_postfix(steps=report.frames)
    finally:
        bar.close()  # before any error message, which would else share the bar's line
    report.seconds = time.perf_counter() - start
    return report


def _write_episode(cache: FeatureCache, teacher: Teacher, pool: ThreadPoolExecutor, episode: str,
                   views: torch.Tensor, steps: list[int], batch_size: int) -> None:
    """Run the teacher over one episode's views and commit its entry; the pool's thread
    checksums and writes each batch while the teacher computes the next. On any error the
    writes in flight finish first, then the temp file is removed."""
    writer = cache.writer(episode, steps)
    pending: list[Future] = []
    try:
        for lo in range(0, views.shape[0], batch_size):
            feats = teacher.features(views[lo:lo + batch_size], cache.spec.layers)
            feats = [f.to("cpu", STORE_DTYPE) for f in feats]
            pending.append(pool.submit(writer.add, feats))
            _drain(pending, limit=2)
        _drain(pending, limit=0)
        writer.commit()
    finally:
        _settle(pending)
        writer.discard()


def _drain(pending: list[Future], limit: int) -> list[Future]:
    """Wait until at most ``limit`` writes are in flight (bounds memory); re-raise errors."""
    while len(pending) > limit:
        pending.pop(0).result()
    return pending


def _settle(pending: list[Future]) -> None:
    """Wait for every write in flight without raising: on the way out of a failed episode
    the first error is already propagating, and the temp file may be removed only once no
    write to it is running."""
    wait(pending)
    pending.clear()


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: object) -> None: ...
    def close(self) -> None: ...


def _progress(total: int | None, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety; the fill itself needs no extra
        return _NoBar()
    return tqdm(total=total, unit="episode", desc="teacher cache")

"""The demonstrations and teacher features the demo and the study train on: scripted-expert
collection and the teacher-feature cache. Each writes under a folder keyed by what it
depends on and is reused on a rerun while that is unchanged."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from rocket_vla.pipeline.config import DataConfig
from rocket_vla.pipeline.log import Log, print_log


def dataset_dirs(data: DataConfig, cache_dir: str) -> tuple[Path, Path]:
    """Cache folders keyed by everything that changes the collected data -- the settings, the
    dataset format and the code (experts, collection and simulator wrappers change what a
    demonstration holds, so demonstrations of other code never stand in for new ones)."""
    from rocket_vla.data.episodes import FORMAT_VERSION
    from rocket_vla.fingerprint import compared_code_version

    key = json.dumps([FORMAT_VERSION, data.suite, data.tasks, data.demo_first_init, data.train_demos,
                      data.heldout_demos, data.image_size, data.frame_stride, data.seed, data.after_success,
                      compared_code_version()])
    root = Path(cache_dir) / "datasets" / hashlib.sha1(key.encode()).hexdigest()[:12]
    return root / "train", root / "heldout"


def collect(data: DataConfig, cache_dir: str, workers: int, log: Log = print_log) -> tuple[Path, Path]:
    """Scripted-expert demonstrations: a training split and a held-out split (disjoint inits)."""
    from rocket_vla.envs.collect import CollectConfig, run_collection

    train_dir, heldout_dir = dataset_dirs(data, cache_dir)
    splits = ((train_dir, data.demo_first_init, data.train_demos),
              (heldout_dir, data.demo_first_init + data.train_demos, data.heldout_demos))
    for out, first, count in splits:
        log(f"collecting {count} demos/task from init states {first}..{first + count - 1} -> {out}")
        run_collection(CollectConfig(
            out_dir=str(out), suites=[data.suite], tasks=[str(t) for t in data.tasks], init_states=count,
            first_init=first, frame_stride=data.frame_stride, image_size=data.image_size, depth=True,
            workers=workers, seed=data.seed, after_success=data.after_success,
        ))
    return train_dir, heldout_dir


def data_fingerprint(train_dir: Path, heldout_dir: Path) -> dict[str, str]:
    """Content fingerprints of both splits (what a resumed run compares)."""
    from rocket_vla.data.episodes import list_episode_files
    from rocket_vla.teachers.cache import fingerprint_files

    return {name: fingerprint_files(list_episode_files(folder))
            for name, folder in (("train", train_dir), ("heldout", heldout_dir))}


def teacher_fingerprint(spec: str, size: int) -> str:
    """The fingerprint of the teacher a spec names (``tiny`` or a path) at input side ``size``:
    its weights, not its name."""
    from rocket_vla.teachers.build import teacher_from_spec

    return teacher_from_spec(spec, size).fingerprint()


def cache_teacher(spec: str, size: int, dataset: Path, frame_size: int, log: Log = print_log,
                  episodes: list[Any] | None = None) -> Path:
    """Teacher features of every training frame, computed once (``rocket cache-teacher``).

    Why: a live teacher runs on every sample of every step -- tens of thousands of forward
    passes for a dataset of a couple of thousand frames. Cached full-frame features are
    read instead and cropped like the student's input by the aligner's crop-box
    resampling. Kept next to the dataset, keyed by the teacher's fingerprint, so it is
    reused while data and teacher are unchanged (and rebuilt, never misread, otherwise).
    ``spec``/``size``: the teacher as TrainConfig names it; ``episodes``: the dataset
    already read, if the caller has it.
    """
    from rocket_vla.data.episodes import list_episode_files, read_episodes
    from rocket_vla.teachers.build import teacher_from_spec
    from rocket_vla.teachers.cache import fingerprint_files
    from rocket_vla.teachers.fill import DEFAULT_CAMERAS, cache_episodes, episode_items

    teacher = teacher_from_spec(spec, size)
    out = dataset.parent / f"teacher_{hashlib.sha1(teacher.fingerprint().encode()).hexdigest()[:12]}"
    episodes = read_episodes(dataset) if episodes is None else episodes
    start = time.perf_counter()
    _, report = cache_episodes(
        teacher, episode_items(episodes, DEFAULT_CAMERAS), out,
        layers=list(range(1, teacher.num_layers + 1)), cameras=DEFAULT_CAMERAS,
        dataset_fingerprint=fingerprint_files(list_episode_files(dataset)),
        frame_size=(frame_size, frame_size), progress=False,
    )
    log(f"teacher features ({spec}, all {teacher.num_layers} layers): {report.frames} frames "
        f"cached, {len(report.skipped)} episodes already cached, {time.perf_counter() - start:.0f} s "
        f"-> {out}")
    return out

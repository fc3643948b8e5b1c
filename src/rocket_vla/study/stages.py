"""Stages shared by the demo and the study: scripted-expert collection, the teacher-feature
cache and one training run. Each writes under a folder keyed by what it depends on and is
reused on a rerun while that is unchanged."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

Log = Callable[[str], None]


def stamped_log(tag: str) -> Log:
    """A log that prints each message as a time-stamped line on stdout, tagged ``[tag HH:MM:SS]``."""

    def log(msg: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    return log


#: The default log of the study's stages.
print_log = stamped_log("rocket")


class DataSettings(Protocol):
    """What the collection and teacher-cache stages read from a demo or study config."""

    cache_dir: str
    suite: str
    tasks: list[int]
    demo_first_init: int
    train_demos: int
    heldout_demos: int
    image_size: int
    frame_stride: int
    seed: int
    after_success: int
    workers: int
    teacher: str
    cache_teacher: bool
    variants: list[str]


def dataset_dirs(cfg: DataSettings) -> tuple[Path, Path]:
    """Cache folders keyed by everything that changes the collected data -- the settings, the
    dataset format and the code (experts, collection and simulator wrappers change what a
    demonstration holds; a key of settings alone once let older code's demonstrations stand in
    for new ones)."""
    from rocket_vla.data.episodes import FORMAT_VERSION
    from rocket_vla.fingerprint import compared_code_version

    key = json.dumps([FORMAT_VERSION, cfg.suite, cfg.tasks, cfg.demo_first_init, cfg.train_demos,
                      cfg.heldout_demos, cfg.image_size, cfg.frame_stride, cfg.seed, cfg.after_success,
                      compared_code_version()])
    root = Path(cfg.cache_dir) / "datasets" / hashlib.sha1(key.encode()).hexdigest()[:12]
    return root / "train", root / "heldout"


def collect(cfg: DataSettings, log: Log = print_log) -> tuple[Path, Path]:
    """Scripted-expert demonstrations: a training split and a held-out split (disjoint inits)."""
    from rocket_vla.envs.collect import CollectConfig, run_collection

    train_dir, heldout_dir = dataset_dirs(cfg)
    splits = ((train_dir, cfg.demo_first_init, cfg.train_demos),
              (heldout_dir, cfg.demo_first_init + cfg.train_demos, cfg.heldout_demos))
    for out, first, count in splits:
        log(f"collecting {count} demos/task from init states {first}..{first + count - 1} -> {out}")
        run_collection(CollectConfig(
            out_dir=str(out), suites=[cfg.suite], tasks=[str(t) for t in cfg.tasks], init_states=count,
            first_init=first, frame_stride=cfg.frame_stride, image_size=cfg.image_size, depth=True,
            workers=cfg.workers, seed=cfg.seed, after_success=cfg.after_success,
        ))
    return train_dir, heldout_dir


def data_fingerprint(train_dir: Path, heldout_dir: Path) -> dict[str, str]:
    """Content fingerprints of both splits (what a resumed run compares)."""
    from rocket_vla.data.episodes import list_episode_files
    from rocket_vla.teachers.cache import fingerprint_files

    return {name: fingerprint_files(list_episode_files(folder))
            for name, folder in (("train", train_dir), ("heldout", heldout_dir))}


def teacher_fingerprint(spec: str) -> str:
    """The fingerprint of the teacher a spec names (``tiny`` or a path): its weights, not its name."""
    from rocket_vla.teachers.build import teacher_from_spec
    from rocket_vla.train.config import TrainConfig

    return teacher_from_spec(spec, TrainConfig.teacher_size).fingerprint()


def cache_teacher(cfg: DataSettings, dataset: Path, log: Log = print_log,
                  episodes: list[Any] | None = None) -> Path | None:
    """Teacher features of every training frame, computed once (``rocket cache-teacher``).

    Why: a live teacher runs on every sample of every step -- tens of thousands of forward
    passes for a dataset of a couple of thousand frames. Cached full-frame features are
    read instead and cropped like the student's input by the aligner's crop-box
    resampling. Kept next to the dataset, keyed by the teacher's fingerprint, so it is
    reused while data and teacher are unchanged (and rebuilt, never misread, otherwise).
    ``episodes``: the dataset already read, if the caller has it.
    """
    from rocket_vla.data.episodes import list_episode_files, read_episodes
    from rocket_vla.teachers.build import teacher_from_spec
    from rocket_vla.teachers.cache import fingerprint_files
    from rocket_vla.teachers.fill import DEFAULT_CAMERAS, cache_episodes, episode_items
    from rocket_vla.train.config import TrainConfig

    if not cfg.cache_teacher or all(v == "baseline" for v in cfg.variants):
        return None
    teacher = teacher_from_spec(cfg.teacher, TrainConfig.teacher_size)
    out = dataset.parent / f"teacher_{hashlib.sha1(teacher.fingerprint().encode()).hexdigest()[:12]}"
    episodes = read_episodes(dataset) if episodes is None else episodes
    start = time.perf_counter()
    _, report = cache_episodes(
        teacher, episode_items(episodes, DEFAULT_CAMERAS), out,
        layers=list(range(1, teacher.num_layers + 1)), cameras=DEFAULT_CAMERAS,
        dataset_fingerprint=fingerprint_files(list_episode_files(dataset)),
        frame_size=(cfg.image_size, cfg.image_size), progress=False,
    )
    log(f"teacher features ({cfg.teacher}, all {teacher.num_layers} layers): {report.frames} frames "
        f"cached, {len(report.skipped)} episodes already cached, {time.perf_counter() - start:.0f} s "
        f"-> {out}")
    return out


def train_run(tcfg: Any, log: Log = print_log) -> dict[str, Any]:
    """One ``rocket train`` run (a :class:`~rocket_vla.train.config.TrainConfig`), resumed from
    its last checkpoint if one is there; returns its summary with the metrics history."""
    from rocket_vla import records
    from rocket_vla.train.loop import train

    out = Path(tcfg.out_dir)
    resume = str(out) if (out / "checkpoints" / "latest").is_file() else None
    start = time.perf_counter()
    result = train(tcfg, resume=resume)
    return {"variant": tcfg.variant, "seed": tcfg.seed, "checkpoint": str(result.checkpoint),
            "steps": result.step, "train_seconds": round(time.perf_counter() - start, 1),
            "samples_per_s": round(result.samples_per_s, 1),
            "history": records.read(out / "metrics.jsonl")}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a kill mid-write never leaves a torn file (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def set_threads(threads: int) -> None:
    """Single-threaded torch for small models sharing cores (0: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _in_child(fn: Callable[..., Any], threads: int, args: tuple[Any, ...]) -> Any:
    """A pooled job's body: end with the parent process (a killed run does not train on into
    its folder), single-threaded torch, then ``fn(*args)``."""
    import os

    from rocket_vla.envs.parallel import exit_with_parent

    exit_with_parent(os.getppid())
    set_threads(threads)
    return fn(*args)


def map_processes(fn: Callable[..., Any], jobs: list[tuple[Any, ...]], workers: int, threads: int,
                  on_done: Callable[[int, Any], None] | None = None,
                  on_wait: Callable[[], None] | None = None, poll_seconds: float = 60.0) -> list[Any]:
    """``[fn(*args) for args in jobs]`` in ``workers`` spawned processes (no forked torch or
    OpenMP state), ``threads`` torch threads each. ``on_done(i, result)`` runs as job ``i``
    finishes, ``on_wait()`` after every ``poll_seconds`` without one (progress lines).

    Why processes: MiniVLA's matmuls are too small for a second intra-op thread to pay off,
    but independent trainings use the cores fully; each process computes exactly what the
    same call in this process would."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    results: list[Any] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        index = {pool.submit(_in_child, fn, threads, args): i for i, args in enumerate(jobs)}
        pending = set(index)
        while pending:
            finished, pending = wait(pending, timeout=poll_seconds, return_when=FIRST_COMPLETED)
            for future in finished:
                results[index[future]] = future.result()
                if on_done is not None:
                    on_done(index[future], results[index[future]])
            if not finished and on_wait is not None:
                on_wait()
    return results

"""The demo's stages, in order. Each stage writes its results under the run folder and is
skipped on a rerun when its output is already complete (collection and evaluation resume
episode by episode; training resumes from its last checkpoint)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rocket_vla.demo.config import DemoConfig

Log = Callable[[str], None]


def print_log(msg: str) -> None:
    """The demo's default log: a time-stamped line on stdout."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dataset_dirs(cfg: DemoConfig) -> tuple[Path, Path]:
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


def collect(cfg: DemoConfig, log: Log = print_log) -> tuple[Path, Path]:
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


def cache_teacher(cfg: DemoConfig, dataset: Path, log: Log = print_log,
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


def train_variant(cfg: DemoConfig, variant: str, dataset: Path, run: Path,
                  log: Log = print_log, progress: bool = True,
                  teacher_cache: Path | None = None) -> dict[str, Any]:
    """Train one MiniVLA with one of the paper's variants; same data and seed for all."""
    from rocket_vla.train.config import TrainConfig
    from rocket_vla.train.loop import train

    out = run / "train" / variant
    tcfg = TrainConfig(
        dataset=str(dataset), out_dir=str(out), student="minivla", student_preset=cfg.model,
        variant=variant, num_pairs=cfg.num_pairs,
        teacher=cfg.teacher, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
        decay_after=max(1, int(cfg.steps * 0.8)), save_every=max(1, cfg.steps // 2),
        progress=progress,
        teacher_cache=str(teacher_cache) if teacher_cache and variant != "baseline" else None,
    )
    record = _train_record(run, variant)
    if record.is_file():  # finished in an earlier run of the demo: reuse it
        log(f"training {variant}: already done in {out}")
        return json.loads(record.read_text(encoding="utf-8"))
    resume = str(out) if (out / "checkpoints" / "latest").is_file() else None
    log(f"training {variant}: {cfg.steps} steps x batch {cfg.batch_size} ({cfg.model} MiniVLA)"
        + (" -- resuming" if resume else ""))
    start = time.perf_counter()
    result = train(tcfg, resume=resume)
    from rocket_vla import records

    history = records.read(out / "metrics.jsonl")
    summary = {"variant": variant, "checkpoint": str(result.checkpoint), "steps": result.step,
               "train_seconds": round(time.perf_counter() - start, 1),
               "samples_per_s": round(result.samples_per_s, 1), "history": history}
    tmp = record.with_name(f".{record.name}.tmp")  # a kill mid-write never leaves a torn record
    tmp.write_text(json.dumps(summary), encoding="utf-8")
    tmp.replace(record)
    return summary


def train_all(cfg: DemoConfig, dataset: Path, run: Path, log: Log = print_log,
              teacher_cache: Path | None = None) -> dict[str, dict[str, Any]]:
    """Train every variant; at the same time, one single-threaded process each, when there
    are cores for it (``cfg.parallel_train``).

    Why processes: MiniVLA's matmuls are too small for a second intra-op thread to pay off,
    but two independent trainings use two cores fully -- the training stage then takes as
    long as the slowest variant instead of the sum. Each process trains exactly what the
    sequential path would (same config, data and seed), so the results are identical.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, wait

    todo = [v for v in cfg.variants if not _train_record(run, v).is_file()]
    workers = min(len(todo), os.cpu_count() or 1)
    if not cfg.parallel_train or workers < 2:
        return {v: train_variant(cfg, v, dataset, run, log, teacher_cache=teacher_cache)
                for v in cfg.variants}
    log(f"training {', '.join(todo)} at the same time, one process each: {cfg.steps} steps x batch "
        f"{cfg.batch_size} ({cfg.model} MiniVLA)")
    context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {v: pool.submit(_train_worker, cfg, v, str(dataset), str(run), teacher_cache)
                   for v in todo}
        while wait(list(futures.values()), timeout=cfg.log_seconds).not_done:
            log("  " + " | ".join(_train_progress(run / "train" / v, v, cfg.steps) for v in todo))
        finished = {v: f.result() for v, f in futures.items()}
    return {v: finished.get(v) or train_variant(cfg, v, dataset, run, log, teacher_cache=teacher_cache)
            for v in cfg.variants}


def _train_record(run: Path, variant: str) -> Path:
    """Written when a variant's training has finished; its presence skips the stage."""
    return run / "train" / variant / "demo_train.json"


def _train_worker(cfg: DemoConfig, variant: str, dataset: str, run: str,
                  teacher_cache: Path | None) -> dict[str, Any]:
    """One variant's training in its own process (the target of :func:`train_all`); it ends
    when the demo process is killed instead of training on into the run folder."""
    import os

    from rocket_vla.envs.parallel import exit_with_parent

    exit_with_parent(os.getppid())
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    return train_variant(cfg, variant, Path(dataset), Path(run), log=lambda msg: None, progress=False,
                         teacher_cache=teacher_cache)


def _train_progress(out: Path, variant: str, steps: int) -> str:
    """``variant step/steps, action loss`` from the last line of a run's metrics.jsonl."""
    try:
        last = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1]
        row = json.loads(last)
    except (OSError, IndexError, ValueError):
        return f"{variant} starting"
    return (f"{variant} {row['step']}/{steps} action L1 {row['action']:.3f} "
            f"({row['samples_per_s']:.0f} samples/s)")


def evaluate_variant(cfg: DemoConfig, variant: str, checkpoint: str, run: Path,
                     log: Log = print_log) -> dict[str, Any]:
    """Closed-loop LIBERO evaluation with the paper's protocol (init state k for trial k)."""
    from rocket_vla.envs.runner import EvalConfig, run_evaluation

    log(f"evaluating {variant}: {len(cfg.tasks)} task(s) x {cfg.eval_trials} trials on {cfg.suite}")
    return run_evaluation(EvalConfig(
        out_dir=str(run / "eval" / variant), suites=[cfg.suite], tasks=[str(t) for t in cfg.tasks],
        trials=cfg.eval_trials, policy="rocket_vla.policies.student_policy:load_policy",
        policy_kwargs={"checkpoint": checkpoint}, workers=cfg.workers, image_size=cfg.image_size,
        seed=cfg.seed,
    ))


def offline_measures(checkpoint: str, train_eps: list[Any], heldout_eps: list[Any],
                     layers: list[int], frames_per_episode: int) -> dict[str, Any]:
    """A trained variant on recorded demonstrations: its held-out action L1, and the held-out
    R^2 of a ridge probe from each of ``layers``' visual tokens to the target objects' 3D
    positions (fitted on ``train_eps``)."""
    from rocket_vla.analysis.spatial_probe import probe_layers
    from rocket_vla.envs.offline import heldout_action_l1, visual_token_features
    from rocket_vla.policies.student_policy import load_policy

    policy = load_policy(checkpoint)
    action_l1 = heldout_action_l1(policy, heldout_eps)
    x_train, y_train = visual_token_features(policy, train_eps, layers, frames_per_episode)
    x_test, y_test = visual_token_features(policy, heldout_eps, layers, frames_per_episode)
    probe = probe_layers(x_train, y_train, x_test, y_test)
    return {"action_l1": action_l1, "probe": {str(k): v for k, v in probe.items()}}

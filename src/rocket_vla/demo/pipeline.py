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

import numpy as np

from rocket_vla.demo.config import DemoConfig

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dataset_dirs(cfg: DemoConfig) -> tuple[Path, Path]:
    """Cache folders keyed by everything that changes the collected data."""
    from rocket_vla.data.episodes import FORMAT_VERSION

    key = json.dumps([FORMAT_VERSION, cfg.suite, cfg.tasks, cfg.demo_first_init, cfg.train_demos,
                      cfg.heldout_demos, cfg.image_size, cfg.frame_stride, cfg.seed, cfg.after_success])
    root = Path(cfg.cache_dir) / "datasets" / hashlib.sha1(key.encode()).hexdigest()[:12]
    return root / "train", root / "heldout"


def collect(cfg: DemoConfig, log: Log = _print) -> tuple[Path, Path]:
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


def cache_teacher(cfg: DemoConfig, dataset: Path, log: Log = _print,
                  episodes: list[Any] | None = None) -> Path | None:
    """Teacher features of every training frame, computed once (``rocket cache-teacher``).

    Why: a live teacher runs on every sample of every step -- tens of thousands of forward
    passes for a dataset of a couple of thousand frames. Cached full-frame features are
    read instead and cropped like the student's input by the aligner's crop-box
    resampling. Kept next to the dataset, keyed by the teacher's fingerprint, so it is
    reused while data and teacher are unchanged (and rebuilt, never misread, otherwise).
    ``episodes``: the dataset already read, if the caller has it.
    """
    from rocket_vla.commands.cache_teacher import DEFAULT_CAMERAS, cache_episodes, episode_items
    from rocket_vla.data.episodes import list_episode_files, read_episodes
    from rocket_vla.teachers.cache import fingerprint_files
    from rocket_vla.train.config import TrainConfig
    from rocket_vla.train.teachers import build_teacher

    if not cfg.cache_teacher or all(v == "baseline" for v in cfg.variants):
        return None
    teacher = build_teacher(cfg.teacher, TrainConfig.teacher_size)
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
                  log: Log = _print, progress: bool = True,
                  teacher_cache: Path | None = None) -> dict[str, Any]:
    """Train one MiniVLA with one of the paper's variants; same data and seed for all."""
    from rocket_vla.train.config import TrainConfig
    from rocket_vla.train.loop import train

    out = run / "train" / variant
    tcfg = TrainConfig(
        dataset=str(dataset), out_dir=str(out), model=cfg.model, variant=variant, num_pairs=cfg.num_pairs,
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
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    summary = {"variant": variant, "checkpoint": str(result.checkpoint), "steps": result.step,
               "train_seconds": round(time.perf_counter() - start, 1),
               "samples_per_s": round(result.samples_per_s, 1), "history": history}
    record.write_text(json.dumps(summary), encoding="utf-8")
    return summary


def train_all(cfg: DemoConfig, dataset: Path, run: Path, log: Log = _print,
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
    """One variant's training in its own process (the target of :func:`train_all`)."""
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
                     log: Log = _print) -> dict[str, Any]:
    """Closed-loop LIBERO evaluation with the paper's protocol (init state k for trial k)."""
    from rocket_vla.envs.runner import EvalConfig, run_evaluation

    log(f"evaluating {variant}: {len(cfg.tasks)} task(s) x {cfg.eval_trials} trials on {cfg.suite}")
    return run_evaluation(EvalConfig(
        out_dir=str(run / "eval" / variant), suites=[cfg.suite], tasks=[str(t) for t in cfg.tasks],
        trials=cfg.eval_trials, policy="rocket_vla.policies.minivla_policy:load_policy",
        policy_kwargs={"checkpoint": checkpoint}, workers=cfg.workers, image_size=cfg.image_size,
        seed=cfg.seed,
    ))


def _episode_obs(ep: Any, row: int) -> dict[str, np.ndarray]:
    """The policy observation of image row ``row`` of a stored episode."""
    step = int(ep.frame_index[row])
    proprio = np.concatenate([ep.obs["ee_pos"][step], ep.obs["ee_ori"][step],
                              ep.obs["gripper_states"][step]]).astype(np.float32)
    return {"agentview": ep.obs["agentview_rgb"][row], "wrist": ep.obs["eye_in_hand_rgb"][row],
            "proprio": proprio}


def heldout_action_l1(checkpoint: str, episodes: list[Any]) -> float:
    """Mean |predicted - demonstrated| over held-out frames, whole chunks, env action units."""
    from rocket_vla.data.episodes import gripper_env_to_model
    from rocket_vla.envs.policy import TaskInfo
    from rocket_vla.policies.minivla_policy import load_policy

    policy = load_policy(checkpoint)
    errors = []
    for ep in episodes:
        policy.reset(TaskInfo("", 0, "", ep.language))
        target = gripper_env_to_model(ep.actions, "signed")
        for row in range(len(ep.frame_index)):
            step = int(ep.frame_index[row])
            chunk = policy.act(_episode_obs(ep, row))
            want = target[step: step + len(chunk)]
            errors.append(np.abs(chunk[: len(want)] - want).mean())
    return float(np.mean(errors))


def probe_target(ep: Any, step: int) -> np.ndarray:
    """3D positions of the task's pick object and place target at ``step`` (all objects if
    the plan cannot be matched), from the ``object_pos`` the collector stores per step."""
    from rocket_vla.envs.experts import plan_for_task

    names = str(ep.attrs.get("object_names", "")).split(",")
    positions = np.asarray(ep.obs["object_pos"][step], np.float64)
    try:
        plan = plan_for_task(str(ep.attrs["suite"]), int(ep.attrs["task_id"]))
        chosen = [next(i for i, n in enumerate(names) if name.startswith(n))
                  for name in (plan.obj, plan.target)]
    except (KeyError, StopIteration, ValueError):
        chosen = list(range(len(names)))
    return positions[chosen].reshape(-1)


def visual_token_features(checkpoint: str, episodes: list[Any], layers: list[int],
                          frames_per_episode: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Visual-token states at ``layers`` and the target objects' 3D positions, per frame.

    Frames are spread evenly over each episode; targets are :func:`probe_target`.
    """
    import torch

    from rocket_vla.align import LayerTaps
    from rocket_vla.policies.minivla_policy import load_policy

    policy = load_policy(checkpoint)
    model = policy.model
    feats: dict[int, list[np.ndarray]] = {k: [] for k in layers}
    targets: list[np.ndarray] = []
    with torch.no_grad(), LayerTaps(model, model.blocks_path, layers, spans=model.visual_spans) as taps:
        for ep in episodes:
            policy.reset(ep.language)
            rows = np.unique(np.linspace(0, len(ep.frame_index) - 1, frames_per_episode).round().astype(int))
            for row in rows:
                obs = _episode_obs(ep, int(row))
                policy.act(obs)
                for k, state in zip(layers, taps.states, strict=True):
                    feats[k].append(state[0].float().numpy().reshape(-1))
                targets.append(probe_target(ep, int(ep.frame_index[row])))
    return {k: np.stack(v) for k, v in feats.items()}, np.stack(targets)


def spatial_probe(checkpoint: str, train_eps: list[Any], test_eps: list[Any], layers: list[int],
                  frames_per_episode: int) -> dict[int, dict[str, Any]]:
    """Held-out R^2 of a ridge probe from each tapped layer's visual tokens to 3D positions."""
    import torch

    from rocket_vla.analysis.spatial_probe import fit_probe

    x_train, y_train = visual_token_features(checkpoint, train_eps, layers, frames_per_episode)
    x_test, y_test = visual_token_features(checkpoint, test_eps, layers, frames_per_episode)
    out = {}
    for k in layers:
        res = fit_probe(torch.from_numpy(x_train[k]), torch.from_numpy(y_train),
                        torch.from_numpy(x_test[k]), torch.from_numpy(y_test))
        out[k] = {"r2": round(res.r2, 4), "alpha": res.alpha, "n_train": res.n_train, "n_test": res.n_test}
    return out

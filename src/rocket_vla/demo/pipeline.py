"""The demo's stages, in order. Each stage writes its results under the run folder and is
skipped on a rerun when its output is already complete (collection and evaluation resume
episode by episode; training resumes from its last checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rocket_vla import records
from rocket_vla.demo.config import DemoConfig
from rocket_vla.pipeline.log import Log, stamped_log
from rocket_vla.pipeline.processes import map_processes
from rocket_vla.pipeline.train import train_run

#: The demo's default log.
print_log = stamped_log("demo")


def train_variant(cfg: DemoConfig, variant: str, dataset: Path, run: Path,
                  log: Log = print_log, progress: bool = True,
                  teacher_cache: Path | None = None) -> dict[str, Any]:
    """Train one MiniVLA with one of the paper's variants; same data and seed for all."""
    out = run / "train" / variant
    tcfg = cfg.variant_config(variant, str(dataset), str(out),
                              str(teacher_cache) if teacher_cache else None, progress)
    record = _train_record(run, variant)
    if record.is_file():  # finished in an earlier run of the demo: reuse it
        log(f"training {variant}: already done in {out}")
        return json.loads(record.read_text(encoding="utf-8"))
    resuming = (out / "checkpoints" / "latest").is_file()
    log(f"training {variant}: {_recipe(cfg)}" + (" -- resuming" if resuming else ""))
    summary = train_run(tcfg)
    records.write_json_atomic(record, summary)
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
    import os

    todo = [v for v in cfg.variants if not _train_record(run, v).is_file()]
    workers = min(len(todo), os.cpu_count() or 1)
    if not cfg.parallel_train or workers < 2:
        return {v: train_variant(cfg, v, dataset, run, log, teacher_cache=teacher_cache)
                for v in cfg.variants}
    log(f"training {', '.join(todo)} at the same time, one process each: {_recipe(cfg)}")
    quiet: Log = _no_log
    results = map_processes(
        train_variant, [(cfg, v, dataset, run, quiet, False, teacher_cache) for v in todo], workers,
        cfg.threads, poll_seconds=cfg.log_seconds,
        on_wait=lambda: log("  " + " | ".join(_train_progress(run / "train" / v, v, cfg.train.steps)
                                              for v in todo)))
    finished = dict(zip(todo, results, strict=True))
    return {v: finished.get(v) or train_variant(cfg, v, dataset, run, log, teacher_cache=teacher_cache)
            for v in cfg.variants}


def _recipe(cfg: DemoConfig) -> str:
    """``steps x batch (preset MiniVLA)`` for the progress log."""
    return f"{cfg.train.steps} steps x batch {cfg.train.batch_size} ({cfg.train.student_preset} MiniVLA)"


def _train_record(run: Path, variant: str) -> Path:
    """Written when a variant's training has finished; its presence skips the stage."""
    return run / "train" / variant / "demo_train.json"


def _no_log(msg: str) -> None:
    """The log of a variant trained in a worker process (the parent prints progress)."""


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

    data = cfg.data
    log(f"evaluating {variant}: {len(data.tasks)} task(s) x {cfg.eval_trials} trials on {data.suite}")
    return run_evaluation(EvalConfig(
        out_dir=str(run / "eval" / variant), suites=[data.suite], tasks=[str(t) for t in data.tasks],
        trials=cfg.eval_trials, policy="rocket_vla.policies.student_policy:load_policy",
        policy_kwargs={"checkpoint": checkpoint}, workers=cfg.workers, image_size=data.image_size,
        seed=data.seed,
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

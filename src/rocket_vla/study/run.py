"""`rocket reproduce` from start to finish: collect once, cache the teacher once, train every
(variant, seed) in parallel processes, evaluate each run's checkpoints closed-loop, measure
gradient conflict, aggregate and write the report. Every stage resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rocket_vla.study import report, stages
from rocket_vla.study.config import StudyConfig
from rocket_vla.study.runs import (
    RunKey,
    check_settings,
    claim,
    eval_dir,
    result_file,
    run_dir,
    run_identity,
)
from rocket_vla.study.stages import Log, print_log

POLICY = "rocket_vla.policies.student_policy:load_policy"
GRAD_VARIANTS = ("naive", "shared", "rocket")


def run_study(cfg: StudyConfig, log: Log = print_log) -> dict[str, Any]:
    """Run (or resume) the study and return its results (also in ``results.json``)."""
    from rocket_vla import records
    from rocket_vla.fingerprint import code_version, compared_code_version

    cfg.validate()
    stages.set_threads(cfg.threads)
    out = Path(cfg.out_dir)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    keys = [RunKey(v, s) for s in cfg.seeds for v in cfg.variants]
    with records.FolderLock(out, "rocket reproduce"):
        check_settings(cfg, keys)  # before collecting anything
        t0 = time.perf_counter()
        train_dir, heldout_dir = stages.collect(cfg, log)
        timings["collect_s"] = time.perf_counter() - t0
        data = stages.data_fingerprint(train_dir, heldout_dir)
        aligned = any(v != "baseline" for v in cfg.variants)
        teacher = stages.teacher_fingerprint(cfg.teacher) if aligned else None
        code = compared_code_version()
        finished = {k: claim(cfg, k, run_identity(cfg, k, data, teacher, code)) for k in keys}
        todo = [k for k in keys if not finished[k]]
        log(f"{len(keys)} runs ({len(cfg.variants)} variants x {len(cfg.seeds)} seeds), "
            f"{len(keys) - len(todo)} already finished")
        t0 = time.perf_counter()
        cache = stages.cache_teacher(cfg, train_dir, log) if todo else None
        timings["teacher_cache_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_runs(cfg, [k for k in todo if not _train_record(cfg, k).is_file()], train_dir, cache, log)
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, key in enumerate(todo):
            log(f"evaluating {key.name} ({i + 1}/{len(todo)}) on the {cfg.split} init states")
            finish_run(cfg, key, heldout_dir)
        timings["eval_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        grad = gradient_conflict(cfg, train_dir, out / "grad")
        timings["grad_s"] = time.perf_counter() - t0
        runs = {k.name: json.loads(result_file(cfg, k).read_text(encoding="utf-8")) for k in keys}
        timings["wall_s"] = time.perf_counter() - start
        results = report.aggregate(cfg, runs)
        results.update(data=data, teacher_fingerprint=teacher, code=code_version(), grad=grad,
                       timings={k: round(v, 1) for k, v in timings.items()})
        stages.write_json_atomic(out / "results.json", results)
        report.write(results, out)
    log(f"done in {timings['wall_s'] / 60:.1f} min -> {out / 'report.md'}\n" + report.table(results))
    return results


def _train_record(cfg: StudyConfig, key: RunKey) -> Path:
    return run_dir(cfg, key) / "train.json"


def train_config(cfg: StudyConfig, key: RunKey, dataset: Path, teacher_cache: Path | None) -> Any:
    """The run's ``rocket train`` configuration: the demo's recipe with the run's seed."""
    from rocket_vla.train.config import TrainConfig

    return TrainConfig(
        dataset=str(dataset), out_dir=str(run_dir(cfg, key) / "train"), student="minivla",
        student_preset=cfg.model, variant=key.variant, num_pairs=cfg.num_pairs, teacher=cfg.teacher,
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=key.seed, pos_embed=cfg.pos_embed,
        decay_after=max(1, int(cfg.steps * 0.8)), save_every=cfg.save_every,
        keep_last=cfg.curve_points + 1, progress=False,
        teacher_cache=str(teacher_cache) if teacher_cache and key.variant != "baseline" else None,
    )


def train_one(cfg: StudyConfig, key: RunKey, dataset: Path, teacher_cache: Path | None) -> None:
    """Train one run (resuming its last checkpoint) and mark it trained."""
    summary = stages.train_run(train_config(cfg, key, dataset, teacher_cache))
    stages.write_json_atomic(_train_record(cfg, key), summary)


def train_runs(cfg: StudyConfig, keys: list[RunKey], dataset: Path, teacher_cache: Path | None,
               log: Log) -> None:
    """Train ``keys``, ``cfg.workers`` single-threaded processes at a time."""
    if not keys:
        return
    log(f"training {len(keys)} runs, {min(cfg.workers, len(keys))} at a time: {cfg.steps} steps x "
        f"batch {cfg.batch_size} ({cfg.model} MiniVLA)")
    if cfg.workers == 1 or len(keys) == 1:
        for key in keys:
            train_one(cfg, key, dataset, teacher_cache)
            log(f"  trained {key.name}")
        return
    done = []

    def finished(i: int, _: Any) -> None:
        done.append(i)
        log(f"  trained {keys[i].name} ({len(done)}/{len(keys)})")

    stages.map_processes(train_one, [(cfg, k, dataset, teacher_cache) for k in keys],
                         min(cfg.workers, len(keys)), cfg.threads, on_done=finished,
                         poll_seconds=cfg.log_seconds)


def evaluate(cfg: StudyConfig, key: RunKey, step: int) -> list[dict[str, Any]]:
    """Closed-loop episodes of the run's checkpoint at ``step`` on the configured split."""
    from rocket_vla.envs.runner import EvalConfig, read_results, run_evaluation

    trials = cfg.trials if step == cfg.steps else cfg.curve_trials
    out = eval_dir(cfg, key, step, trials)
    ckpt = run_dir(cfg, key) / "train" / "checkpoints" / f"step_{step:06d}"
    run_evaluation(EvalConfig(
        out_dir=str(out), suites=[cfg.suite], tasks=[str(t) for t in cfg.tasks], trials=trials,
        first_trial=cfg.first_trial, policy=POLICY, policy_kwargs={"checkpoint": str(ckpt)},
        workers=cfg.workers, image_size=cfg.image_size, seed=cfg.seed, max_steps=cfg.max_steps,
    ), progress=False)
    return [{"task_id": r["task_id"], "trial": r["trial"], "success": bool(r["success"])}
            for r in read_results(out / "episodes.jsonl")]


def finish_run(cfg: StudyConfig, key: RunKey, heldout_dir: Path) -> None:
    """Evaluate a trained run's checkpoints and its held-out action L1; write its result."""
    from rocket_vla.data.episodes import read_episodes
    from rocket_vla.envs.offline import heldout_action_l1
    from rocket_vla.policies.student_policy import load_policy

    trained = json.loads(_train_record(cfg, key).read_text(encoding="utf-8"))
    evals = {str(step): evaluate(cfg, key, step) for step in cfg.curve_steps()}
    final = run_dir(cfg, key) / "train" / "checkpoints" / f"step_{cfg.steps:06d}"
    l1 = heldout_action_l1(load_policy(str(final)), read_episodes(heldout_dir))
    history = [{k: row[k] for k in ("step", "action", "align") if k in row} for row in trained["history"]]
    stages.write_json_atomic(result_file(cfg, key), {
        "variant": key.variant, "seed": key.seed, "split": cfg.split, "first_trial": cfg.first_trial,
        "evals": evals, "action_l1": l1, "train_seconds": trained["train_seconds"],
        "samples_per_s": trained["samples_per_s"], "history": history,
    })


def gradient_conflict(cfg: StudyConfig, train_dir: Path, out: Path) -> dict[str, Any] | None:
    """Cosines between per-pair (and action) gradients of the first seed's final naive,
    shared and ROCKET checkpoints, on the same training batches (``rocket profile grad``)."""
    from rocket_vla.analysis.profiles import GradSettings, profile_grad
    from rocket_vla.analysis.subject import StudentSubject
    from rocket_vla.data.episodes import read_episodes

    variants = [v for v in GRAD_VARIANTS if v in cfg.variants]
    if not variants:
        return None
    episodes = read_episodes(train_dir)
    seed = cfg.seeds[0]
    subjects = [StudentSubject.load(run_dir(cfg, RunKey(v, seed)) / "train" / "checkpoints"
                                    / f"step_{cfg.steps:06d}", episodes=episodes, seed=cfg.seed)
                for v in variants]
    data = profile_grad(subjects, GradSettings(batches=cfg.grad_batches, batch_size=cfg.batch_size), out)
    return {"seed": seed, "png": str(out / "grad.png"), **data}

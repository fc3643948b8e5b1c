"""`rocket reproduce` from start to finish: collect once, cache each teacher once, search the
budget on the validation states, train every run to it (parallel processes), evaluate each
run's checkpoints on the test states, run the control, measure gradient conflict, and write
the report. Every stage resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError
from rocket_vla.kernels import kernel_line
from rocket_vla.pipeline import data as pipeline_data
from rocket_vla.pipeline.log import Log, print_log
from rocket_vla.pipeline.processes import map_processes, set_threads
from rocket_vla.pipeline.train import train_run
from rocket_vla.records import write_json_atomic
from rocket_vla.study import report
from rocket_vla.study.budget import budget_identity, find_budget
from rocket_vla.study.config import CONTROL_TEACHER, StudyConfig
from rocket_vla.study.runs import (
    IDENTITY_FILE,
    RunKey,
    check_settings,
    checkpoint_dir,
    claim,
    eval_dir,
    result_file,
    run_dir,
    run_identity,
    run_teacher,
    saved_identity,
)

POLICY = "rocket_vla.policies.student_policy:load_policy"
GRAD_VARIANTS = ("naive", "shared", "rocket")
GRAD_RECORD = "record.json"


def run_study(cfg: StudyConfig, log: Log = print_log) -> dict[str, Any]:
    """Run (or resume) the study and return its results (also in ``results.json``)."""
    from rocket_vla import records
    from rocket_vla.fingerprint import code_version, compared_code_version

    cfg.validate()
    set_threads(cfg.threads)
    out = Path(cfg.out_dir)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    keys = [RunKey(v, s) for s in cfg.seeds for v in cfg.variants]
    controls = [RunKey("rocket", s, CONTROL_TEACHER) for s in cfg.control_seeds]
    with records.FolderLock(out, "rocket reproduce"):
        check_settings(cfg, keys + controls)  # before collecting anything
        log(kernel_line())
        selected(cfg, keys + controls)  # refuses an --only naming no run, also before
        t0 = time.perf_counter()
        train_dir, heldout_dir = pipeline_data.collect(cfg.data, cfg.cache_dir, cfg.workers, log)
        timings["collect_s"] = time.perf_counter() - t0
        data = pipeline_data.data_fingerprint(train_dir, heldout_dir)
        specs = sorted({run_teacher(cfg, k) for k in keys + controls if k.variant != "baseline"})
        teachers = {s: pipeline_data.teacher_fingerprint(s, cfg.train.teacher_size) for s in specs}
        code = compared_code_version()
        for key in keys + controls:
            claim(cfg, key, run_identity(cfg, key, data, teachers.get(run_teacher(cfg, key)), code))
        t0 = time.perf_counter()
        caches = {s: str(pipeline_data.cache_teacher(s, cfg.train.teacher_size, train_dir,
                                                     cfg.data.image_size, log))
                  for s in specs if cfg.cache_teacher}
        timings["teacher_cache_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        searcher = RunKey("baseline", cfg.seeds[0])  # validate() requires the baseline
        budget = find_budget(
            cfg, budget_identity(cfg, run_identity(cfg, searcher, data, None, code)),
            train_to=lambda step: train_one(cfg, searcher, step, train_dir, caches),
            validate_at=lambda step: _count(evaluate(cfg, searcher, "validation", step)), log=log)
        steps = int(budget["budget"])
        points = cfg.points(steps)
        timings["budget_s"] = time.perf_counter() - t0
        log(f"budget {steps} steps; test evaluation at steps {points}")

        at = {k: points if k in keys else [steps] for k in keys + controls}
        todo = [k for k in selected(cfg, keys + controls) if not result_file(cfg, k, at[k]).is_file()]
        grad_keys = [RunKey(v, cfg.seeds[0]) for v in GRAD_VARIANTS if v in cfg.variants]
        grad_done = grad_record(cfg, steps) is not None
        # a finished run is trained again only when the gradient profile still needs its checkpoint
        needs = [k for k in todo if trained_step(cfg, k) < steps]
        needs += [k for k in grad_keys if not grad_done and k not in todo and trained_step(cfg, k) < steps
                  and (not cfg.only or k.name in cfg.only)]
        t0 = time.perf_counter()
        train_runs(cfg, needs, steps, train_dir, caches, log)
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, key in enumerate(todo):
            log(f"evaluating {key.name} ({i + 1}/{len(todo)}) on the test init states at steps {at[key]}")
            finish_run(cfg, key, at[key], heldout_dir)
        timings["eval_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        grad = gradient_conflict(cfg, steps, train_dir, grad_keys)
        timings["grad_s"] = time.perf_counter() - t0
        missing = [k.name for k in keys + controls if not result_file(cfg, k, at[k]).is_file()]
        if grad_keys and grad is None:
            missing.append("the gradient profile (from the final checkpoints of "
                           + ", ".join(k.name for k in grad_keys) + ")")
        if missing:
            log(f"stopping before the report: still to do {', '.join(missing)}; rerun with --only naming "
                "them (or without --only) to finish")
            return {"budget": budget, "points": points, "missing": missing}
        runs = [_read(result_file(cfg, k, points)) for k in keys]
        control_runs = [_read(result_file(cfg, k, [steps])) for k in controls]
        timings["wall_s"] = time.perf_counter() - start
        results = report.aggregate(cfg, runs, control_runs, budget, points)
        results.update(data=data, teacher_fingerprints=teachers, code=code_version(), grad=grad,
                       timings={k: round(v, 1) for k, v in timings.items()})
        write_json_atomic(out / "results.json", results)
        report.write(results, out)
    log(f"done in {timings['wall_s'] / 60:.1f} min -> {out / 'report.md'}\n" + report.table(results))
    return results


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _count(episodes: list[dict[str, Any]]) -> tuple[int, int]:
    return sum(e["success"] for e in episodes), len(episodes)


def trained_step(cfg: StudyConfig, key: RunKey) -> int:
    """The step of the run's newest complete checkpoint (0 before the first)."""
    latest = run_dir(cfg, key) / "train" / "checkpoints" / "latest"
    if not latest.is_file():
        return 0
    name = latest.read_text(encoding="utf-8").strip()
    return int(name.removeprefix("step_")) if name.removeprefix("step_").isdigit() else 0


def train_one(cfg: StudyConfig, key: RunKey, steps: int, dataset: Path, caches: dict[str, str]) -> None:
    """Train one run to ``steps`` (resuming its last checkpoint; nothing to do once there)."""
    if trained_step(cfg, key) >= steps:
        return
    teacher = run_teacher(cfg, key)
    train_run(cfg.run_train_config(key.variant, key.seed, steps, str(dataset),
                                   str(run_dir(cfg, key) / "train"), teacher, caches.get(teacher)))


def train_runs(cfg: StudyConfig, keys: list[RunKey], steps: int, dataset: Path, caches: dict[str, str],
               log: Log) -> None:
    """Train ``keys`` to ``steps``, ``cfg.workers`` single-threaded processes at a time."""
    if not keys:
        return
    log(f"training {len(keys)} runs to step {steps}, {min(cfg.workers, len(keys))} at a time "
        f"(batch {cfg.train.batch_size}, {cfg.train.student_preset} MiniVLA)")
    if cfg.workers == 1 or len(keys) == 1:
        for key in keys:
            train_one(cfg, key, steps, dataset, caches)
            log(f"  trained {key.name}")
        return
    done = []

    def finished(i: int, _: Any) -> None:
        done.append(i)
        log(f"  trained {keys[i].name} ({len(done)}/{len(keys)})")

    map_processes(train_one, [(cfg, k, steps, dataset, caches) for k in keys], min(cfg.workers, len(keys)),
                  cfg.threads, on_done=finished, poll_seconds=cfg.log_seconds)


def evaluate(cfg: StudyConfig, key: RunKey, split: str, step: int) -> list[dict[str, Any]]:
    """Closed-loop episodes of the run's checkpoint at ``step`` on the test init states
    (``0 .. eval_trials-1``) or the validation ones (the next ``val_trials``)."""
    from rocket_vla.envs.runner import EvalConfig, read_results, run_evaluation

    first, trials = (0, cfg.eval_trials) if split == "test" else (cfg.eval_trials, cfg.val_trials)
    out = eval_dir(cfg, key, split, step, first, trials)
    run_evaluation(EvalConfig(
        out_dir=str(out), suites=[cfg.data.suite], tasks=[str(t) for t in cfg.data.tasks], trials=trials,
        first_trial=first, policy=POLICY, policy_kwargs={"checkpoint": str(checkpoint_dir(cfg, key, step))},
        workers=cfg.workers, image_size=cfg.data.image_size, seed=cfg.data.seed, max_steps=cfg.max_steps,
    ), progress=False)
    return [{"task_id": r["task_id"], "trial": r["trial"], "success": bool(r["success"])}
            for r in read_results(out / "episodes.jsonl")]


def point_record(cfg: StudyConfig, key: RunKey, step: int) -> dict[str, Any]:
    """One evaluated checkpoint: the compute the run had spent there (from the checkpoint's
    own record) and its test episodes."""
    from rocket_vla.train.compute import training_flops

    saved = _read(checkpoint_dir(cfg, key, step) / "config.json")["compute"]
    episodes = evaluate(cfg, key, "test", step)
    tokens = saved.get("tokens_per_sample")
    flops = (training_flops(saved["params_total"], saved["params_trainable"], tokens, saved["samples_seen"])
             if tokens else None)
    successes, trials = _count(episodes)
    return {"step": step, "samples": saved["samples_seen"], "wall_s": saved["train_wall_s"],
            "cpu_s": saved["train_cpu_s"], "flops": flops, "params": saved["params_total"],
            "aligner_params": saved["aligner_params"], "successes": successes, "trials": trials,
            "episodes": episodes}


def finish_run(cfg: StudyConfig, key: RunKey, points: list[int], heldout_dir: Path) -> None:
    """Evaluate a trained run at ``points`` and its held-out action L1 at the last; write its
    result."""
    from rocket_vla.data.episodes import read_episodes
    from rocket_vla.envs.offline import heldout_action_l1
    from rocket_vla.policies.student_policy import load_policy

    records = [point_record(cfg, key, step) for step in points]
    l1 = heldout_action_l1(load_policy(str(checkpoint_dir(cfg, key, points[-1]))), read_episodes(heldout_dir))
    teacher = run_teacher(cfg, key) if key.variant != "baseline" else None
    write_json_atomic(result_file(cfg, key, points), {
        "variant": key.variant, "seed": key.seed, "teacher": teacher, "points": records, "action_l1": l1})


def selected(cfg: StudyConfig, keys: list[RunKey]) -> list[RunKey]:
    """The runs ``cfg.only`` names (all when it is empty); a name of no run is refused."""
    if not cfg.only:
        return keys
    names = [k.name for k in keys]
    unknown = [n for n in cfg.only if n not in names]
    if unknown:
        raise RocketError(f"--only names no run of this study: {', '.join(unknown)}; the runs are "
                          f"{', '.join(names)}.")
    return [k for k in keys if k.name in cfg.only]


def grad_identity(cfg: StudyConfig, steps: int, grad_keys: list[RunKey]) -> dict[str, Any]:
    """What the gradient profile depends on: the profiled runs (their recorded identities), the
    step and the batches."""
    return {"runs": {k.name: saved_identity(run_dir(cfg, k) / IDENTITY_FILE) for k in grad_keys},
            "step": steps, "grad_batches": cfg.grad_batches, "batch_size": cfg.train.batch_size}


def grad_record(cfg: StudyConfig, steps: int) -> dict[str, Any] | None:
    """The saved gradient profile when it was made from the runs and settings of now."""
    grad_keys = [RunKey(v, cfg.seeds[0]) for v in GRAD_VARIANTS if v in cfg.variants]
    old = saved_identity(Path(cfg.out_dir) / "grad" / GRAD_RECORD)
    if not old or old.get("identity") != grad_identity(cfg, steps, grad_keys):
        return None
    return old["result"]


def gradient_conflict(cfg: StudyConfig, steps: int, train_dir: Path,
                      grad_keys: list[RunKey]) -> dict[str, Any] | None:
    """Cosines between per-pair (and action) gradients of the first seed's final naive,
    shared and ROCKET checkpoints, on the same training batches (``rocket profile grad``).

    Recorded with what it was made from, so an invocation without those checkpoints (they
    may live on another machine, or have been deleted once evaluated) reuses it; None while
    neither the record nor every checkpoint is there."""
    from rocket_vla.analysis.profiles import GradSettings, profile_grad
    from rocket_vla.analysis.subject import StudentSubject
    from rocket_vla.data.episodes import read_episodes

    if not grad_keys:
        return None
    done = grad_record(cfg, steps)
    if done is not None:
        return done
    if any(trained_step(cfg, k) < steps for k in grad_keys):
        return None
    out = Path(cfg.out_dir) / "grad"
    episodes = read_episodes(train_dir)
    subjects = [StudentSubject.load(checkpoint_dir(cfg, k, steps), episodes=episodes, seed=cfg.data.seed)
                for k in grad_keys]
    settings = GradSettings(batches=cfg.grad_batches, batch_size=cfg.train.batch_size)
    data = profile_grad(subjects, settings, out)
    result = {"seed": grad_keys[0].seed, "png": str(out / "grad.png"), **data}
    write_json_atomic(out / GRAD_RECORD, {"identity": grad_identity(cfg, steps, grad_keys), "result": result})
    return result

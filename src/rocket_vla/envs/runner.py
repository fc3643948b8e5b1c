"""``rocket eval``: the paper's LIBERO protocol over suites, tasks and trials, in parallel.

Results are files: one JSON line per finished episode (``episodes.jsonl``, appended and
fsynced as each episode ends, so a killed run loses at most the episodes in flight and a
rerun skips everything already recorded), then ``summary.json`` / ``summary.md`` with the
per-task and per-suite success table, and optional MP4/GIF rollouts under ``videos/``.

Workers are spawned processes, each keeping one environment per task alive across that
task's trials. By default (``--inference batched``) the policy lives once in this process and
answers every worker waiting for an action with one batched forward pass
(:mod:`rocket_vla.envs.policy_server`); ``--inference per_worker`` gives each worker its own
copy, rebuilt from the factory's import path (:mod:`rocket_vla.envs.parallel`, see
:func:`rocket_vla.envs.policy.register_policy`). Both give the same episodes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rocket_vla import records as run_records
from rocket_vla.envs.eval_config import EvalConfig
from rocket_vla.envs.parallel import run_recorded
from rocket_vla.errors import RocketError

RESULTS_FILE = "episodes.jsonl"
#: Settings that change what an episode measures; a resumed run (or a merge) must keep them.
PROTOCOL_FIELDS = ("policy", "policy_kwargs", "image_size", "seed", "max_steps", "num_wait",
                   "seeding", "env_seed", "gripper", "actions_per_chunk", "on_error", "start")
#: What run_config.json's "protocol" holds: the fields plus the checkpoint the policy loads
#: (``{"step", "weights"}`` of a `rocket train` checkpoint, else None; see :func:`protocol`).
PROTOCOL_KEYS = (*PROTOCOL_FIELDS, "checkpoint")
RUN_CONFIG = "run_config.json"


@dataclass(frozen=True)
class Job:
    """Trials of one task, run by one worker with one environment."""

    suite: str
    task_id: int
    trials: tuple[int, ...]

    @property
    def items(self) -> tuple[int, ...]:
        return self.trials


def episode_seed(base: int, suite: str, task_id: int, trial: int) -> int:
    """A per-episode seed that does not depend on worker count or scheduling order."""
    from rocket_vla.envs.suites import PERTURBED_SUITES, SUITES

    return base * 1_000_003 + (SUITES + PERTURBED_SUITES).index(suite) * 10_000 + task_id * 100 + trial


def plan_jobs(cfg: EvalConfig, done: set[tuple[str, int, int]]) -> list[Job]:
    """Validate suites/tasks/trials up front and list the jobs still to run."""
    jobs: list[Job] = []
    for suite, task_id, k in plan_items(cfg):
        if (suite, task_id, k) in done:
            continue
        if jobs and (jobs[-1].suite, jobs[-1].task_id) == (suite, task_id):
            jobs[-1] = Job(suite, task_id, (*jobs[-1].trials, k))
        else:
            jobs.append(Job(suite, task_id, (k,)))
    return jobs


def plan_items(cfg: EvalConfig) -> list[tuple[str, int, int]]:
    """Every (suite, task, trial) this run (this shard of it) promises, validated."""
    from rocket_vla.envs.suites import get_task, normalize_suite, require_init_states

    items: list[tuple[str, int, int]] = []
    for suite_name in cfg.suites:
        suite = normalize_suite(suite_name)
        specs = [get_task(suite, t) for t in cfg.tasks] if cfg.tasks else None
        if specs is None:
            from rocket_vla.envs.suites import list_tasks

            specs = list_tasks(suite)
        for spec in specs:
            last = cfg.first_trial + cfg.trials - 1
            require_init_states(spec, last, "trial", "--first_trial + --trials")
            items += [(suite, spec.task_id, k) for k in range(cfg.first_trial, last + 1)]
    if cfg.shard is not None:
        from rocket_vla.envs.shards import shard_slice

        items = shard_slice(items, *cfg.shard)
    return items


def read_results(path: Path) -> list[dict[str, Any]]:
    """Episode records of a run; a torn last line (killed mid-write) is ignored."""
    return run_records.read(path)


def episode_key(record: dict[str, Any]) -> tuple[str, int, int]:
    """What identifies an evaluation episode: a trial is counted once, however often recorded."""
    return (record["suite"], int(record["task_id"]), int(record["trial"]))


def checkpoint_of(cfg: EvalConfig) -> dict[str, Any] | None:
    """``{"step", "weights", "path"}`` of the `rocket train` checkpoint the policy loads, or None."""
    from rocket_vla.envs.policy import checkpoint_identity

    checkpoint = cfg.policy_kwargs.get("checkpoint")
    return checkpoint_identity(checkpoint) if isinstance(checkpoint, str) and checkpoint else None


def protocol_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's identity that the protocol compares (not its path)."""
    return {"step": checkpoint["step"], "weights": checkpoint["weights"]}


def protocol(cfg: EvalConfig, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    """What an episode's result depends on, as run_config.json records and compares it.

    A `rocket train` checkpoint counts by its step and weights digest, not by the path given:
    ``--checkpoint RUN`` names RUN's newest step, which changes as training goes on, while the
    same weights reached by another path are the same policy."""
    current = {k: getattr(cfg, k) for k in PROTOCOL_FIELDS}
    if checkpoint is not None:
        # the device is not protocol: a folder evaluated on a GPU may be resumed on a CPU
        current["policy_kwargs"] = {k: v for k, v in cfg.policy_kwargs.items()
                                    if k not in ("checkpoint", "device")}
        current["checkpoint"] = protocol_checkpoint(checkpoint)
    else:
        current["checkpoint"] = None
    return current


def _check_same_checkpoint(cfg_path: Path, checkpoint: dict[str, Any] | None, out: Path) -> None:
    """Refuse to add episodes of another checkpoint step to a folder (one sentence, with the fix)."""
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
        before = saved.get("protocol", {}).get("checkpoint")
        path = (saved.get("checkpoint") or {}).get("path")
    except (OSError, ValueError, AttributeError):  # absent or damaged: check_settings says so
        return
    if not (isinstance(before, dict) and checkpoint) or before == protocol_checkpoint(checkpoint):
        return
    raise RocketError(
        f"{out} holds episodes of checkpoint step {before.get('step')} (weights {before.get('weights')}) "
        f"but the checkpoint given now is step {checkpoint['step']} (weights {checkpoint['weights']}, "
        f"{checkpoint['path']}); pass --checkpoint {path or 'RUN/checkpoints/step_N'} to resume with "
        "the same weights, or a new --out_dir folder."
    )


def _check_resume(cfg: EvalConfig, out: Path) -> None:
    from rocket_vla.envs.simstack import check_folder_stack, require_pinned
    from rocket_vla.fingerprint import code_version

    stack = require_pinned(cfg.allow_unpinned_sim)
    cfg_path = out / RUN_CONFIG
    checkpoint = checkpoint_of(cfg)
    current = protocol(cfg, checkpoint)
    fix = "use a new --out_dir folder or the same settings, code and simulator to resume."
    _check_same_checkpoint(cfg_path, checkpoint, out)
    run_records.check_settings(cfg_path, current, PROTOCOL_KEYS, section="protocol", what=str(out),
                               fix=fix)
    check_folder_stack(cfg_path, out / RESULTS_FILE, stack, str(out), fix)
    run_records.write_json_atomic(cfg_path, {"protocol": current, "config": asdict(cfg),
                                             "simulator": stack, "code_version": code_version(),
                                             "checkpoint": checkpoint})


def _record_plan(out: Path, planned: int) -> None:
    """Add to run_config.json how many episodes this run promises; ``--merge`` refuses a shard
    that holds fewer (killed, or still running)."""
    cfg_path = out / RUN_CONFIG
    saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    run_records.write_json_atomic(cfg_path, {**saved, "planned_episodes": planned})


# -- worker side ------------------------------------------------------------------------
def run_jobs(cfg: EvalConfig, jobs: Iterable[Job], emit: Any, policy: Any = None) -> None:
    """Run jobs in this process and call ``emit(record)`` after every episode.

    ``policy``: the policy to ask (a batched run's :class:`~rocket_vla.envs.policy_server.RemotePolicy`);
    None builds this process's own copy. Before each episode a policy with ``begin_episode``
    gets the episode's seed, so its random draws belong to that episode alone."""
    from rocket_vla.envs.episode import resolve_settings, run_episode, seed_everything
    from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv
    from rocket_vla.envs.policy import build_policy
    from rocket_vla.envs.suites import get_init_state, get_task

    official = cfg.seeding == "official"
    if official:
        seed_everything(cfg.seed)  # once per process, like the official clients
    from rocket_vla.envs.premise import Premise
    from rocket_vla.envs.simstack import simulator_stack

    if policy is None:
        policy = build_policy(cfg.policy, **cfg.policy_kwargs)
    begin = getattr(policy, "begin_episode", None)
    settings = resolve_settings(policy, cfg.gripper, cfg.actions_per_chunk, cfg.on_error)
    pinned = bool(simulator_stack()["pinned"])
    # Cameras only when something reads them: an expert's env skips the renderer (identical
    # physics and fixture stream, far cheaper hard resets).
    cameras = bool(getattr(policy, "needs_images", True)) or cfg.video != "none"
    out = Path(cfg.out_dir)
    videos: dict[tuple[str, int], int] = defaultdict(int)
    for job in jobs:
        spec = get_task(job.suite, job.task_id)
        env_cfg = EnvConfig(image_size=cfg.image_size, render=cfg.render, start=cfg.start, cameras=cameras)
        with LiberoEnv(spec, env_cfg) as env:
            premise = Premise(env)
            if official:
                env.seed(cfg.env_seed)  # what the official clients call on every task env
            for trial in job.trials:
                record = cfg.video != "none" and videos[(job.suite, job.task_id)] < cfg.videos_per_task
                if official:
                    env.advance_to(trial)  # trial k's fixtures = the k-th reset of the stream
                seed = None if official else episode_seed(cfg.seed, job.suite, job.task_id, trial)
                if callable(begin):
                    begin(episode_seed(cfg.seed, job.suite, job.task_id, trial))
                res = run_episode(env, policy, get_init_state(spec, trial), seed=seed,
                                  max_steps=cfg.max_steps, num_wait=cfg.num_wait, record=record,
                                  settings=settings, premise=premise.check)
                video = None
                wanted = (cfg.video == "all" or (cfg.video == "failures" and not res.success)
                          or (cfg.video == "successes" and res.success))
                if record and wanted and res.frames:
                    video = _write_video(out, spec, trial, res, cfg.video_format)
                    videos[(job.suite, job.task_id)] += 1
                emit({"suite": job.suite, "task_id": job.task_id, "task": spec.name,
                      "language": spec.language, "trial": trial, "init_state": trial,
                      "seed": cfg.seed if official else seed, "seeding": cfg.seeding,
                      "env_seed": cfg.env_seed if official else seed, "success": res.success,
                      "steps": res.steps, "policy_calls": res.policy_calls,
                      "wall_s": round(res.wall_s, 3), "policy": cfg.policy,
                      "gripper": settings.gripper, "actions_per_chunk": settings.actions_per_chunk,
                      "error": res.error, "final_state": res.final_state, "video": video,
                      "start": cfg.start, "premise_failed": res.premise_failed,
                      **({} if pinned else {"unpinned_sim": True})})


def _write_video(out: Path, spec: Any, trial: int, res: Any, fmt: str) -> str:
    import imageio.v2 as imageio

    folder = out / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    tag = "success" if res.success else "failure"
    path = folder / f"{spec.suite}_task{spec.task_id:02d}_trial{trial:02d}_{tag}.{fmt}"
    if fmt == "gif":
        imageio.mimsave(path, res.frames, duration=0.1, loop=0)
    else:
        with imageio.get_writer(path, fps=10, macro_block_size=1) as writer:
            for frame in res.frames:
                writer.append_data(frame)
    return str(path.relative_to(out))


# -- parent side --------------------------------------------------------------------------
def run_evaluation(cfg: EvalConfig, progress: bool = True,
                   stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) an evaluation and return the summary written to ``summary.json``.

    The run folder is locked while it runs: a second evaluation into it is refused.
    ``stats``, when given, receives the policy server's counts of a batched run (forward
    passes, batch sizes, policy seconds; see :class:`~rocket_vla.envs.policy_server.ServerStats`)."""
    with run_records.FolderLock(cfg.out_dir, "rocket eval"):
        return _run_locked(cfg, progress, stats if stats is not None else {})


def _run_locked(cfg: EvalConfig, progress: bool, stats: dict[str, Any]) -> dict[str, Any]:
    from rocket_vla.envs.policy import check_policy

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the policy is checked (its factory importable by workers, its kwargs known to it) and its
    # checkpoint pinned to a step before the folder is touched
    cfg = replace(cfg, policy_kwargs=check_policy(cfg.policy, cfg.policy_kwargs))
    _check_resume(cfg, out)
    results_path = out / RESULTS_FILE
    done = {episode_key(r) for r in read_results(results_path)}
    _record_plan(out, len(plan_items(cfg)))
    jobs = plan_jobs(cfg, done)
    execute = _batched_executor(cfg) if cfg.inference == "batched" and jobs else None
    result = run_recorded(run_jobs, cfg, jobs, cfg.workers, lambda j, items: Job(j.suite, j.task_id, items),
                          results_path, desc="episodes", label="success", progress=progress,
                          execute=execute)
    stats.update(result or {})
    return write_summary(out)


def _batched_executor(cfg: EvalConfig) -> Any:
    """Run jobs on spawned simulator workers served by one policy built here, in the main
    process (on the GPU when the policy was given one)."""
    from functools import partial

    from rocket_vla.envs.episode import seed_everything
    from rocket_vla.envs.policy import build_policy
    from rocket_vla.envs.policy_server import run_batched

    if cfg.seeding == "official":
        seed_everything(cfg.seed)
    build = partial(build_policy, cfg.policy, **cfg.policy_kwargs)
    policy = build()

    def execute(run: Any, config: Any, jobs: list[Any], workers: int, emit: Any) -> dict[str, Any]:
        return run_batched(run, config, jobs, workers, emit, policy=policy, rebuild=build,
                           linger=cfg.batch_wait)

    return execute


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-task and per-suite success rates (suite average = mean over its episodes).

    Each (suite, task, trial) counts once, even if it was recorded more than once."""
    per_task: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in run_records.unique(records, episode_key):
        per_task[(r["suite"], r["task_id"])].append(r)
    tasks, suites = [], defaultdict(lambda: [0, 0])
    for (suite, tid), recs in sorted(per_task.items()):
        wins = sum(bool(r["success"]) for r in recs)
        steps = [r["steps"] for r in recs if r["success"]]
        broken = sorted(int(r["trial"]) for r in recs if r.get("premise_failed"))
        tasks.append({"suite": suite, "task_id": tid, "task": recs[0].get("task", ""),
                      "episodes": len(recs), "successes": wins, "broken_start_trials": broken,
                      "success_rate": wins / len(recs),
                      "mean_steps_success": (sum(steps) / len(steps)) if steps else None,
                      "mean_wall_s": sum(r.get("wall_s", 0.0) for r in recs) / len(recs)})
        suites[suite][0] += wins
        suites[suite][1] += len(recs)
    suite_rows = [{"suite": s, "episodes": n, "successes": w, "success_rate": w / n}
                  for s, (w, n) in sorted(suites.items())]
    unpinned = sum(bool(r.get("unpinned_sim")) for r in records)
    return {"tasks": tasks, "suites": suite_rows, "unpinned_sim_episodes": unpinned}


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["| suite | task | success | rate | mean steps (successes) | s/episode | broken starts |",
             "|---|---|---|---|---|---|---|"]
    for t in summary["tasks"]:
        steps = f"{t['mean_steps_success']:.0f}" if t["mean_steps_success"] is not None else "-"
        broken = t.get("broken_start_trials") or []
        lines.append(f"| {t['suite']} | {t['task_id']}: {t['task'].replace('_', ' ')} | "
                     f"{t['successes']}/{t['episodes']} | {100 * t['success_rate']:.1f}% | "
                     f"{steps} | {t['mean_wall_s']:.1f} | "
                     f"{', '.join(map(str, broken)) if broken else '-'} |")
    lines += ["", "| suite | success | rate |", "|---|---|---|"]
    for s in summary["suites"]:
        lines.append(f"| {s['suite']} | {s['successes']}/{s['episodes']} | "
                     f"{100 * s['success_rate']:.1f}% |")
    if any(t.get("broken_start_trials") for t in summary["tasks"]):
        lines += ["", "broken starts: trials whose BDDL :init relations did not hold after the wait steps "
                  "(they stay in the protocol; see the episodes' premise_failed)"]
    if summary.get("simulator"):
        from rocket_vla.envs.simstack import stack_line

        lines += ["", f"simulator: {stack_line(summary['simulator'])}"]
    if summary.get("unpinned_sim_episodes"):
        lines.append(f"{summary['unpinned_sim_episodes']} episodes ran on an unpinned simulator stack "
                     "(--allow_unpinned_sim): not comparable with the official clients' results")
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> dict[str, Any]:
    from rocket_vla.envs.robustness import write_robustness

    records = read_results(out / RESULTS_FILE)
    summary = summarize(records)
    cfg_path = out / RUN_CONFIG
    if cfg_path.is_file():
        summary["simulator"] = json.loads(cfg_path.read_text(encoding="utf-8")).get("simulator")
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    write_robustness(out, records)  # only when LIBERO-PRO suites are among the results
    return summary

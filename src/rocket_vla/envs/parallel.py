"""A tiny process pool for simulator work: spawned workers, per-item results, clean errors.

Evaluation and collection both need the same thing: N spawned processes (EGL/MuJoCo
contexts do not survive fork) pulling task-sized jobs from a queue, each keeping its
environment alive for the whole job, and streaming one result per episode back to the
parent, which records it immediately (so killing the parent loses only episodes in flight).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from rocket_vla.errors import RocketError

#: run_jobs(config, jobs, emit): runs jobs in the calling process, emit(record) per episode.
RunJobs = Callable[[Any, Iterable[Any], Callable[[Any], None]], None]


def exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """End this process as soon as ``parent`` is gone (checked by a daemon thread).

    A worker is busy inside one job (a task's trials, for minutes) and never looks at its
    queue then; without this, a killed parent (kill -9, no cleanup runs) would leave its
    simulator workers running to the end of their jobs, writing results nobody reads.
    """
    import threading
    import time

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)  # no cleanup to run: the parent owns every result file
            time.sleep(interval)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker(run_jobs: RunJobs, config: Any, jobs: Any, results: Any, parent: int) -> None:
    exit_with_parent(parent)
    try:
        while True:
            if os.getppid() != parent:  # the parent was killed: stop instead of running on
                return
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            run_jobs(config, [job], lambda rec: results.put(("item", rec)))
        results.put(("done", None))
    except RocketError as err:
        results.put(("user_error", str(err)))
    except BaseException:  # report instead of leaving the parent waiting
        results.put(("error", traceback.format_exc()))


def run_parallel(run_jobs: RunJobs, config: Any, jobs: list[Any], workers: int,
                 emit: Callable[[Any], None]) -> None:
    """Run ``jobs`` on ``workers`` spawned processes; call ``emit`` in the parent per item.

    ``run_jobs`` must be a module-level function (workers import it by name). A worker's
    :class:`RocketError` is re-raised as such; any other failure carries its traceback.
    """
    if workers <= 1 or len(jobs) <= 1:
        run_jobs(config, jobs, emit)
        return
    ctx = mp.get_context("spawn")
    job_q, res_q = ctx.Queue(), ctx.Queue()
    for job in jobs:
        job_q.put(job)
    n = min(workers, len(jobs))
    procs = [ctx.Process(target=_worker, args=(run_jobs, config, job_q, res_q, os.getpid()), daemon=True)
             for _ in range(n)]
    for p in procs:
        p.start()
    finished = 0

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the cleanup below, then exit

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while finished < n:
            try:
                kind, payload = res_q.get(timeout=5.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError("all simulator workers died without reporting") from None
                continue
            if kind == "item":
                emit(payload)
            elif kind == "done":
                finished += 1
            elif kind == "user_error":
                raise RocketError(payload)
            else:
                raise RuntimeError(f"a simulator worker failed:\n{payload}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_workers(procs)


def stop_workers(procs: Iterable[Any]) -> None:
    """End the worker processes still running (a failed or interrupted run) and reap them all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
        p.join(timeout=10)


def split_jobs(jobs: list[Any], workers: int, make: Callable[[Any, tuple], Any]) -> list[Any]:
    """Split per-task jobs into pieces so every worker has work even with few tasks.

    ``make(job, items)`` rebuilds a job with a subset of its ``items`` tuple.
    """
    if workers <= 1 or len(jobs) >= 2 * workers:
        return jobs
    pieces = []
    for job in jobs:
        items = job.items
        n = max(1, min(len(items), (2 * workers) // max(1, len(jobs))))
        size = -(-len(items) // n)
        pieces += [make(job, items[i:i + size]) for i in range(0, len(items), size)]
    return pieces


def run_recorded(run_jobs: RunJobs, config: Any, jobs: list[Any], workers: int,
                 make: Callable[[Any, tuple], Any], log_path: Any, *, desc: str, label: str,
                 progress: bool, execute: Callable[..., Any] | None = None) -> Any:
    """Run ``jobs`` (each with ``.items``) split over ``workers``, appending every episode
    record to the JSON-lines file ``log_path`` the moment it arrives (so a killed run resumes
    from what was written), with a progress bar counting successes as ``label``.

    Collection and evaluation share this: both are episodes of scripted or learned policies
    whose records are the run's only state. ``execute(run_jobs, config, jobs, workers, emit)``
    replaces this module's pool (batched evaluation's policy server); what it returns is
    returned."""
    from tqdm import tqdm

    from rocket_vla import records as run_records

    total = sum(len(j.items) for j in jobs)
    bar = tqdm(total=total, desc=desc, unit="ep", disable=not progress or total == 0)
    wins = 0
    with run_records.open_for_append(log_path) as fh:

        def emit(rec: dict[str, Any]) -> None:
            nonlocal wins
            run_records.append(fh, rec)
            wins += bool(rec["success"])
            bar.update(1)
            bar.set_postfix({label: f"{wins}/{bar.n}"})

        result = (execute or run_parallel)(run_jobs, config, split_jobs(jobs, workers, make), workers, emit)
    bar.close()
    return result

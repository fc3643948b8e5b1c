"""Independent jobs (training runs) in spawned processes, single-threaded torch each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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

"""One policy, many simulators: spawned workers step LIBERO, the parent answers with batches.

Why this shape: a learned policy is the expensive, shareable part (one copy of a 3.5 B model
on the GPU), the simulator is the part that needs processes (MuJoCo/EGL state does not
survive fork, and physics is single-threaded). So each worker runs the ordinary episode loop
(:func:`rocket_vla.envs.runner.run_jobs`) with a :class:`RemotePolicy` in place of the model:
``act(obs)`` sends the observation to the parent over a pipe and blocks for the chunk. The
parent (:func:`run_batched`) waits on all pipes at once, gathers the workers that are waiting
for an action and answers all of them with ONE forward pass (``policy.act_batch``), while
recording every finished episode the moment it arrives. Episodes end independently; a worker
that finishes a job takes the next one from the shared queue.

Determinism: everything random in prediction is drawn from a per-episode generator seeded
from the episode's identity (``begin_episode``), the environments are the workers' own, and
every batched forward pass has one row per worker (:meth:`Answerer._padded`), so an episode's
result does not depend on which others shared its batches or on timing. A policy without
``act_batch`` (the scripted experts, a user's callable) gets one copy per worker slot in the
parent, called one observation at a time.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from rocket_vla.envs.parallel import exit_with_parent, stop_workers
from rocket_vla.errors import RocketError

#: run_jobs(config, jobs, emit, policy): the episode loop, with the policy handed in.
RunJobs = Callable[[Any, Iterable[Any], Callable[[Any], None], Any], None]
#: Attributes of a policy that the runner reads with getattr; the proxy carries them.
DECLARED = ("needs_images", "needs_state", "gripper", "actions_per_chunk", "on_error")


def declared_attributes(policy: Any) -> dict[str, Any]:
    """The runner-facing declarations of ``policy`` (only those it sets)."""
    return {k: getattr(policy, k) for k in DECLARED if getattr(policy, k, None) is not None}


class RemotePolicy:
    """A worker's stand-in for the policy that lives in the parent (one pipe, one episode)."""

    def __init__(self, conn: Connection, declared: dict[str, Any]) -> None:
        self._conn = conn
        self._seed = 0
        for key, value in declared.items():
            setattr(self, key, value)

    def begin_episode(self, seed: int) -> None:
        self._seed = int(seed)

    def reset(self, task: Any) -> None:
        self._conn.send(("reset", (task, self._seed)))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self._conn.send(("act", obs))
        kind, payload = self._conn.recv()
        if kind == "raise":
            raise payload
        return payload


@dataclass
class ServerStats:
    """What the parent measured: forward passes, their batch sizes and time, memory."""

    forward_calls: int = 0
    observations: int = 0
    policy_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        sizes = self.batch_sizes
        return {"forward_calls": self.forward_calls, "observations": self.observations,
                "policy_s": round(self.policy_s, 3),
                "mean_batch": round(sum(sizes) / len(sizes), 3) if sizes else 0.0,
                "max_batch": max(sizes, default=0)}


class Answerer:
    """Keeps each worker slot's episode state and answers waiting slots, batched when it can."""

    def __init__(self, policy: Any, rebuild: Callable[[], Any], width: int = 1) -> None:
        self.policy = policy
        self.width = width  # rows of every batched forward pass: one per worker slot
        self.batched = callable(getattr(policy, "act_batch", None)) and callable(
            getattr(policy, "new_episode", None))
        self._rebuild = rebuild
        self._copies: dict[int, Any] = {}
        self._episodes: dict[int, Any] = {}
        self.stats = ServerStats()

    def _copy(self, slot: int) -> Any:
        if slot not in self._copies:  # the first slot reuses the policy already built
            self._copies[slot] = self.policy if not self._copies else self._rebuild()
        return self._copies[slot]

    def reset(self, slot: int, task: Any, seed: int) -> None:
        if self.batched:
            self._episodes[slot] = self.policy.new_episode(task, seed)
            return
        copy = self._copy(slot)
        begin = getattr(copy, "begin_episode", None)
        if callable(begin):
            begin(seed)
        copy.reset(task)

    def answer(self, pending: dict[int, Any]) -> dict[int, tuple[str, Any]]:
        """``slot -> ("chunk", actions) | ("raise", exception)`` for every waiting slot.

        A batch that raises is retried one observation at a time, so the exception lands on
        the episode that caused it (``on_error=fail`` then fails only that one)."""
        slots = sorted(pending)
        start = time.perf_counter()
        try:
            if self.batched:
                chunks = self._padded({s: pending[s] for s in slots})
                self._count(len(slots), start)
                return {s: ("chunk", chunks[s]) for s in slots}
        except Exception:  # noqa: BLE001 -- find the episode it belongs to, below
            pass
        out = {}
        for slot in slots:
            start = time.perf_counter()
            try:
                if self.batched:
                    out[slot] = ("chunk", self._padded({slot: pending[slot]})[slot])
                else:
                    out[slot] = ("chunk", self._copy(slot).act(pending[slot]))
            except Exception as err:  # noqa: BLE001 -- the policy's code is arbitrary
                out[slot] = ("raise", err)
            self._count(1, start)
        return out

    def _padded(self, pending: dict[int, Any]) -> dict[int, Any]:
        """``policy.act_batch`` over a batch of fixed size, each waiting slot's observation in
        its own row and copies of one of them (with throwaway episode states) in the rest.

        Why fixed: CPU kernels take another path for a batch of one than for several, so the
        same observation gives actions that differ in the last bits, and over a long episode
        those bits can decide success. With every forward pass the same size, an episode's
        actions no longer depend on how many other workers happened to be waiting at that
        moment (machine load, timing); they depend on the number of workers only."""
        first = min(pending)
        rows = range(max(self.width, max(pending) + 1))
        observations = [pending.get(r, pending[first]) for r in rows]
        episodes = [self._episodes[r] if r in pending
                    else self.policy.new_episode(self._episodes[first].instruction, 0) for r in rows]
        chunks = self.policy.act_batch(observations, episodes)
        return {r: chunks[r] for r in pending}

    def _count(self, size: int, start: float) -> None:
        self.stats.forward_calls += 1
        self.stats.observations += size
        self.stats.batch_sizes.append(size)
        self.stats.policy_s += time.perf_counter() - start


class LocalPolicy:
    """One simulator in this process: the episode loop asks :class:`Answerer` directly (no
    processes, no pipes), so the episode's stream and the counts are those of a batched run."""

    def __init__(self, answerer: Answerer) -> None:
        self.answerer = answerer
        self._seed = 0
        for key, value in declared_attributes(answerer.policy).items():
            setattr(self, key, value)

    def begin_episode(self, seed: int) -> None:
        self._seed = int(seed)

    def reset(self, task: Any) -> None:
        self.answerer.reset(0, task, self._seed)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        kind, payload = self.answerer.answer({0: obs})[0]
        if kind == "raise":
            raise payload
        return payload


def portable(err: Exception) -> Exception:
    """``err`` if it survives pickling (to be re-raised in the worker), else a RuntimeError
    with the same text."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # noqa: BLE001 -- any pickling failure
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err


def _worker(run_jobs: RunJobs, config: Any, jobs: Any, conn: Connection, parent: int,
            declared: dict[str, Any]) -> None:
    exit_with_parent(parent)
    policy = RemotePolicy(conn, declared)
    try:
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            run_jobs(config, [job], lambda rec: conn.send(("item", rec)), policy)
        conn.send(("done", None))
    except RocketError as err:
        conn.send(("user_error", str(err)))
    except BaseException:  # report instead of leaving the parent waiting
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))


class _Pool:
    """The parent's view of the workers: who is still running, who waits for an action."""

    def __init__(self, conns: list[Connection], procs: list[Any], answerer: Answerer,
                 emit: Callable[[Any], None]) -> None:
        self.conns, self.procs, self.answerer, self.emit = conns, procs, answerer, emit
        self.active = set(range(len(conns)))
        self.pending: dict[int, Any] = {}

    def _receive(self, slot: int) -> None:
        try:
            kind, payload = self.conns[slot].recv()
        except EOFError:
            raise RuntimeError(f"simulator worker {slot} died without reporting") from None
        if kind == "act":
            self.pending[slot] = payload
        elif kind == "reset":
            self.answerer.reset(slot, *payload)
        elif kind == "item":
            self.emit(payload)
        elif kind == "done":
            self.active.discard(slot)
        elif kind == "user_error":
            raise RocketError(payload)
        else:
            raise RuntimeError(f"a simulator worker failed:\n{payload}")

    def _poll(self, timeout: float) -> bool:
        """Read every message that arrives within ``timeout``; False when none did."""
        busy = [self.conns[s] for s in self.active if s not in self.pending]
        ready = wait(busy, timeout=timeout) if busy else []
        for conn in ready:
            self._receive(self.conns.index(conn))
        return bool(ready)

    def serve(self, linger: float) -> None:
        while self.active:
            if not self.pending and not self._poll(5.0):
                if not any(p.is_alive() for p in self.procs):
                    raise RuntimeError("all simulator workers died without reporting")
                continue
            # wait a moment for workers still stepping, so they share this forward pass
            deadline = time.perf_counter() + linger
            while len(self.pending) < len(self.active):
                left = deadline - time.perf_counter()
                if left <= 0 or not self._poll(left):
                    break
            if self.pending:
                for slot, (kind, payload) in self.answerer.answer(self.pending).items():
                    self.conns[slot].send((kind, portable(payload) if kind == "raise" else payload))
                self.pending = {}


@contextlib.contextmanager
def cores_left_to_simulators(workers: int) -> Any:
    """Let torch in this process use only the cores the simulator workers leave (at least one).

    Each worker keeps one core busy with physics and rendering; torch's intra-op threads on the
    same cores spin against them and slow every forward pass many times over (docs/benchmarks.md,
    batched evaluation, gives the figures)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_batched(run_jobs: RunJobs, config: Any, jobs: list[Any], workers: int,
                emit: Callable[[Any], None], *, policy: Any, rebuild: Callable[[], Any],
                linger: float = 0.02) -> dict[str, Any]:
    """Run ``jobs`` on ``workers`` spawned simulator processes that share ``policy`` (built in
    this process; one worker or one job runs here, without processes); return the
    :class:`ServerStats` as a dict.

    ``rebuild()`` builds another copy for a policy that cannot batch (one per worker slot).
    ``linger``: seconds the parent waits for busy workers before answering the ones waiting
    (0: answer whoever waits at once)."""
    answerer = Answerer(policy, rebuild, width=workers)
    if workers <= 1 or len(jobs) <= 1:
        run_jobs(config, jobs, emit, LocalPolicy(answerer))
        return answerer.stats.as_dict()
    declared = declared_attributes(policy)
    ctx = mp.get_context("spawn")
    job_q = ctx.Queue()
    for job in jobs:
        job_q.put(job)
    n = min(workers, len(jobs))
    pipes = [ctx.Pipe() for _ in range(n)]
    procs = [ctx.Process(target=_worker, args=(run_jobs, config, job_q, child, os.getpid(), declared),
                         daemon=True) for _, child in pipes]
    for p in procs:
        p.start()
    for _, child in pipes:
        child.close()  # the parent sees EOF when a worker dies

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the cleanup below, then exit

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with cores_left_to_simulators(n):
            _Pool([parent for parent, _ in pipes], procs, answerer, emit).serve(linger)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_workers(procs)
    return answerer.stats.as_dict()

"""Policies for measuring evaluation throughput: random-weight students and action replay.

Why they live in the package: evaluation names a policy by import path, and per-worker
workers rebuild it from that path, so the benchmarks' policies must be importable by any
process. Neither is meant for results: a random student never solves a task (every episode
runs its whole step budget, the slowest case), and the replay policy exists to measure the
simulator alone.

* :func:`random_student` -- a student of a preset (MiniVLA ``tiny``, pi0 ``tiny`` or ``base``
  = pi0's default size) with seeded random weights, optionally in bf16 on a GPU, wrapped in
  the evaluation's :class:`~rocket_vla.policies.student_policy.StudentPolicy`; with
  ``record=PATH`` every chunk it returns is appended to PATH (JSON lines, keyed by episode seed).
* :func:`replay` -- returns the chunks such a record holds, episode by episode, at no cost:
  the same episodes as the recorded run with the policy's time taken out (the floor of the
  protocol on this machine).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rocket_vla.errors import RocketError
from rocket_vla.policies.student_policy import StudentPolicy

#: Identity statistics: a random student's normalised outputs are the actions themselves.
IDENTITY_STATS = {"action": {"low": [-1.0] * 7, "high": [1.0] * 7},
                  "proprio": {"low": [-1.0] * 8, "high": [1.0] * 8}}
DTYPES = ("float32", "bfloat16")


def random_student(kind: str = "minivla", preset: str = "tiny", device: str = "cpu",
                   dtype: str = "float32", seed: int = 0, record: str | None = None) -> Any:
    """A random-weight student as an evaluation policy (see the module docstring)."""
    import torch

    from rocket_vla.policies.student import build_student

    if dtype not in DTYPES:
        raise RocketError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    torch.manual_seed(seed)
    with torch.device(device):  # a default-size pi0 is built where it runs, not copied there
        student = build_student(kind, preset)
    student = student.to(device=device, dtype=getattr(torch, dtype))
    cls = RecordingPolicy if record else StudentPolicy
    policy = cls(student, {"stats": IDENTITY_STATS})
    if record:
        policy.record_to = Path(record)
    return policy


class RecordingPolicy(StudentPolicy):
    """A StudentPolicy that appends every chunk to ``record_to`` under its episode's seed."""

    record_to: Path

    def act_batch(self, observations: list[dict[str, np.ndarray]], episodes: list[Any]
                  ) -> list[np.ndarray]:
        chunks = super().act_batch(observations, episodes)
        with self.record_to.open("a", encoding="utf-8") as fh:
            for episode, chunk in zip(episodes, chunks, strict=True):
                fh.write(json.dumps({"seed": episode.seed, "chunk": chunk.tolist()}) + "\n")
        return chunks


class ReplayPolicy:
    """Returns a recorded run's chunks for each episode in order; reads the cameras' frames
    like the recorded student (so rendering costs the same) and computes nothing."""

    needs_images = True
    gripper = "signed"

    def __init__(self, log: str) -> None:
        self.chunks: dict[int, list[np.ndarray]] = defaultdict(list)
        for line in Path(log).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            self.chunks[int(row["seed"])].append(np.asarray(row["chunk"], dtype=np.float32))
        self._seed = 0
        self._calls = 0

    def begin_episode(self, seed: int) -> None:
        self._seed = int(seed)

    def reset(self, task: Any) -> None:
        self._calls = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        recorded = self.chunks.get(self._seed, [])
        if self._calls >= len(recorded):
            raise RocketError(f"the replay log has {len(recorded)} chunks for episode seed {self._seed}; "
                              "record the same episodes (suites, tasks, trials, steps) first.")
        self._calls += 1
        return recorded[self._calls - 1]


def replay(log: str) -> ReplayPolicy:
    """Factory of :class:`ReplayPolicy` (``--policy rocket_vla.envs.bench_policies:replay``)."""
    return ReplayPolicy(log)

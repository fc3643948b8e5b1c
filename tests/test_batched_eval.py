"""Batched evaluation: one policy in the parent answers many simulator workers.

What must hold: batching is invisible in the results. A student's chunk for an episode is the
same alone or in a batch of 4 (pi0's noise comes from the episode's own generator); the
batched runner gives the same episodes, trial by trial, as the per-worker runner on the real
simulator (expert and MiniVLA), with batches that really hold both workers; the GPU
benchmark's dry run works on a CPU.

Why MiniVLA's chunks are rounded to 0.01 in the simulator test: a float32 forward pass over
two rows is not bitwise the one over one row (the matrix kernels block differently; the
chunks differ by ~1e-7, see the first test), and the records compare MuJoCo states bit for
bit (``final_state`` digests). Rounding makes "equal within float tolerance" show as equal
records; the expert needs no rounding (it is not batched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from minivla_fixtures import single_thread

from rocket_vla.envs.policy import TaskInfo
from rocket_vla.envs.runner import EvalConfig, read_results, run_evaluation
from rocket_vla.policies.student import build_student
from rocket_vla.policies.student_policy import StudentPolicy

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ("pick up the black bowl and place it on the plate", "open the top drawer",
             "turn on the stove", "put both the alphabet soup and the tomato sauce in the basket")
STATS = {"action": {"low": [-1.0] * 7, "high": [1.0] * 7},
         "proprio": {"low": [-1.0] * 8, "high": [1.0] * 8}}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def random_student_policy(kind: str = "minivla", seed: int = 0) -> StudentPolicy:
    """A tiny student with seeded random weights: the same model in every process."""
    torch.manual_seed(seed)
    return StudentPolicy(build_student(kind, "tiny"), {"stats": STATS})


class RoundedPolicy(StudentPolicy):
    """A StudentPolicy whose chunks are rounded to 0.01 (see the module docstring)."""

    def act_batch(self, observations, episodes):
        return [np.round(c, 2) for c in super().act_batch(observations, episodes)]


def make_minivla() -> StudentPolicy:
    """Policy factory the simulator test names by import path (per-worker workers rebuild it)."""
    torch.manual_seed(0)
    return RoundedPolicy(build_student("minivla", "tiny"), {"stats": STATS})


def _episodes(out: Path, policy: str, inference: str, workers: int) -> tuple[list[tuple], dict]:
    cfg = EvalConfig(out_dir=str(out), suites=["libero_object"], tasks=[0], trials=2, policy=policy,
                     image_size=64, max_steps=16, workers=workers, inference=inference, batch_wait=10.0)
    stats: dict = {}
    run_evaluation(cfg, progress=False, stats=stats)
    records = sorted(read_results(out / "episodes.jsonl"), key=lambda r: r["trial"])
    return [(r["trial"], r["success"], r["steps"], r["policy_calls"], r["error"], r["final_state"])
            for r in records], stats


@pytest.mark.libero
@pytest.mark.parametrize("policy", ["expert", "test_batched_eval:make_minivla"])
def test_batched_runner_gives_the_per_worker_episodes(policy: str, tmp_path: Path) -> None:
    """Two trials on two simulator workers, served by one policy in this process, against the
    per-worker runner (each worker its own copy): equal records trial by trial; MiniVLA's
    decisions were answered in batches of two."""
    pytest.importorskip("libero.libero")
    batched, stats = _episodes(tmp_path / "batched", policy, "batched", 2)
    per_worker, none = _episodes(tmp_path / "per_worker", policy, "per_worker", 2)
    assert batched == per_worker and len(batched) == 2 and not none
    calls = sum(row[3] for row in batched)
    assert stats["observations"] == calls
    if policy != "expert":
        assert stats["max_batch"] == 2 and stats["forward_calls"] < calls


def _observations(n: int, steps: int, size: int = 48) -> list[list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(1)
    return [[{"agentview": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
              "wrist": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
              "proprio": rng.uniform(-1, 1, 8).astype(np.float32)} for _ in range(steps)]
            for _ in range(n)]


@pytest.mark.parametrize("kind", ["pi0", "pi05", "minivla"])
def test_an_episode_acts_the_same_alone_and_in_a_batch_of_four(kind: str) -> None:
    """Four episodes of different instructions, three decisions each: every chunk of an episode
    run alone equals its chunk when the four share each forward pass (float tolerance), and
    pi0's / pi0.5's noise is the episode's own (a different seed gives different actions)."""
    policy = random_student_policy(kind)
    obs = _observations(4, 3)
    tasks = [TaskInfo("libero_goal", i, f"t{i}", lang) for i, lang in enumerate(LANGUAGES)]
    alone = []
    for i, task in enumerate(tasks):
        episode = policy.new_episode(task, seed=100 + i)
        alone.append([policy.act_batch([o], [episode])[0] for o in obs[i]])
    episodes = [policy.new_episode(task, seed=100 + i) for i, task in enumerate(tasks)]
    batched = [policy.act_batch([obs[i][t] for i in range(4)], episodes) for t in range(3)]
    for i in range(4):
        for t in range(3):
            np.testing.assert_allclose(batched[t][i], alone[i][t], atol=1e-5, rtol=0)
    # the single-episode interface is the same call
    policy.begin_episode(100)
    policy.reset(tasks[0])
    np.testing.assert_allclose(policy.act(obs[0][0]), alone[0][0], atol=1e-5, rtol=0)
    if kind in ("pi0", "pi05"):
        other = policy.act_batch([obs[0][0]], [policy.new_episode(tasks[0], seed=7)])[0]
        assert np.abs(other - alone[0][0]).max() > 1e-3


@pytest.mark.libero
def test_gpu_benchmark_dry_run_on_cpu(tmp_path: Path) -> None:
    """The GPU script's CPU mode: a tiny pi0 served to 1 and 2 simulator workers, real LIBERO
    episodes, a JSON and a markdown table with episodes/min, the 2,000-episode projection and
    memory."""
    pytest.importorskip("libero.libero")
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MUJOCO_GL": "egl", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_batched_eval.sh"), str(out), "cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "batched_eval.json").read_text())
    rows = result["rows"]
    assert [r["workers"] for r in rows] == [1, 2]
    assert all(r["episodes"] == 2 and r["episodes_per_min"] > 0 for r in rows)
    assert result["projection_2000_min"] > 0 and "episodes/min" in (out / "batched_eval.md").read_text()


# -- faults of the policy server (real spawned workers, no simulator) ---------------------------
def _pipe_jobs(config: dict, jobs, emit, policy) -> None:
    """A worker's episode loop without a simulator: three decisions per job on fixed
    observations; job "die" SIGKILLs its own process mid-episode."""
    obs = _observations(4, 3)
    for job in jobs:
        task = TaskInfo("libero_goal", job, f"t{job}", LANGUAGES[job % 4]) if job != "die" else None
        policy.begin_episode(100 + (job if job != "die" else 0))
        policy.reset(task or TaskInfo("libero_goal", 0, "t0", LANGUAGES[0]))
        if job == "die":
            os.kill(os.getpid(), 9)
        chunks = [policy.act(o) for o in obs[job]]
        emit({"job": job, "chunks": [c.tolist() for c in chunks]})


@pytest.mark.fault("survived")
def test_a_bad_observation_fails_only_its_own_episode() -> None:
    """One of three waiting episodes sends an observation without its wrist camera: the batch
    is retried one by one, that episode gets the RocketError naming the missing key, the
    other two get the chunks they get alone."""
    from rocket_vla.envs.policy_server import Answerer
    from rocket_vla.errors import RocketError

    policy = random_student_policy("minivla")
    answerer = Answerer(policy, rebuild=lambda: None)
    obs = [o[0] for o in _observations(3, 1)]
    for slot in range(3):
        answerer.reset(slot, TaskInfo("libero_goal", slot, "t", LANGUAGES[slot]), 100 + slot)
    del obs[1]["wrist"]
    replies = answerer.answer(dict(enumerate(obs)))
    kind, err = replies[1]
    assert kind == "raise" and isinstance(err, RocketError) and "observation has no 'wrist'" in str(err)
    for slot in (0, 2):
        alone = policy.act_batch([obs[slot]], [policy.new_episode(LANGUAGES[slot], 100 + slot)])[0]
        np.testing.assert_allclose(replies[slot][1], alone, atol=1e-5, rtol=0)


@pytest.mark.fault("survived")
def test_served_workers_get_their_own_chunks_and_a_killed_worker_is_reported() -> None:
    """Two spawned workers share one MiniVLA through the pipes: each episode's chunks equal
    the ones it gets alone, in batches of two. A worker SIGKILLed mid-episode ends the run
    with an error naming the dead worker instead of a hang."""
    from rocket_vla.envs.policy_server import run_batched

    policy = random_student_policy("minivla")
    records: list[dict] = []
    stats = run_batched(_pipe_jobs, {}, [0, 1], 2, records.append, policy=policy, rebuild=make_minivla,
                        linger=10.0)
    assert sorted(r["job"] for r in records) == [0, 1] and stats["max_batch"] == 2
    obs = _observations(4, 3)
    for rec in records:
        episode = policy.new_episode(TaskInfo("libero_goal", rec["job"], "t", LANGUAGES[rec["job"]]),
                                     100 + rec["job"])
        for t, chunk in enumerate(rec["chunks"]):
            np.testing.assert_allclose(chunk, policy.act_batch([obs[rec["job"]][t]], [episode])[0],
                                       atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="died without reporting"):
        run_batched(_pipe_jobs, {}, ["die", 0], 2, records.append, policy=policy, rebuild=make_minivla)


@pytest.mark.fault("refused")
def test_unknown_inference_settings_are_refused(tmp_path: Path) -> None:
    from rocket_vla.errors import RocketError

    with pytest.raises(RocketError, match="unknown --inference 'gpu'; use one of batched, per_worker"):
        EvalConfig(out_dir=str(tmp_path), inference="gpu")
    with pytest.raises(RocketError, match="--batch_wait must be between 0 and 60 seconds"):
        EvalConfig(out_dir=str(tmp_path), batch_wait=-1)
    assert not any(tmp_path.iterdir())


def _act_forever(folder: str, jobs, emit, policy) -> None:
    """A worker that marks itself with a file, then asks for actions without end."""
    Path(folder, f"worker-{os.getpid()}").touch()
    policy.reset(TaskInfo("libero_goal", 0, "t0", LANGUAGES[0]))
    obs = _observations(1, 1)[0][0]
    while True:
        policy.act(obs)


def serve_forever(folder: str) -> None:
    """Entry point of the killed parent below: one MiniVLA serving two endless workers."""
    from rocket_vla.envs.policy_server import run_batched

    run_batched(_act_forever, folder, [0, 1], 2, print, policy=random_student_policy(), rebuild=make_minivla)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.fault("survived")
def test_simulator_workers_exit_when_the_policy_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL the process that holds the policy while its two workers wait on it: both
    workers end within seconds instead of waiting for an answer forever."""
    import time

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}"}
    parent = subprocess.Popen([sys.executable, "-c", "import sys, test_batched_eval as t; "
                               "t.serve_forever(sys.argv[1])", str(tmp_path)], cwd=ROOT / "tests", env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("worker-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # let them reach act()
    finally:
        parent.kill()
        parent.wait(timeout=30)
    pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
    assert len(pids) == 2
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def test_a_slot_gets_the_same_bits_alone_or_with_others_waiting() -> None:
    """Every forward pass has one row per worker: an episode's chunk is bit-identical whether
    the other worker was waiting at the same moment or not (a batch of one takes another
    kernel path, whose last-bit differences can change an episode's outcome)."""
    from rocket_vla.envs.policy_server import Answerer

    policy = random_student_policy("minivla")
    obs = [o[0] for o in _observations(2, 1)]

    def fresh() -> Answerer:
        answerer = Answerer(policy, rebuild=lambda: None, width=2)
        for slot in range(2):
            answerer.reset(slot, TaskInfo("libero_goal", slot, "t", LANGUAGES[slot]), 100 + slot)
        return answerer

    together = fresh().answer({0: obs[0], 1: obs[1]})
    alone = {slot: fresh().answer({slot: obs[slot]})[slot] for slot in range(2)}
    for slot in range(2):
        assert together[slot][0] == alone[slot][0] == "chunk"
        assert np.array_equal(together[slot][1], alone[slot][1])

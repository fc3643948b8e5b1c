"""One evaluation episode under the paper's protocol (no process management, no files).

Protocol: reset to init state k, 10 no-op steps, then whole action chunks executed
open-loop until the task is solved (the env reports done) or the suite's step budget is
spent. Images are rendered only after the last action of a chunk, i.e. when the policy is
about to read them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from rocket_vla.envs.libero_env import LiberoEnv
from rocket_vla.envs.policy import Policy, TaskInfo
from rocket_vla.envs.processing import model_to_env_actions
from rocket_vla.envs.suites import NUM_WAIT_STEPS, STEP_BUDGETS

#: LIBERO env action that keeps the arm still with the gripper open (-1 = open).
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1.0])


@dataclass
class EpisodeResult:
    """What one episode produced; ``frames`` holds agentview images only when recorded."""

    success: bool
    steps: int  # policy steps executed (no-op steps excluded)
    policy_calls: int
    wall_s: float
    frames: list[np.ndarray] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed the RNGs a policy may use (python, numpy, torch if already imported)."""
    import sys

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def run_episode(env: LiberoEnv, policy: Policy, init_state: np.ndarray, *, seed: int = 0,
                max_steps: int | None = None, num_wait: int = NUM_WAIT_STEPS,
                record: bool = False) -> EpisodeResult:
    """Run one episode of ``env.task`` from ``init_state`` and report success."""
    task = env.task
    budget = STEP_BUDGETS[task.suite] if max_steps is None else int(max_steps)
    needs_images = bool(getattr(policy, "needs_images", True))
    needs_state = bool(getattr(policy, "needs_state", False))
    gripper = getattr(policy, "gripper", "unit")
    render = needs_images or record
    start = time.perf_counter()
    seed_everything(seed)
    env.reset(init_state, render=render and num_wait == 0, seed=seed)
    policy.reset(TaskInfo(task.suite, task.task_id, task.name, task.language))
    for i in range(num_wait):
        env.step(NOOP_ACTION, render=render and i == num_wait - 1)
    steps = calls = 0
    frames: list[np.ndarray] = []
    success = False
    while steps < budget and not success:
        obs = env.observation(images=render, state=needs_state)
        obs["step"] = np.asarray(steps, dtype=np.int64)
        if record:
            frames.append(obs["agentview"])
        if not needs_images:
            obs.pop("agentview", None)
            obs.pop("wrist", None)
        actions = model_to_env_actions(policy.act(obs), gripper)
        calls += 1
        for j, action in enumerate(actions):
            last = j == len(actions) - 1 or steps + 1 >= budget
            success = env.step(action, render=render and last)
            steps += 1
            if success or steps >= budget:
                break
    if record:
        frames.append(env.observation(images=True)["agentview"] if render else frames[-1])
    return EpisodeResult(success, steps, calls, time.perf_counter() - start, frames)

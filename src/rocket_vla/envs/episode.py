"""One evaluation episode under the paper's protocol (no process management, no files).

Protocol: reset to init state k, 10 no-op steps, then the first ``actions_per_chunk``
actions of each returned chunk executed open-loop (all of them by default) until the task
is solved (the env reports done) or the suite's step budget is spent. Images are rendered
only after the last executed action of a chunk, i.e. when the policy is about to read them.
How the policy's outputs are interpreted (gripper convention, actions per chunk, what an
exception means) is an :class:`EpisodeSettings`, resolved from the evaluation config and the
policy's own declarations by :func:`resolve_settings`.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rocket_vla.envs.libero_env import LiberoEnv
from rocket_vla.envs.policy import Policy, TaskInfo
from rocket_vla.envs.processing import GRIPPER_CONVENTIONS, model_to_env_actions
from rocket_vla.envs.suites import NUM_WAIT_STEPS, STEP_BUDGETS
from rocket_vla.errors import RocketError

#: LIBERO env action that keeps the arm still with the gripper open (-1 = open).
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1.0])


ON_ERROR = ("abort", "fail")


@dataclass(frozen=True)
class EpisodeSettings:
    """How the runner reads a policy's outputs; the official clients differ on each.

    gripper: "unit" / "signed" (binarise and invert, the OpenVLA-OFT client) or "env"
        (pass the value through, the openpi client); see
        :func:`~rocket_vla.envs.processing.model_to_env_actions`.
    actions_per_chunk: how many actions of each returned chunk run open-loop before the
        policy is asked again (None = the whole chunk; OpenVLA-OFT executes 8, openpi 5).
    on_error: "abort" stops the run on an exception raised by the policy or by its actions;
        "fail" ends that episode as a failure and records the error (the openpi client).
    """

    gripper: str = "unit"
    actions_per_chunk: int | None = None
    on_error: str = "abort"

    def __post_init__(self) -> None:
        if self.gripper not in GRIPPER_CONVENTIONS:
            raise RocketError(
                f"unknown gripper convention {self.gripper!r}; use one of {', '.join(GRIPPER_CONVENTIONS)}."
            )
        if self.actions_per_chunk is not None and int(self.actions_per_chunk) < 1:
            raise RocketError(
                f"actions per chunk must be >= 1, got {self.actions_per_chunk}; omit it to run whole chunks."
            )
        if self.on_error not in ON_ERROR:
            raise RocketError(f"unknown on-error mode {self.on_error!r}; use 'abort' or 'fail'.")


def resolve_settings(policy: Any, gripper: str | None = None, actions_per_chunk: int | None = None,
                     on_error: str | None = None) -> EpisodeSettings:
    """Explicit settings win; otherwise the policy's attributes (``gripper``,
    ``actions_per_chunk``, ``on_error``); otherwise the defaults of :class:`EpisodeSettings`.

    Policies declare what they were trained with, so the command line only needs flags to
    evaluate a policy that cannot say it (a plain callable around someone else's model).
    """
    default = EpisodeSettings()
    return EpisodeSettings(
        gripper=gripper or getattr(policy, "gripper", None) or default.gripper,
        actions_per_chunk=(actions_per_chunk if actions_per_chunk is not None
                           else getattr(policy, "actions_per_chunk", None)),
        on_error=on_error or getattr(policy, "on_error", None) or default.on_error,
    )


@dataclass
class EpisodeResult:
    """What one episode produced; ``frames`` holds agentview images only when recorded."""

    success: bool
    steps: int  # policy steps executed (no-op steps excluded)
    policy_calls: int
    wall_s: float
    frames: list[np.ndarray] = field(default_factory=list)
    error: str | None = None  # the exception that ended the episode (on_error="fail")
    final_state: str = ""  # sha1 of the final MuJoCo state: equal digests = identical episodes
    premise_failed: list[str] | None = None  # the task's :init relations that did not hold after the wait


def seed_everything(seed: int) -> None:
    """Seed the RNGs a policy may use (python, numpy, torch if already imported)."""
    import sys

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def run_episode(env: LiberoEnv, policy: Policy, init_state: np.ndarray, *, seed: int | None = 0,
                max_steps: int | None = None, num_wait: int = NUM_WAIT_STEPS,
                record: bool = False, settings: EpisodeSettings | None = None,
                premise: Callable[[], list[str]] | None = None) -> EpisodeResult:
    """Run one episode of ``env.task`` from ``init_state`` and report success.

    ``seed``: re-seed the RNGs and the env's fixture placement for this episode alone (the
    per-episode scheme); ``None`` leaves every RNG where it is and lets the env draw its
    placement from its own stream (the official clients' scheme, see
    :meth:`LiberoEnv.seed`). ``premise`` (e.g. :meth:`rocket_vla.envs.premise.Premise.check`)
    runs once after the wait steps; what it returns (the task's start relations that do not
    hold) is recorded, never used to skip the episode.
    """
    task = env.task
    settings = settings or resolve_settings(policy)
    budget = STEP_BUDGETS[task.suite] if max_steps is None else int(max_steps)
    needs_images = bool(getattr(policy, "needs_images", True))
    needs_state = bool(getattr(policy, "needs_state", False))
    render = needs_images or record
    start = time.perf_counter()
    if seed is not None:
        seed_everything(seed)
    env.reset(init_state, render=render and num_wait == 0, seed=seed)
    policy.reset(TaskInfo(task.suite, task.task_id, task.name, task.language))
    for i in range(num_wait):
        env.step(NOOP_ACTION, render=render and i == num_wait - 1)
    premise_failed = premise() if premise is not None else None
    steps = calls = 0
    frames: list[np.ndarray] = []
    success = False
    error = None
    while steps < budget and not success:
        obs = env.observation(images=render, state=needs_state)
        obs["step"] = np.asarray(steps, dtype=np.int64)
        if record:
            frames.append(obs["agentview"])
        if not needs_images:
            obs.pop("agentview", None)
            obs.pop("wrist", None)
        try:
            actions = model_to_env_actions(policy.act(obs), settings.gripper)
            calls += 1
            actions = actions[:settings.actions_per_chunk]
            for j, action in enumerate(actions):
                last = j == len(actions) - 1 or steps + 1 >= budget
                success = env.step(action, render=render and last)
                steps += 1
                if success or steps >= budget:
                    break
        except Exception as err:  # noqa: BLE001 -- the policy's code is arbitrary
            if settings.on_error == "abort":
                raise
            error = f"{type(err).__name__}: {err}"
            break
    if record and frames:
        frames.append(env.observation(images=True)["agentview"] if render else frames[-1])
    digest = hashlib.sha1(np.ascontiguousarray(env.sim_state(), dtype=np.float64).tobytes()).hexdigest()
    return EpisodeResult(success, steps, calls, time.perf_counter() - start, frames, error, digest,
                         premise_failed)


"""What one ``rocket eval`` run does: suites, tasks, trials, workers, protocol, videos.

Every setting is validated when the config is built, so a mistyped flag is refused in one
sentence before a simulator starts; ``rocket eval``'s flags are generated from the fields
(their docstrings are the flags' help).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rocket_vla.errors import RocketError

VIDEO_MODES = ("none", "failures", "successes", "all")
DEVICES = ("auto", "cuda", "cpu")
SEEDING = ("official", "per_episode")
INFERENCE = ("batched", "per_worker")


@dataclass
class EvalConfig:
    """One evaluation run; ``rocket eval``'s flags are generated from these fields."""

    out_dir: str = "runs/eval"
    """run folder: episodes.jsonl, summary.{json,md}, videos"""
    suites: list[str] = field(default_factory=lambda: ["libero_spatial"])
    """libero_spatial | libero_object | libero_goal | libero_10, or a LIBERO-PRO variant
    <suite>_swap|_object|_lan|_task (several: with perturbed suites OUT/robustness.md compares them)"""
    tasks: list[int | str] | None = None
    """task ids or names, applied to every suite (None: all 10)"""
    trials: int = 50
    """trials per task (paper: 50); trial k starts from init state k"""
    first_trial: int = 0
    """first init-state index"""
    policy: str = "expert"
    """registered policy name ('expert' = scripted experts; a student kind such as 'minivla'
    or 'pi0', or 'checkpoint', with --checkpoint RUN from `rocket train`), or
    'package.module:factory', which imports that module and calls that class or function, i.e.
    runs its code: pass only code you trust (a checkpoint may name only registered policies)"""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments of the policy factory (one each: --policy_kwargs.execute 8)"""
    workers: int = 1
    """parallel simulator worker processes"""
    inference: str = "batched"
    """batched (one policy in the main process answers every waiting simulator worker with one
    forward pass; with one worker, all in the main process) or per_worker (each worker builds
    its own copy); the same episodes either way"""
    batch_wait: float = 0.05
    """batched inference: seconds the policy waits for simulators still stepping to join a
    forward pass (0: answer whoever waits at once; larger: fuller batches, idler simulators)"""
    device: str = "auto"
    """where a student policy runs: auto (cuda when a GPU is visible, else cpu), cuda or cpu
    (one copy in the main process, or one per worker with --inference per_worker)"""
    image_size: int = 256
    """camera resolution (256, as the official clients)"""
    render: str = "decision"
    """render cameras only when the policy reads them (decision) or every_step (benchmarks)"""
    seed: int = 0
    """seed of the RNGs (official seeding) or base of the per-episode seeds"""
    seeding: str = "official"
    """official: seed once, env.seed(env_seed) per task env, trial k = k-th reset (OpenVLA-OFT /
    openpi clients); per_episode: re-seed every episode from (seed, suite, task, trial)"""
    env_seed: int = 0
    """official seeding: the env.seed() of every task env (OpenVLA-OFT 0, openpi 7)"""
    start: str = "official"
    """episode start: official (hard reset, nothing after set_init_state, as the official
    clients) or clean (soft reset, controller synced to the init state; not comparable)"""
    allow_unpinned_sim: bool = False
    """run on a simulator stack other than the pinned one (mujoco 3.2.3...); the records and
    the summary then say so"""
    gripper: str | None = None
    """gripper output convention (None: what the policy declares): unit/signed are binarised
    and inverted (OpenVLA-OFT), env passes through (openpi)"""
    actions_per_chunk: int | None = None
    """actions of each chunk executed before re-planning (None: the policy's setting, else the
    whole chunk; OpenVLA-OFT 8, openpi 5)"""
    on_error: str | None = None
    """an exception in the policy aborts the run (abort) or counts the episode as a failure
    (fail, openpi); None: the policy's setting, else abort"""
    shard: tuple[int, int] | str | None = None
    """K/N: run only the K-th (0-based) of N contiguous slices of the (task, trial) list"""
    max_steps: int | None = None
    """step budget per episode (None: the paper's budget per suite)"""
    num_wait: int = 10
    """no-op steps before acting"""
    video: str = "none"
    """record rollouts: none, failures, successes or all"""
    video_format: str = "mp4"
    """mp4 or gif"""
    videos_per_task: int = 2
    """rollouts recorded per task at most"""

    def __post_init__(self) -> None:
        from rocket_vla.envs.suites import normalize_suite

        self.suites = [normalize_suite(s) for s in self.suites]
        self.seeding = self.seeding.replace("-", "_")
        if self.video not in VIDEO_MODES:
            raise RocketError(f"unknown --video {self.video!r}; use one of {', '.join(VIDEO_MODES)}.")
        if self.video_format not in ("mp4", "gif"):
            raise RocketError(f"unknown --video_format {self.video_format!r}; use mp4 or gif.")
        if self.trials < 1 or self.first_trial < 0:
            raise RocketError("--trials must be >= 1 and --first_trial >= 0.")
        if self.workers < 1:
            raise RocketError("--workers must be >= 1.")
        if self.inference not in INFERENCE:
            raise RocketError(f"unknown --inference {self.inference!r}; use one of {', '.join(INFERENCE)}.")
        if not 0 <= self.batch_wait <= 60:
            raise RocketError(f"--batch_wait must be between 0 and 60 seconds, got {self.batch_wait}.")
        if self.device not in DEVICES:
            raise RocketError(f"unknown --device {self.device!r}; use one of {', '.join(DEVICES)}.")
        if self.render not in ("decision", "every_step"):
            raise RocketError(f"unknown --render {self.render!r}; use decision or every_step.")
        if self.max_steps is not None and self.max_steps < 1:
            raise RocketError(f"--max_steps must be >= 1 (or left out for the paper's budget), got "
                              f"{self.max_steps}.")
        for name in ("num_wait", "seed", "videos_per_task"):
            if getattr(self, name) < 0:
                raise RocketError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.image_size < 8:
            raise RocketError(f"--image_size must be at least 8 pixels, got {self.image_size}.")
        from rocket_vla.envs.libero_env import check_start

        check_start(self.start)
        if self.seeding not in SEEDING:
            raise RocketError(f"unknown --seeding {self.seeding!r}; use one of {', '.join(SEEDING)}.")
        if self.gripper is not None or self.actions_per_chunk is not None or self.on_error is not None:
            from rocket_vla.envs.episode import EpisodeSettings

            EpisodeSettings(self.gripper or "unit", self.actions_per_chunk, self.on_error or "abort")
        if self.shard is not None:
            from rocket_vla.envs.shards import check_shard, parse_shard

            self.shard = parse_shard(self.shard) if isinstance(self.shard, str) else check_shard(*self.shard)

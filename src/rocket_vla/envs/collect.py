"""``rocket collect``: scripted-expert demonstrations in the LIBERO HDF5 layout.

Each attempt runs the expert from an official init state (variation 0) or from a randomised
variation of it (objects shifted in the table plane, arm joints jittered), keeps it only if
the task is solved, and writes it as one complete file via
:class:`~rocket_vla.data.episodes.EpisodeWriter`. Cameras (RGB, metric depth, extrinsics)
are rendered only at the steps training will read (every ``frame_stride`` steps), which is
where almost all the time goes. Every attempt, kept or not, is logged to ``attempts.jsonl``
so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rocket_vla import records as run_records
from rocket_vla.envs.parallel import run_recorded
from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import code_version

ATTEMPTS_FILE = "attempts.jsonl"
#: Settings that change what a recorded episode holds; a resumed collection must keep them
#: (which suites, tasks and init states to collect may grow between runs).
EPISODE_FIELDS = ("frame_stride", "image_size", "depth", "seed", "max_steps", "num_wait",
                  "after_success", "variation_xy", "variation_joints", "start")


@dataclass
class CollectConfig:
    """One collection run; ``rocket collect``'s flags are generated from these fields."""

    out_dir: str = "runs/demos"
    """dataset folder (episodes, attempts.jsonl)"""
    suites: list[str] = field(default_factory=lambda: ["libero_spatial"])
    """libero_spatial | libero_object | libero_goal (several: [a,b] or a,b)"""
    tasks: list[int | str] | None = None
    """task ids or names (None: all)"""
    init_states: int = 50
    """official init states per task (first_init .. first_init + init_states - 1)"""
    first_init: int = 0
    """first official init state"""
    variations: int = 0
    """randomised variations per init state (objects shifted, arm jittered)"""
    variation_xy: float = 0.02
    """object shift range in the table plane (metres, uniform)"""
    variation_joints: float = 0.03
    """arm joint jitter (radians, uniform)"""
    frame_stride: int = 1
    """render frames every k steps (1 = every step, like LIBERO)"""
    image_size: int = 128
    """camera resolution"""
    depth: bool = True
    """record metric depth maps (false skips them)"""
    render: str = "decision"
    """every_step only to measure what decision-step rendering saves"""
    workers: int = 1
    """parallel simulator processes"""
    seed: int = 0
    """seed of the variations and the experts"""
    max_steps: int | None = None
    """step budget per attempt (None: the suite's)"""
    num_wait: int = 10
    """no-op steps before the expert acts"""
    after_success: int = 16
    """steps recorded after the task is solved (the release and retreat)"""
    start: str = "official"
    """episode start: official (hard reset, as the official clients and the LIBERO data) or
    clean (soft reset with the controller synced to the init state)"""
    allow_unpinned_sim: bool = False
    """collect on a simulator stack other than the pinned one (the folder records it)"""
    # The solve is detected while the gripper is still opening, so an episode cut at that
    # step holds almost no open-gripper frames after placing; an L1 policy trained on it
    # learns "keep holding" and never lets go. Evaluation stops at success regardless.

    def __post_init__(self) -> None:
        if self.frame_stride < 1:
            raise RocketError("--frame_stride must be >= 1.")
        if self.after_success < 0:
            raise RocketError("--after_success must be >= 0.")
        if self.init_states < 1 or self.variations < 0:
            raise RocketError("--init_states must be >= 1 and --variations >= 0.")
        if self.workers < 1:
            raise RocketError(f"--workers must be >= 1, got {self.workers}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise RocketError(f"--max_steps must be >= 1 (or left out for the suite's budget), got "
                              f"{self.max_steps}.")
        for name in ("num_wait", "seed", "first_init"):
            if getattr(self, name) < 0:
                raise RocketError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.image_size < 8:
            raise RocketError(f"--image_size must be at least 8 pixels, got {self.image_size}.")
        from rocket_vla.envs.libero_env import check_start

        check_start(self.start)
        for name in ("variation_xy", "variation_joints"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):  # also refuses nan
                raise RocketError(f"--{name} must be a finite value >= 0, got {value}.")


@dataclass(frozen=True)
class CollectJob:
    suite: str
    task_id: int
    items: tuple[tuple[int, int], ...]  # (init index, variation index)


def episode_stem(suite: str, task_name: str, init: int, variation: int) -> str:
    return f"{suite}/{task_name}/init{init:02d}_var{variation:02d}"


def perturb_state(env: Any, state: np.ndarray, rng: np.random.Generator, xy: float,
                  joints: float) -> np.ndarray:
    """A randomised variation of an init state: free objects shifted in x/y, arm jittered."""
    import mujoco

    env.reset(state, seed=int(rng.integers(2**31)))
    model, data = env.sim.model._model, env.sim.data._data
    for j in range(model.njnt):
        adr = model.jnt_qposadr[j]
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            data.qpos[adr:adr + 2] += rng.uniform(-xy, xy, size=2)
        elif (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or "").startswith("robot0_joint"):
            data.qpos[adr] += rng.uniform(-joints, joints)
    mujoco.mj_forward(model, data)
    return env.sim_state()


def run_jobs(cfg: CollectConfig, jobs: Iterable[CollectJob], emit: Any) -> None:
    """Collect the jobs' episodes in this process; ``emit`` one attempt record each."""
    from rocket_vla.data.episodes import Episode, EpisodeWriter
    from rocket_vla.envs.episode import NOOP_ACTION, seed_everything
    from rocket_vla.envs.experts import make_expert_policy
    from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv
    from rocket_vla.envs.policy import TaskInfo
    from rocket_vla.envs.processing import model_to_env_actions, quat_to_axis_angle
    from rocket_vla.envs.simstack import simulator_stack
    from rocket_vla.envs.suites import STEP_BUDGETS, get_init_state, get_task

    expert = make_expert_policy()
    stack = json.dumps(simulator_stack())
    for job in jobs:
        spec = get_task(job.suite, job.task_id)
        writer = EpisodeWriter(cfg.out_dir, file_attrs={
            "suite": spec.suite, "task_id": spec.task_id, "problem_name": spec.name,
            "bddl_file_name": os.path.basename(spec.bddl_file), "env_name": "libero",
            "frame_stride": cfg.frame_stride, "image_size": cfg.image_size,
            "depth_units": "metres", "camera_convention": "opencv camera axes, camera-to-world",
            "simulator": stack, "start": cfg.start,
        })
        budget = cfg.max_steps or STEP_BUDGETS[spec.suite]
        env_cfg = EnvConfig(image_size=cfg.image_size, depth=cfg.depth, render=cfg.render, start=cfg.start)
        with LiberoEnv(spec, env_cfg) as env:
            for init, var in job.items:
                start = time.perf_counter()
                seed = cfg.seed * 1_000_003 + job.task_id * 10_000 + init * 100 + var
                seed_everything(seed)
                state = get_init_state(spec, init)
                if var > 0:
                    rng = np.random.default_rng(seed)
                    state = perturb_state(env, state, rng, cfg.variation_xy, cfg.variation_joints)
                env.reset(state, seed=seed)
                expert.reset(TaskInfo(spec.suite, spec.task_id, spec.name, spec.language))
                for i in range(cfg.num_wait):
                    env.step(NOOP_ACTION, render=i == cfg.num_wait - 1)
                rec: dict[str, list] = {k: [] for k in (
                    "actions", "states", "ee_pos", "ee_ori", "gripper_states", "joint_states",
                    "agentview_rgb", "eye_in_hand_rgb", "agentview_depth", "eye_in_hand_depth",
                    "agentview_extrinsics", "eye_in_hand_extrinsics", "frame_index", "object_pos")}
                object_names: list[str] = []
                t, solved_at = 0, None
                cams = {}
                while t < budget and (solved_at is None or t < solved_at + cfg.after_success):
                    if t % cfg.frame_stride == 0:
                        obs = env.observation(images=True)
                        cams = env.camera_parameters()
                        rec["frame_index"].append(t)
                        rec["agentview_rgb"].append(obs["agentview"])
                        rec["eye_in_hand_rgb"].append(obs["wrist"])
                        rec["agentview_extrinsics"].append(cams["agentview"]["extrinsics"])
                        rec["eye_in_hand_extrinsics"].append(cams["wrist"]["extrinsics"])
                        if cfg.depth:
                            depth = env.depth()
                            rec["agentview_depth"].append(depth["agentview"])
                            rec["eye_in_hand_depth"].append(depth["wrist"])
                    raw = env.raw_obs()
                    if not object_names:  # every movable object's position: spatial-probe targets
                        object_names = sorted(k[:-4] for k in raw if k.endswith("_pos")
                                              and not k.startswith("robot0_") and "_to_robot0_" not in k)
                    rec["object_pos"].append(np.stack([np.asarray(raw[f"{n}_pos"]) for n in object_names]))
                    rec["states"].append(env.sim_state())
                    rec["ee_pos"].append(np.asarray(raw["robot0_eef_pos"]))
                    rec["ee_ori"].append(quat_to_axis_angle(raw["robot0_eef_quat"]))
                    rec["gripper_states"].append(np.asarray(raw["robot0_gripper_qpos"]))
                    rec["joint_states"].append(np.asarray(raw["robot0_joint_pos"]))
                    action = model_to_env_actions(expert.act(env.observation(images=False, state=True)),
                                                  expert.gripper)[0]
                    rec["actions"].append(action)
                    t += 1
                    if env.step(action, render=(t % cfg.frame_stride == 0)) and solved_at is None:
                        solved_at = t
                success = solved_at is not None
                path = None
                if success:
                    obs_arrays = {k: np.asarray(rec[k]) for k in (
                        "ee_pos", "ee_ori", "gripper_states", "joint_states", "agentview_rgb",
                        "eye_in_hand_rgb", "agentview_extrinsics", "eye_in_hand_extrinsics",
                        "object_pos")}
                    obs_arrays["ee_states"] = np.concatenate([obs_arrays["ee_pos"], obs_arrays["ee_ori"]], 1)
                    if cfg.depth:
                        obs_arrays["agentview_depth"] = np.asarray(rec["agentview_depth"], np.float32)
                        obs_arrays["eye_in_hand_depth"] = np.asarray(rec["eye_in_hand_depth"], np.float32)
                    attrs = {"init_state_index": init, "variation": var, "seed": seed, "success": True,
                             "solved_at_step": solved_at,
                             "agentview_intrinsics": cams["agentview"]["intrinsics"],
                             "eye_in_hand_intrinsics": cams["wrist"]["intrinsics"],
                             "init_state": state, "object_names": ",".join(object_names)}
                    episode = Episode(np.asarray(rec["actions"], np.float32), obs_arrays, spec.language,
                                      np.asarray(rec["frame_index"], np.int64), attrs)
                    stem = episode_stem(spec.suite, spec.name, init, var)
                    path = str(writer.write(stem, episode, states=np.asarray(rec["states"])))
                emit({"suite": spec.suite, "task_id": spec.task_id, "init": init, "variation": var,
                      "success": success, "steps": t, "solved_at": solved_at,
                      "frames": len(rec["frame_index"]),
                      "wall_s": round(time.perf_counter() - start, 3), "path": path})


def plan_collection(cfg: CollectConfig, done: set[tuple[str, int, int, int]]) -> list[CollectJob]:
    from rocket_vla.envs.suites import get_task, list_tasks, normalize_suite, require_init_states

    jobs = []
    for suite_name in cfg.suites:
        suite = normalize_suite(suite_name)
        specs = [get_task(suite, t) for t in cfg.tasks] if cfg.tasks else list_tasks(suite)
        for spec in specs:
            last = cfg.first_init + cfg.init_states - 1
            require_init_states(spec, last, "demonstration", "--first_init + --init_states")
            items = tuple((k, v) for k in range(cfg.first_init, last + 1)
                          for v in range(cfg.variations + 1)
                          if (suite, spec.task_id, k, v) not in done)
            if items:
                jobs.append(CollectJob(suite, spec.task_id, items))
    return jobs


def attempt_key(record: dict[str, Any]) -> tuple[str, int, int, int]:
    """What identifies a collection attempt (suite, task, init state, variation)."""
    return (record["suite"], int(record["task_id"]), int(record["init"]), int(record["variation"]))


def run_collection(cfg: CollectConfig, progress: bool = True) -> dict[str, Any]:
    """Collect (or resume collecting) demonstrations; return counts per task.

    The folder is locked while it runs (a second collection into it is refused), and a
    resume must keep the settings that shape an episode (:data:`EPISODE_FIELDS`)."""
    with run_records.FolderLock(cfg.out_dir, "rocket collect"):
        return _collect_locked(cfg, progress)


def _collect_locked(cfg: CollectConfig, progress: bool) -> dict[str, Any]:
    from rocket_vla.envs.runner import read_results
    from rocket_vla.envs.simstack import check_folder_stack, require_pinned

    stack = require_pinned(cfg.allow_unpinned_sim, "rocket collect")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "collect_config.json"
    log = out / ATTEMPTS_FILE
    fix = "collect into a new --out_dir folder, or use the same settings, code and simulator to resume."
    run_records.check_settings(settings, asdict(cfg), EPISODE_FIELDS, what=str(out), fix=fix)
    check_folder_stack(settings, log, stack, str(out), fix)
    settings.write_text(json.dumps({**asdict(cfg), "simulator": stack, "code_version": code_version()},
                                   indent=2), encoding="utf-8")
    done = {attempt_key(r) for r in read_results(log)}
    jobs = plan_collection(cfg, done)
    run_recorded(run_jobs, cfg, jobs, cfg.workers, lambda j, items: CollectJob(j.suite, j.task_id, items),
                 log, desc="demos", label="kept", progress=progress)
    counts: dict[str, dict[str, int]] = {}
    for r in run_records.unique(read_results(log), attempt_key):
        c = counts.setdefault(f"{r['suite']}/{r['task_id']}", {"attempts": 0, "kept": 0})
        c["attempts"] += 1
        c["kept"] += bool(r["success"])
    return counts

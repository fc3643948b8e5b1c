"""`rocket eval` against a replica of the official OpenVLA-OFT LIBERO client, frame for frame.

The replica is written here from LIBERO's own API as the official client
(``experiments/robot/libero/run_libero_eval.py``) uses it: seed 7 everywhere, one
``OffScreenRenderEnv`` at 256 px per task (hard resets, its default), ``env.seed(0)``, then
per trial ``reset()``, ``set_init_state(init k)``, 10 dummy steps ``[0,0,0,0,0,0,-1]``, images
flipped 180 degrees, proprio = eef pos + robosuite ``quat2axisangle`` + finger joints, and the
model's gripper output binarised (``2g - 1``, sign) and inverted. Ours is ``run_jobs`` with
``EvalConfig`` defaults. Everything that reaches the model (both images, proprio) at every
policy call, the actions that reach the simulator, and the full MuJoCo state after the wait
and at the end must be equal -- on a task with a drawer (libero_spatial 4, where the hard
reset's fixture draws matter) and one without (task 0), trials 0-2.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("libero.libero")

from rocket_vla.envs.policy import register_policy  # noqa: E402
from rocket_vla.envs.runner import EvalConfig, run_jobs  # noqa: E402
from rocket_vla.envs.suites import get_init_state, get_task, setup_headless_gl  # noqa: E402

pytestmark = pytest.mark.libero
SIZE = 256  # the official clients' resolution
TRIALS = (0, 1, 2)
STEPS = 24  # three chunks of 8 after the wait


def fixed_chunk(call: int) -> np.ndarray:
    """Deterministic model-convention chunks that move the arm and close the gripper."""
    t = np.arange(8)[:, None] + 8 * call
    chunk = np.concatenate([0.4 * np.sin(0.3 * t + np.arange(3)), 0.2 * np.cos(0.2 * t + np.arange(3)),
                            (t < 12).astype(float)], axis=1)  # gripper: open (1), then closed (0)
    return chunk


# -- the replica of the official client ----------------------------------------------------
def official_client(task_spec, trials) -> list[dict]:
    """What the official OpenVLA-OFT client feeds the model and the simulator, per trial."""
    import torch
    from libero.libero.envs import OffScreenRenderEnv
    from robosuite.utils.transform_utils import quat2axisangle

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)  # set_seed_everywhere(7)
    env = OffScreenRenderEnv(bddl_file_name=task_spec.bddl_file, camera_heights=SIZE, camera_widths=SIZE)
    env.seed(0)
    out = []
    try:
        for k in trials:
            env.reset()
            obs = env.set_init_state(get_init_state(task_spec, k))
            rec: dict = {"calls": [], "actions": []}
            t = 0
            queue: list[np.ndarray] = []
            while t < STEPS + 10:
                if t < 10:
                    obs, _, done, _ = env.step([0, 0, 0, 0, 0, 0, -1])
                    t += 1
                    if t == 10:
                        rec["after_wait"] = np.array(env.get_sim_state())
                    continue
                if not queue:
                    rec["calls"].append({
                        "agentview": obs["agentview_image"][::-1, ::-1].copy(),
                        "wrist": obs["robot0_eye_in_hand_image"][::-1, ::-1].copy(),
                        "proprio": np.concatenate([obs["robot0_eef_pos"],
                                                   quat2axisangle(obs["robot0_eef_quat"]),
                                                   obs["robot0_gripper_qpos"]]),
                    })
                    queue = list(fixed_chunk(len(rec["calls"]) - 1))
                action = np.array(queue.pop(0), dtype=np.float64)
                action[-1] = np.sign(2 * action[-1] - 1)  # normalize_gripper_action(binarize=True)
                action[-1] = -action[-1]  # invert_gripper_action
                rec["actions"].append(action)
                obs, _, done, _ = env.step(action.tolist())
                t += 1
                if done:
                    break
            rec["final"] = np.array(env.get_sim_state())
            out.append(rec)
    finally:
        env.close()
    return out


# -- ours: run_jobs with the EvalConfig defaults, a policy that records what it gets --------
SEEN: list[dict] = []
SENT: list[np.ndarray] = []


class Recorder:
    needs_state = True  # adds state/sim: the full MuJoCo state the policy is called on

    def __init__(self, **_: object) -> None:
        self.calls = 0

    def reset(self, task) -> None:
        self.calls = 0

    def act(self, obs):
        SEEN.append({k: np.array(obs[k]) for k in ("agentview", "wrist", "proprio", "state/sim")})
        chunk = fixed_chunk(self.calls)
        self.calls += 1
        return chunk


def make_recorder(**kwargs) -> Recorder:
    return Recorder(**kwargs)


@pytest.mark.parametrize("task_id", [0, 4])
def test_eval_matches_the_official_client(task_id: int, tmp_path: Path, monkeypatch) -> None:
    setup_headless_gl()
    from rocket_vla.envs.libero_env import LiberoEnv

    spec = get_task("libero_spatial", task_id)
    ref = official_client(spec, TRIALS)
    register_policy("replica-recorder-test", make_recorder)
    SEEN.clear()
    SENT.clear()
    step = LiberoEnv.step

    def spy(self, action, render=False):
        SENT.append(np.array(action))
        return step(self, action, render)

    monkeypatch.setattr(LiberoEnv, "step", spy)
    cfg = EvalConfig(out_dir=str(tmp_path), suites=["libero_spatial"], tasks=[task_id], trials=len(TRIALS),
                     policy="replica-recorder-test", max_steps=STEPS)
    records: list[dict] = []
    run_jobs(cfg, plan_all(cfg), records.append)
    assert [r["trial"] for r in records] == list(TRIALS)
    assert len(SEEN) == 3 * len(TRIALS)
    worst = {"image": 0, "proprio": 0.0, "state": 0.0}
    per_trial = len(SENT) // len(TRIALS)
    for i, (rec, ours) in enumerate(zip(ref, records, strict=True)):
        calls = SEEN[3 * i:3 * i + 3]
        assert len(rec["calls"]) == len(calls) == 3
        for theirs, mine in zip(rec["calls"], calls, strict=True):
            for cam in ("agentview", "wrist"):
                assert mine[cam].shape == theirs[cam].shape == (SIZE, SIZE, 3)
                diff = np.abs(mine[cam].astype(int) - theirs[cam].astype(int)).max()
                worst["image"] = max(worst["image"], int(diff))
            # ours is float32 (the policy interface's dtype; a model casts the client's float64
            # to its own precision anyway): equal to the official proprio rounded to float32
            assert mine["proprio"].dtype == np.float32
            official32 = theirs["proprio"].astype(np.float32)
            worst["proprio"] = max(worst["proprio"], float(np.abs(mine["proprio"] - official32).max()))
        after_wait = calls[0]["state/sim"]
        worst["state"] = max(worst["state"], float(np.abs(after_wait - rec["after_wait"]).max()))
        sent = [a for a in SENT[i * per_trial:(i + 1) * per_trial]][10:]  # past the 10 wait steps
        np.testing.assert_array_equal(np.array(sent), np.array(rec["actions"]))
        import hashlib

        final = hashlib.sha1(np.ascontiguousarray(rec["final"], dtype=np.float64).tobytes()).hexdigest()
        assert ours["final_state"] == final, f"trial {ours['trial']}: final MuJoCo states differ"
        assert ours["start"] == "official" and ours["premise_failed"] == []
    assert worst == {"image": 0, "proprio": 0.0, "state": 0.0}, worst


def plan_all(cfg: EvalConfig):
    from rocket_vla.envs.runner import plan_jobs

    return plan_jobs(cfg, set())

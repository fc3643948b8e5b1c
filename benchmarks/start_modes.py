"""How far each episode start is from the official client's: ``--start official`` vs ``clean``.

For libero_spatial tasks 0 and 4 (drawer), trials 0-2: the official OpenVLA-OFT client's start
(OffScreenRenderEnv 256 px, env.seed(0), per trial reset + set_init_state, 10 dummy steps),
then 20 fixed actions; and the same through ``LiberoEnv`` with each start mode (the stream
seeded like ``rocket eval``'s default). Prints the largest differences after the wait
(agentview and wrist images in grey levels, proprio, full MuJoCo state, fixture body_pos) and
of the state after the 20 actions.

Run:  MUJOCO_GL=egl python benchmarks/start_modes.py [--out start_modes.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rocket_vla.envs.suites import get_init_state, get_task, setup_headless_gl

TRIALS = (0, 1, 2)
ACTIONS = [np.array([0.3 * np.sin(0.4 * t), 0.2, -0.1 * np.cos(0.3 * t), 0, 0, 0.1, -1.0 if t < 10 else 1.0])
           for t in range(20)]


def official(spec) -> list[dict]:
    from libero.libero.envs import OffScreenRenderEnv
    from robosuite.utils.transform_utils import quat2axisangle

    np.random.seed(7)
    env = OffScreenRenderEnv(bddl_file_name=spec.bddl_file, camera_heights=256, camera_widths=256)
    env.seed(0)
    out = []
    for k in TRIALS:
        env.reset()
        obs = env.set_init_state(get_init_state(spec, k))
        for _ in range(10):
            obs, *_ = env.step([0, 0, 0, 0, 0, 0, -1])
        rec = {"agentview": obs["agentview_image"][::-1, ::-1].astype(int),
               "wrist": obs["robot0_eye_in_hand_image"][::-1, ::-1].astype(int),
               "proprio": np.concatenate([obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]),
                                          obs["robot0_gripper_qpos"]]),
               "state": np.array(env.get_sim_state()), "body_pos": np.array(env.sim.model.body_pos)}
        for a in ACTIONS:
            env.step(a.tolist())
        rec["after"] = np.array(env.get_sim_state())
        out.append(rec)
    env.close()
    return out


def ours(spec, start: str) -> list[dict]:
    from rocket_vla.envs.episode import NOOP_ACTION
    from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv

    out = []
    with LiberoEnv(spec, EnvConfig(image_size=256, start=start)) as env:
        env.seed(0)
        for k in TRIALS:
            env.reset(get_init_state(spec, k))
            for i in range(10):
                env.step(NOOP_ACTION, render=i == 9)
            obs = env.observation(images=True)
            rec = {"agentview": obs["agentview"].astype(int), "wrist": obs["wrist"].astype(int),
                   "proprio": obs["proprio"].astype(np.float64), "state": env.sim_state(),
                   "body_pos": np.array(env.sim.model.body_pos)}
            for a in ACTIONS:
                env.step(a)
            rec["after"] = env.sim_state()
            out.append(rec)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    setup_headless_gl()
    rows = []
    for task_id in (0, 4):
        spec = get_task("libero_spatial", task_id)
        ref = official(spec)
        for start in ("official", "clean"):
            t0 = time.perf_counter()
            got = ours(spec, start)
            for k, (a, b) in zip(TRIALS, zip(ref, got, strict=True), strict=True):
                rows.append({"task": task_id, "start": start, "trial": k,
                             **{key: float(np.abs(a[key] - b[key]).max())
                                for key in ("agentview", "wrist", "proprio", "state", "body_pos", "after")},
                             "s_per_trial": round((time.perf_counter() - t0) / len(TRIALS), 2)})
    print("| task | start | trial | agentview | wrist | proprio | sim state | fixtures (m) "
          "| state after 20 actions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['start']} | {r['trial']} | {r['agentview']:.0f} | {r['wrist']:.0f} | "
              f"{r['proprio']:.2g} | {r['state']:.2g} | {r['body_pos']:.3g} | {r['after']:.2g} |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()

"""LIBERO throughput on this machine: evaluation episodes/min and collected demos/min,
with decision-step-only rendering (ours) and with the standard every-step rendering.

Everything runs in ONE process on libero_spatial task 0 so the two render modes see the same
machine; a real run multiplies by ``--workers``. Modes:

  eval, image policy   a policy that reads both cameras and returns 8-step chunks (the
                       paper's setting), episodes of --eval-steps policy steps
  eval, expert         the scripted expert (reads privileged state, no images at all)
  collect              expert demonstrations with RGB + depth + cameras every --stride steps

Run:  python benchmarks/libero_throughput.py [--eval-steps 80] [--episodes 2]
      (writes JSON to --out and a markdown table to --md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from rocket_vla.envs.suites import setup_headless_gl


class ChunkPolicy:
    """Reads both images every call (touches every pixel) and returns small random chunks."""

    needs_images = True

    def __init__(self, chunk: int = 8) -> None:
        self.chunk = chunk
        self.rng = np.random.default_rng(0)

    def reset(self, task) -> None:
        self.rng = np.random.default_rng(0)

    def act(self, obs):
        _ = float(obs["agentview"].mean() + obs["wrist"].mean())
        a = self.rng.uniform(-0.3, 0.3, (self.chunk, 7))
        a[:, 6] = 1.0
        return a


def bench_eval(mode: str, episodes: int, steps: int, size: int, expert: bool) -> dict:
    from rocket_vla.envs.episode import run_episode
    from rocket_vla.envs.experts import PickPlaceExpert
    from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv
    from rocket_vla.envs.suites import get_init_state, get_task

    task = get_task("libero_spatial", 0)
    with LiberoEnv(task, EnvConfig(image_size=size, render=mode)) as env:
        policy = PickPlaceExpert() if expert else ChunkPolicy()
        run_episode(env, policy, get_init_state(task, 0), max_steps=8)  # warm-up (JIT, caches)
        total_steps, start = 0, time.perf_counter()
        successes = 0
        for k in range(episodes):
            res = run_episode(env, policy, get_init_state(task, k), seed=k,
                              max_steps=None if expert else steps)
            total_steps += res.steps + 10
            successes += res.success
        wall = time.perf_counter() - start
    return {"kind": "expert" if expert else "image policy (chunk 8)", "render": mode,
            "episodes": episodes, "env_steps": total_steps, "wall_s": round(wall, 2),
            "ms_per_step": round(1000 * wall / total_steps, 1),
            "episodes_per_min": round(60 * episodes / wall, 2), "successes": successes}


def bench_collect(mode: str, demos: int, stride: int, size: int) -> dict:
    from rocket_vla.envs.collect import CollectConfig, run_collection

    with tempfile.TemporaryDirectory() as tmp:
        cfg = CollectConfig(out_dir=tmp, suites=["libero_spatial"], tasks=["0"], init_states=demos,
                            frame_stride=stride, image_size=size, depth=True, render=mode)
        start = time.perf_counter()
        counts = run_collection(cfg, progress=False)
        wall = time.perf_counter() - start
        kept = sum(c["kept"] for c in counts.values())
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.hdf5")) / 2**20
    return {"render": mode, "frame_stride": stride, "attempts": demos, "kept": kept,
            "wall_s": round(wall, 2), "demos_per_min": round(60 * kept / wall, 2),
            "mb_per_demo": round(size_mb / max(kept, 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--eval-steps", type=int, default=80, help="policy steps per image-policy episode")
    ap.add_argument("--demos", type=int, default=2)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--out", default="runs/bench_libero.json")
    ap.add_argument("--md", default="runs/bench_libero.md")
    args = ap.parse_args()
    setup_headless_gl()
    load_before = os.getloadavg()
    rows = {"eval": [], "collect": []}
    for mode in ("decision", "every_step"):
        rows["eval"].append(bench_eval(mode, args.episodes, args.eval_steps, args.image_size, False))
        print(rows["eval"][-1], flush=True)
    rows["eval"].append(bench_eval("decision", args.episodes, args.eval_steps, args.image_size, True))
    print(rows["eval"][-1], flush=True)
    for mode in ("decision", "every_step"):
        rows["collect"].append(bench_collect(mode, args.demos, args.stride, args.image_size))
        print(rows["collect"][-1], flush=True)
    meta = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "mujoco_gl": os.environ.get("MUJOCO_GL"), "image_size": args.image_size,
            "task": "libero_spatial task 0", "workers": 1}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, **rows}, indent=2))
    md = ["| evaluation | render | episodes | env steps | ms/step | episodes/min |",
          "|---|---|---|---|---|---|"]
    for r in rows["eval"]:
        md.append(f"| {r['kind']} | {r['render']} | {r['episodes']} | {r['env_steps']} | "
                  f"{r['ms_per_step']} | {r['episodes_per_min']} |")
    md += ["", "| collection (RGB+depth+cameras) | render | frame stride | demos kept | s | demos/min "
           "| MB/demo |", "|---|---|---|---|---|---|---|"]
    for r in rows["collect"]:
        md.append(f"| expert | {r['render']} | {r['frame_stride']} | {r['kept']}/{r['attempts']} | "
                  f"{r['wall_s']} | {r['demos_per_min']} | {r['mb_per_demo']} |")
    md.append("")
    md.append(f"Machine: {meta['cpu_count']} CPU cores, MUJOCO_GL={meta['mujoco_gl']}, images "
              f"{args.image_size}px, one process; load average before/after "
              f"{meta['loadavg_before'][0]}/{meta['loadavg_after'][0]} (shared machine).")
    Path(args.md).write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

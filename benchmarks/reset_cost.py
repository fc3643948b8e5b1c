"""What an episode start costs: hard reset (official) with and without cameras, soft reset (clean).

``LiberoEnv.reset`` on libero_spatial task 0 (init state 0), ``--repeats`` times per mode after
one warm-up reset, in one process. The official start rebuilds the MuJoCo model at every
reset; an env without cameras (what ``rocket eval`` builds for policies that read no image)
skips the renderer, and ``advance_to(k)`` (shards) pays k resets.

Run:  MUJOCO_GL=egl python benchmarks/reset_cost.py [--repeats 5] [--image_size 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv
from rocket_vla.envs.suites import get_init_state, get_task, setup_headless_gl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=256)
    args = parser.parse_args()
    setup_headless_gl()
    spec = get_task("libero_spatial", 0)
    state = get_init_state(spec, 0)
    print("| start | cameras | reset s (median) | min | max |")
    print("|---|---|---|---|---|")
    for start, cameras in (("official", True), ("official", False), ("clean", True), ("clean", False)):
        with LiberoEnv(spec, EnvConfig(image_size=args.image_size, start=start, cameras=cameras)) as env:
            env.reset(state)  # warm-up: first-use costs (shader compilation, caches)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                env.reset(state)
                times.append(time.perf_counter() - t0)
        print(f"| {start} | {'yes' if cameras else 'no'} | {statistics.median(times):.2f} | "
              f"{min(times):.2f} | {max(times):.2f} |")


if __name__ == "__main__":
    main()

"""Batched evaluation throughput: one policy serving N simulator workers, against the floor.

Two tables, each from real LIBERO episodes run through ``run_evaluation``:

``cpu``  MiniVLA (tiny) and pi0 (tiny) with random weights at 1 and 2 workers (batched; MiniVLA
         also per-worker), and for each student the simulator-only floor: the same episodes
         replayed by a zero-cost policy that returns the chunks the student produced
         (recorded in its 1-worker run). Ratio = episodes/min over the floor's at the same
         worker count. Memory: peak summed RSS of the evaluation's process tree.
``gpu``  pi0 at its default size (``--size default``, bf16, random weights) on the GPU, at
         ``--workers 1,4,8,14``: episodes/min, the time 2,000 episodes would take, peak GPU
         memory; ``--size tiny --device cpu`` is its dry run.

Random weights never solve a task, so every episode runs its whole step budget: the slowest
case of the protocol. Episodes/min is given over the whole run (policy build, worker start,
env builds included) and "steady" between the first and the last finished episode.

Run:  python benchmarks/batched_eval.py cpu --out runs/bench_batched
      python benchmarks/batched_eval.py gpu --out runs/bench_gpu --size default --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from rocket_vla.envs.runner import EvalConfig, run_evaluation

STUDENT = "rocket_vla.envs.bench_policies:random_student"
REPLAY = "rocket_vla.envs.bench_policies:replay"


class Sampler:
    """Peak summed RSS of this process and its children, and when episodes finished."""

    def __init__(self, results: Path, interval: float = 0.1) -> None:
        self.results, self.interval = results, interval
        self.peak_rss = 0
        self.finished: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            lines = self.results.read_text().count("\n") if self.results.exists() else 0
            now = time.perf_counter()
            self.finished += [now] * (lines - len(self.finished))
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def measure(out: Path, name: str, policy: str, kwargs: dict[str, Any], workers: int, *, tasks: list[int],
            trials: int, args: argparse.Namespace, inference: str = "batched") -> dict[str, Any]:
    """One evaluation run into ``out/name``, timed; its row of the table."""
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    cfg = EvalConfig(out_dir=str(folder), suites=[args.suite], tasks=list(tasks), trials=trials,
                     policy=policy, policy_kwargs=kwargs, workers=workers, inference=inference,
                     image_size=args.image_size, max_steps=args.max_steps, allow_unpinned_sim=True,
                     batch_wait=getattr(args, "batch_wait", 0.05))
    gpu = _cuda()
    if gpu is not None:
        gpu.reset_peak_memory_stats()
    stats: dict[str, Any] = {}
    load = os.getloadavg()[0]
    with Sampler(folder / "episodes.jsonl") as sampler:
        start = time.perf_counter()
        run_evaluation(cfg, progress=False, stats=stats)
        wall = time.perf_counter() - start
    time.sleep(0.05)
    records = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]
    done = sampler.finished
    steady = (len(done) - 1) / (done[-1] - done[0]) * 60 if len(done) > 2 and done[-1] > done[0] else None
    calls = sum(r["policy_calls"] for r in records)
    return {"name": name, "policy": policy, "inference": inference, "workers": workers,
            "episodes": len(records), "steps": sum(r["steps"] for r in records), "policy_calls": calls,
            "wall_s": round(wall, 2), "episodes_per_min": round(len(records) / wall * 60, 2),
            "steady_episodes_per_min": round(steady, 2) if steady else None,
            "forward_calls": stats.get("forward_calls", calls), "mean_batch": stats.get("mean_batch", 1.0),
            "policy_s": stats.get("policy_s"), "peak_rss_mb": round(sampler.peak_rss / 2**20),
            "gpu_peak_gb": round(gpu.max_memory_allocated() / 2**30, 2) if gpu is not None else None,
            "load_before": round(load, 2)}


def _cuda() -> Any:
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def warm_up(out: Path, kwargs: dict[str, Any], args: argparse.Namespace) -> None:
    """One short episode first, so that no row pays this process's imports and first-use costs
    (LIBERO, EGL, torch kernels) that a long evaluation pays once."""
    measure(out, "warm_up", STUDENT, kwargs, 1, tasks=[0], trials=1,
            args=argparse.Namespace(**{**vars(args), "max_steps": 8}))


def cpu_table(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks, trials = list(range(args.tasks)), args.trials
    warm_up(out, {"kind": "pi0", "preset": "tiny"}, args)
    rows = []
    for kind in ("minivla", "pi0"):
        log = out / f"{kind}_actions.jsonl"
        log.unlink(missing_ok=True)
        student = {"kind": kind, "preset": "tiny", "record": str(log)}
        rows.append(measure(out, f"{kind}_w1", STUDENT, student, 1, tasks=tasks, trials=trials, args=args))
        plain = {"kind": kind, "preset": "tiny"}
        for workers in (1, 2):
            rows.append(measure(out, f"{kind}_floor_w{workers}", REPLAY, {"log": str(log)}, workers,
                                tasks=tasks, trials=trials, args=args, inference="per_worker"))
        rows.append(measure(out, f"{kind}_w2", STUDENT, plain, 2, tasks=tasks, trials=trials, args=args))
        if kind == "minivla":
            rows.append(measure(out, f"{kind}_w2_per_worker", STUDENT, plain, 2, tasks=tasks, trials=trials,
                                args=args, inference="per_worker"))
    floors = {(r["name"].split("_")[0], r["workers"]): r["episodes_per_min"]
              for r in rows if "_floor_" in r["name"]}
    for r in rows:
        floor = floors[(r["name"].split("_")[0], r["workers"])]
        r["ratio_to_floor"] = round(r["episodes_per_min"] / floor, 3)
    return {"rows": rows}


def gpu_table(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = "base" if args.size == "default" else "tiny"
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    kwargs = {"kind": "pi0", "preset": preset, "device": args.device, "dtype": dtype}
    counts = [int(n) for n in args.episodes.split(",")]
    warm_up(out, kwargs, args)
    rows = []
    for workers, n in zip([int(w) for w in args.workers.split(",")], counts, strict=True):
        tasks = list(range(min(args.tasks, n)))
        rows.append(measure(out, f"pi0_{args.size}_w{workers}", STUDENT, kwargs, workers, tasks=tasks,
                            trials=math.ceil(n / len(tasks)), args=args))
    best = max(rows, key=lambda r: r["steady_episodes_per_min"] or r["episodes_per_min"])
    rate = best["steady_episodes_per_min"] or best["episodes_per_min"]
    return {"rows": rows, "projection_2000_min": round(2000 / rate, 1), "projection_from": best["name"]}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| run | workers | inference | episodes | episodes/min | steady ep/min | ratio to floor | "
             "forward calls | mean batch | policy s | peak RSS MB | GPU peak GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['workers']} | {r['inference']} | {r['episodes']} | "
                     f"{r['episodes_per_min']} | {r['steady_episodes_per_min']} | "
                     f"{r.get('ratio_to_floor', '-')} | "
                     f"{r['forward_calls']} | {r['mean_batch']} | {r['policy_s']} | {r['peak_rss_mb']} | "
                     f"{r['gpu_peak_gb']} |")
    if "projection_2000_min" in result:
        lines += ["", f"2,000 episodes at the rate of {result['projection_from']}: "
                      f"{result['projection_2000_min']} min"]
    lines += ["", f"machine: {result['machine']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=("cpu", "gpu"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--suite", default=None, help="default: libero_object (cpu), libero_spatial (gpu)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks 0..N-1 (default: 2 cpu, 10 gpu)")
    parser.add_argument("--trials", type=int, default=4, help="cpu: trials per task")
    parser.add_argument("--max_steps", type=int, default=None, help="default: 40 (cpu), suite budget (gpu)")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_wait", type=float, default=0.05, help="rocket eval --batch_wait")
    parser.add_argument("--size", choices=("default", "tiny"), default="default", help="gpu: pi0 size")
    parser.add_argument("--device", default="cuda", help="gpu: where pi0 runs")
    parser.add_argument("--workers", default="1,4,8,14", help="gpu: worker counts")
    parser.add_argument("--episodes", default="8,24,48,200", help="gpu: episodes per worker count")
    args = parser.parse_args()
    if args.suite is None:
        args.suite = "libero_object" if args.table == "cpu" else "libero_spatial"
    if args.table == "cpu" and args.max_steps is None:
        args.max_steps = 40
    if args.tasks is None:
        args.tasks = 2 if args.table == "cpu" else 10
    result = cpu_table(args) if args.table == "cpu" else gpu_table(args)
    gpu = _cuda()
    result["machine"] = (f"{platform.node()}, {os.cpu_count()} cores, load "
                         f"{os.getloadavg()[0]:.2f} at the end"
                         + (f", {gpu.get_device_name(0)}" if gpu is not None else ""))
    result["args"] = vars(args)
    name = "batched_eval" if args.table == "gpu" else "batched_eval_cpu"
    Path(args.out, f"{name}.json").write_text(json.dumps(result, indent=2))
    Path(args.out, f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

"""Teacher cost per training sample: live teacher vs cached features, and early stopping.

One training sample = one frame pair (agentview + wrist) at 518x518, the paper's teacher
input. For each teacher size (``tiny`` and VGGT-1B-sized, random weights -- cost does not
depend on the weight values) it measures:

* live: ``teacher.features`` for the paper's 10 layers (deepest = 24, the whole stack);
* early stop: layers 3..11 only (deepest 11) against the same layers plus 24 (which
  forces all 24 blocks) -- the saving of stopping at the deepest requested layer;
* cached: reading the same sample's 10 layers from a teacher-feature cache (float16,
  with and without checksum verification), and the size of the entry on disk.

Seconds are the minimum wall time over ``--repeats`` runs after one warm-up (VGGT-1B:
one run, no warm-up, to keep the benchmark short); ``cpu_seconds`` is the process CPU
time (all threads) of the fastest run, which is the steadier figure on a shared machine
where other jobs take cores away. Peak memory is the process's peak
resident set size during each phase (Linux ``VmHWM``, reset between phases through
``/proc/self/clear_refs``) or, on CUDA, ``torch.cuda.max_memory_allocated``.

    python benchmarks/teacher.py --sizes tiny,1b --out benchmarks/teacher.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rocket_vla.teachers.cache import FeatureCache
from rocket_vla.teachers.cache_format import spec_for
from rocket_vla.teachers.fill import fill_cache
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

PAPER_LAYERS = [3, 5, 7, 9, 11, 13, 15, 17, 19, 24]
SHALLOW = [3, 5, 7, 9, 11]


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _rss_mib("VmHWM")


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Median seconds of ``fn`` and the peak memory while it ran."""
    for _ in range(warmup):
        fn()
    _reset_peak(device)
    before = _rss_mib("VmRSS") if device.type != "cuda" else 0.0
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return {
        "seconds": round(min(walls), 4),
        "seconds_median": round(statistics.median(walls), 4),
        "cpu_seconds": round(min(cpus), 4),
        "runs": repeats,
        "peak_mib": round(_peak_mib(device), 1),
        "resident_before_mib": round(before, 1),
    }


def _live(teacher: VGGTTeacher, frames: torch.Tensor, device: torch.device, reps: int,
          warm: int) -> dict:
    """Live cost: the paper's layers, and stopping at layer 11 vs running all 24 blocks."""
    out = {
        "live_paper_layers": measure(
            lambda: teacher.features(frames, PAPER_LAYERS), device, reps, warm
        ),
        "stop_at_11": measure(lambda: teacher.features(frames, SHALLOW), device, reps, warm),
        "full_depth_same_layers": measure(
            lambda: teacher.features(frames, SHALLOW + [24]), device, reps, warm
        ),
    }
    for key in ("seconds", "cpu_seconds"):
        out[f"early_stop_saving_{key}"] = round(
            1 - out["stop_at_11"][key] / out["full_depth_same_layers"][key], 3
        )
    return out


def bench_size(size: str, device: torch.device, repeats: int, frame: int) -> dict:
    cfg = VGGTConfig.vggt_1b() if size == "1b" else VGGTConfig.tiny(depth=24)
    heavy = size == "1b"
    reps, warm = (1, 0) if heavy else (repeats, 1)
    start = time.perf_counter()
    teacher = VGGTTeacher(cfg, device=device, seed=0)
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in teacher.model.parameters())
    frames = torch.rand(1, 2, 3, frame, frame, generator=torch.Generator().manual_seed(0))
    out: dict = {
        "size": size,
        "params_m": round(params / 1e6, 1),
        "build_seconds": round(build_s, 1),
        "frame": f"2 x {frame}x{frame}",
        "grid": list(teacher.patch_grid(frame, frame)),
    }
    out.update(_live(teacher, frames, device, reps, warm))
    with tempfile.TemporaryDirectory() as root:
        spec = spec_for(teacher, PAPER_LAYERS, ["agentview_rgb", "eye_in_hand_rgb"],
                        "benchmark", (frame, frame))
        cache = FeatureCache.create(root, spec)
        views = {"agentview_rgb": frames[0, 0:1], "eye_in_hand_rgb": frames[0, 1:2]}
        fill = time.perf_counter()
        fill_cache(cache, teacher, [("ep", views)], batch_size=1, progress=False)
        out["cache_fill_seconds"] = round(time.perf_counter() - fill, 2)
        out["cache_entry_mib"] = round(cache.path("ep").stat().st_size / 2**20, 1)
        del teacher
        reader = FeatureCache.open(root, spec)
        cpu = torch.device("cpu")
        out["cached_read_verified"] = measure(lambda: reader.read("ep", [0]), cpu, repeats, 1)
        out["cached_read_unverified"] = measure(
            lambda: reader.read("ep", [0], verify=False), cpu, repeats, 1
        )
    for key in ("seconds", "cpu_seconds"):
        out[f"speedup_cached_vs_live_{key}"] = round(
            out["live_paper_layers"][key] / max(out["cached_read_verified"][key], 1e-6), 1
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="tiny,1b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frame", type=int, default=518)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {
        "command": "python benchmarks/teacher.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if v != ""
        ),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": str(device),
            "load_average_at_start": os.getloadavg(),
        },
        "results": [],
    }
    for size in args.sizes.split(","):
        res = bench_size(size, device, args.repeats, args.frame)
        res["load_average_after"] = os.getloadavg()
        results["results"].append(res)
        print(json.dumps(res), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""What checking teacher-cache checksums costs when training reads features.

Builds a cache of random features with the shape of a real one (default: the demo's --
bundled tiny teacher, 4 layers, 4x4 grid, 192 wide, two cameras), then reads every
(episode, step) sample the way training does (``FeatureCache.read`` one sample at a time),
three ways:

* ``never``  -- ``verify=False``: no checksum (what training did before issue 15);
* ``first``  -- the default: each tensor checked the first time this process reads it;
  the first epoch pays, later epochs run as ``never`` (both are timed);
* ``always`` -- ``verify=True``: checked on every read.

Prints JSON: CPU microseconds per sample for each mode (median of ``--rounds``), and the CRC32
throughput of this machine. Example::

    python benchmarks/cache_verify.py --rounds 5
    python benchmarks/cache_verify.py --layers 10 --grid 37 --dim 1024 --episodes 2 --steps 4
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import torch

from rocket_vla.teachers.cache import FeatureCache
from rocket_vla.teachers.cache_format import CacheSpec


def build(root: Path, args: argparse.Namespace) -> FeatureCache:
    spec = CacheSpec(teacher="bench", layers=tuple(range(1, args.layers + 1)),
                     cameras=("agentview_rgb", "eye_in_hand_rgb"), dataset="bench",
                     grid=(args.grid, args.grid), dim=args.dim)
    cache = FeatureCache.create(root, spec)
    gen = torch.Generator().manual_seed(0)
    for e in range(args.episodes):
        feats = [torch.randn(args.steps, 2, args.grid, args.grid, args.dim, generator=gen).half()
                 for _ in spec.layers]
        cache.write(str(e), feats, list(range(args.steps)))
    return cache


def epoch(cache: FeatureCache, args: argparse.Namespace, verify: bool | None) -> float:
    """CPU seconds to read every sample once, one sample per call (as training batches do).
    CPU time, not wall time: the machine is shared, and reading is CPU-bound here (the
    files sit in the page cache after the first round)."""
    start = time.process_time()
    for e in range(args.episodes):
        for s in range(args.steps):
            cache.read(str(e), [s], verify=verify)
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--grid", type=int, default=4)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--episodes", type=int, default=26)
    p.add_argument("--steps", type=int, default=60, help="cached frames per episode")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    samples = args.episodes * args.steps
    times: dict[str, list[float]] = {"never": [], "first (1st epoch)": [], "first (later epochs)": [],
                                     "always": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        build(root, args)
        for _ in range(args.rounds):
            # a fresh reader per round: a new process has verified nothing yet
            times["never"].append(epoch(FeatureCache.open(root), args, False))
            reader = FeatureCache.open(root)
            times["first (1st epoch)"].append(epoch(reader, args, None))
            times["first (later epochs)"].append(epoch(reader, args, None))
            times["always"].append(epoch(FeatureCache.open(root), args, True))
    buf = torch.randn(1 << 23).half().numpy().tobytes()  # 16 MiB
    start = time.process_time()
    for _ in range(8):
        zlib.crc32(buf)
    crc_gbs = 8 * len(buf) / (time.process_time() - start) / 1e9
    tensor_kib = 2 * args.layers * args.grid * args.grid * args.dim / 1024
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, torch threads 1",
        "entry": {"layers": args.layers, "grid": args.grid, "dim": args.dim,
                  "KiB per camera-frame": round(tensor_kib, 1), "samples": samples},
        "cpu_us_per_sample_median": {k: round(1e6 * statistics.median(v) / samples, 1)
                                 for k, v in times.items()},
        "crc32_GB_per_s": round(crc_gbs, 2),
    }, indent=2))


if __name__ == "__main__":
    main()

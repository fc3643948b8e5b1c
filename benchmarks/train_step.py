"""Training throughput: baseline vs ROCKET with cached teacher features vs a live teacher.

Why: the paper's compute claim rests on ROCKET adding little to a step once the teacher's
features are precomputed (the projector is small next to the backbone). This measures
samples/s of full optimizer steps (augmentation, forward, backward, AdamW) of a student
(``--student``, MiniVLA by default) on
LIBERO-sized frames (two 128x128 cameras) for

* ``baseline``       -- no alignment, no teacher;
* ``rocket-disk``    -- ROCKET, features read from a ``rocket cache-teacher`` folder;
* ``rocket-live``    -- ROCKET, the tiny VGGT teacher run on every batch.

Modes are timed in interleaved rounds (so background load hits all alike) and the median
round is reported, twice: samples per wall-clock second, and samples per CPU-second of
this process (``time.process_time``). On a shared machine the wall figure swings with
other jobs' load; the CPU figure (single intra-op thread) does not, so the ratios between
modes are read from it. Usage::

    python benchmarks/train_step.py --model demo --batch-size 32 --rounds 5 --steps 5

``--student pi0`` measures transformers' pi0 instead (baseline, cached and live ROCKET, and
the overhead breakdown); its options are in ``benchmarks/pi0_step.py``::

    python benchmarks/train_step.py --student pi0 --size tiny              # CPU
    python benchmarks/train_step.py --student pi0 --device cuda --size default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rocket_vla.data.dataset import CAMERAS
from rocket_vla.teachers.build import teacher_from_spec
from rocket_vla.train import TrainConfig, Trainer


class SyntheticEpisode:
    """LIBERO-shaped episode: two uint8 cameras, 8-dim proprio, 7-dim actions."""

    def __init__(self, rng: np.random.Generator, length: int, size: int) -> None:
        self.actions = rng.uniform(-1, 1, (length, 7)).astype(np.float32)
        self.obs = {
            "agentview_rgb": rng.integers(0, 255, (length, size, size, 3), dtype=np.uint8),
            "eye_in_hand_rgb": rng.integers(0, 255, (length, size, size, 3), dtype=np.uint8),
            "ee_pos": rng.normal(size=(length, 3)).astype(np.float32),
            "ee_ori": rng.normal(size=(length, 3)).astype(np.float32),
            "gripper_states": rng.normal(size=(length, 2)).astype(np.float32),
        }
        self.language = "put the black bowl on the plate"
        self.frame_index = np.arange(length)


def make_trainer(mode: str, args: argparse.Namespace, episodes: list, teacher, out: Path,
                 cache_dir: Path | None) -> Trainer:
    variant = "baseline" if mode == "baseline" else "rocket"
    cfg = TrainConfig(
        out_dir=str(out / mode), student=args.student, student_preset=args.model,
        student_path=args.student_path, lora_rank=args.lora_rank, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing, variant=variant, steps=10**6,
        batch_size=args.batch_size, num_pairs=args.pairs, projector_hidden=args.projector_hidden,
        teacher_size=args.teacher_size, progress=False, tensorboard=False,
        teacher_cache=str(cache_dir) if mode == "rocket-disk" else None,
        teacher_layers=None if mode == "rocket-disk" else args.teacher_layers,
        student_layers=None if mode == "rocket-disk" else args.student_layers,
    )
    if mode == "rocket-live":
        return Trainer(cfg, episodes=episodes, teacher=teacher)
    return Trainer(cfg, episodes=episodes)


def main() -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--student", default="minivla")
    pre.add_argument("--via-trainer", action="store_true")
    known, _ = pre.parse_known_args()
    if known.student == "pi0" and not known.via_trainer:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pi0_step import main as pi0_main

        return pi0_main(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="minivla", help="student kind: minivla, pi0, oft")
    p.add_argument("--model", "--student-preset", dest="model", default=None,
                   help="the student's size preset (default: the student's own)")
    p.add_argument("--student-path", default=None, help="local pretrained student folder")
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--via-trainer", action="store_true",
                   help="with --student pi0: time whole Trainer steps instead of the breakdown")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--projector-hidden", type=int, default=64)
    p.add_argument("--teacher-size", type=int, default=56)
    p.add_argument("--teacher-arch", choices=("tiny", "1b"), default="tiny",
                   help="random-weight VGGT of this size as the teacher")
    p.add_argument("--precision", default="auto", help="no | bf16 | auto (bf16 on a CUDA GPU)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed steps per mode per round")
    p.add_argument("--modes", default="baseline,rocket-disk,rocket-live")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (1: robust figures on a shared machine)")
    p.add_argument("--json", default=None, help="write the figures here as JSON")
    args = p.parse_args()
    args.student_layers = None
    args.teacher_layers = None
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    episodes = [SyntheticEpisode(rng, args.length, args.image_size) for _ in range(args.episodes)]
    if args.teacher_arch == "tiny":
        teacher = teacher_from_spec("random-tiny", args.teacher_size)
    else:  # VGGT-1B architecture, random weights: the paper's teacher cost without its download
        from rocket_vla.teachers.build import TeacherConfig
        from rocket_vla.teachers.build import build_teacher as build_any

        teacher = build_any(TeacherConfig(kind="vggt-random", vggt_size="1b",
                                          input_size=(args.teacher_size, args.teacher_size)))
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - {"baseline", "rocket-disk", "rocket-live"})
    if unknown:
        raise SystemExit(f"unknown --modes {unknown}; pick from baseline, rocket-disk, rocket-live.")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cache_dir = None
        if "rocket-disk" in modes:
            from rocket_vla.teachers.fill import cache_episodes, episode_items

            cache_dir = out / "cache"
            layers = [i + 1 for i in range(teacher.num_layers)]
            cache_episodes(teacher, episode_items(episodes, CAMERAS), cache_dir, layers=layers,
                           cameras=CAMERAS, dataset_fingerprint="synthetic",
                           frame_size=(args.image_size, args.image_size), progress=False)
        trainers = {m: make_trainer(m, args, episodes, teacher, out, cache_dir) for m in modes}
        for t in trainers.values():  # warm-up: allocator, first-call overheads
            for _ in range(2):
                t.train_step(t.step)
                t.step += 1
        rounds: dict[str, list[float]] = {m: [] for m in modes}
        cpu_rounds: dict[str, list[float]] = {m: [] for m in modes}
        peak_gib: dict[str, float] = {}
        cuda = torch.cuda.is_available()
        for _ in range(args.rounds):
            for m, t in trainers.items():
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    t.train_step(t.step)
                    t.step += 1
                if cuda:  # all trainers share the GPU: the peak includes the others' weights
                    torch.cuda.synchronize()
                    peak_gib[m] = max(peak_gib.get(m, 0.0), torch.cuda.max_memory_allocated() / 2**30)
                samples = args.steps * args.batch_size
                rounds[m].append(samples / (time.perf_counter() - start))
                cpu_rounds[m].append(samples / (time.process_time() - cpu_start))
        describe = {m: t.describe() for m, t in trainers.items()}
    base = statistics.median(rounds["baseline"]) if "baseline" in rounds else None
    cpu_base = statistics.median(cpu_rounds["baseline"]) if "baseline" in cpu_rounds else None
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "load_average": os.getloadavg(),
        "samples_per_s": {m: round(statistics.median(v), 2) for m, v in rounds.items()},
        "samples_per_cpu_s": {m: round(statistics.median(v), 2) for m, v in cpu_rounds.items()},
        "relative_to_baseline_wall": {m: round(statistics.median(v) / base, 3)
                                      for m, v in rounds.items()} if base else {},
        "relative_to_baseline_cpu": {m: round(statistics.median(v) / cpu_base, 3)
                                     for m, v in cpu_rounds.items()} if cpu_base else {},
        "wall_rounds": {m: [round(x, 2) for x in v] for m, v in rounds.items()},
        "cpu_rounds": {m: [round(x, 2) for x in v] for m, v in cpu_rounds.items()},
        "setup": describe,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "peak_gpu_gib_all_trainers_resident": {m: round(v, 2) for m, v in peak_gib.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

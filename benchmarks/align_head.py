"""Forward+backward cost of the ROCKET alignment head.

Compares, on identical inputs and weights:
  ours      rocket_vla.align.Aligner (shared Matryoshka projector, vectorised loss)
  official  a re-creation of the official computation pattern: one projector call per
            pair and a Python loop over the batch in the loss
  floor     the projector matmuls alone (same widths), forward + backward: no LayerNorm,
            no GELU, no loss

Run:  python benchmarks/align_head.py            (CPU-sized: paper layout at half width, 64 tokens)
      python benchmarks/align_head.py --paper    (paper shapes: 10 pairs, batch 8, 512 tokens,
                                                  student 4096, teacher 2048, hidden 2048)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from rocket_vla.align import AlignConfig, Aligner


def official_pattern(aligner: Aligner, student, teacher) -> torch.Tensor:
    """One projector call per pair; per-sample loss accumulated in a Python loop."""
    total = 0.0
    for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
        pred = aligner.projectors(s, i)
        pair = 0.0
        for b in range(s.shape[0]):
            pair = pair + (1 - F.cosine_similarity(pred[b], t[b], dim=-1)).mean()
        total = total + pair / s.shape[0]
    return total / len(student)


def floor_pattern(aligner: Aligner, student, teacher) -> torch.Tensor:
    """The projector's two matmuls per pair at the same widths, nothing else."""
    total = 0.0
    for i, s in enumerate(student):
        proj = aligner.projectors.projector(i)
        d = aligner.projectors.widths[i]
        h = F.linear(s, proj.fc1.weight[:d], proj.fc1.bias[:d])
        total = total + F.linear(h, proj.fc2.weight[:, :d], proj.fc2.bias).sum()
    return total


def ours(aligner: Aligner, student, teacher) -> torch.Tensor:
    return aligner(student, teacher).loss


CLOCK = "wall"


def time_fn(fn, aligner, student, teacher, params, sync) -> float:
    clock = time.perf_counter if CLOCK == "wall" else time.process_time
    start = clock()
    loss = fn(aligner, student, teacher)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    sync()
    del grads
    return clock() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paper", action="store_true", help="the paper's shapes (needs a GPU to be quick)")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--student-dim", type=int, default=2048)
    ap.add_argument("--teacher-dim", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu = process CPU time: with --threads 1 it is robust to other load")
    args = ap.parse_args()
    global CLOCK
    CLOCK = args.clock
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.paper:
        args.batch, args.tokens, args.student_dim, args.teacher_dim, args.hidden = 8, 512, 4096, 2048, 2048
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cfg = AlignConfig.preset(
        "rocket", student_dim=args.student_dim, teacher_dim=args.teacher_dim, hidden_dim=args.hidden,
        student_layers=list(range(1, args.pairs + 1)), teacher_layers=list(range(1, args.pairs + 1)),
    )
    torch.manual_seed(0)
    aligner = Aligner(cfg).to(dev)
    student = [torch.randn(args.batch, args.tokens, args.student_dim, device=dev, requires_grad=True)
               for _ in range(args.pairs)]
    teacher = [torch.randn(args.batch, args.tokens, args.teacher_dim, device=dev)
               for _ in range(args.pairs)]
    params = list(aligner.parameters()) + student
    # identical numbers: the two full patterns must agree before they are timed
    torch.testing.assert_close(ours(aligner, student, teacher), official_pattern(aligner, student, teacher))
    fns = {"ours": ours, "official": official_pattern, "floor": floor_pattern}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(3):  # warm-up
        for fn in fns.values():
            time_fn(fn, aligner, student, teacher, params, sync)
    for _ in range(args.repeats):  # interleaved so background load hits all three alike
        for name, fn in fns.items():
            times[name].append(time_fn(fn, aligner, student, teacher, params, sync))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    result = {
        "device": str(dev), "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "clock": args.clock,
        "shapes": dict(pairs=args.pairs, batch=args.batch, tokens=args.tokens,
                       student_dim=args.student_dim, teacher_dim=args.teacher_dim, hidden=args.hidden),
        "median_ms": {k: round(v, 2) for k, v in med.items()},
        "ours_vs_official": round(med["ours"] / med["official"], 3),
        "ours_vs_floor": round(med["ours"] / med["floor"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""`rocket select-layers`: the paper's training-free balanced layer selection."""

from __future__ import annotations

import argparse

from rocket_vla.align.pairing import balanced_pairs
from rocket_vla.config_cli import format_pairs


def run(args: argparse.Namespace) -> int:
    student, teacher = balanced_pairs(args.student_depth, args.teacher_depth, args.pairs)
    header = (f"# balanced selection: {len(student)} pairs from {args.student_depth} student and "
              f"{args.teacher_depth} teacher blocks (index k = stream after block k)\n")
    text = header + format_pairs(student, teacher, args.format).rstrip("\n") + "\n"
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text, encoding="utf-8")
        print(f"# wrote {args.out}; use it with `rocket train --config {args.out}`")
    else:
        print(text, end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select-layers",
        help="choose aligned layer pairs without training (balanced selection)",
        description="Choose k student and k teacher layers, deep-anchored and evenly spaced, "
        "and pair them in order. Prints flags for `rocket train`, or YAML (--format yaml, "
        "--out FILE) that `rocket train --config FILE` reads.",
    )
    p.add_argument("--student-depth", type=int, required=True, help="number of student blocks")
    p.add_argument("--teacher-depth", type=int, default=24,
                   help="number of teacher blocks (VGGT: 24)")
    p.add_argument("--pairs", type=int, default=10, help="number of pairs (paper: 10)")
    p.add_argument("--format", choices=("flags", "yaml"), default="flags")
    p.add_argument("--out", default=None, help="write to this file instead of printing")
    p.set_defaults(func=run)

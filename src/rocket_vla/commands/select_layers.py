"""`rocket select-layers`: the paper's training-free balanced layer selection."""

from __future__ import annotations

import argparse

from rocket_vla.align.pairing import balanced_pairs


def format_pairs(student: list[int], teacher: list[int], style: str) -> str:
    """Pairs as flags for `rocket train` or as a YAML `align:` block."""
    s, t = ",".join(map(str, student)), ",".join(map(str, teacher))
    if style == "yaml":
        return f"align:\n  student_layers: [{', '.join(map(str, student))}]\n" \
               f"  teacher_layers: [{', '.join(map(str, teacher))}]"
    return f"--student-layers {s} --teacher-layers {t}"


def run(args: argparse.Namespace) -> int:
    student, teacher = balanced_pairs(args.student_depth, args.teacher_depth, args.pairs)
    print(
        f"# balanced selection: {len(student)} pairs from {args.student_depth} student and "
        f"{args.teacher_depth} teacher blocks (index k = stream after block k)"
    )
    print(format_pairs(student, teacher, args.format))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select-layers",
        help="choose aligned layer pairs without training (balanced selection)",
        description="Choose k student and k teacher layers, deep-anchored and evenly spaced, "
        "and pair them in order. Prints flags (or YAML) to paste into `rocket train`.",
    )
    p.add_argument("--student-depth", type=int, required=True, help="number of student blocks")
    p.add_argument("--teacher-depth", type=int, default=24,
                   help="number of teacher blocks (VGGT: 24)")
    p.add_argument("--pairs", type=int, default=10, help="number of pairs (paper: 10)")
    p.add_argument("--format", choices=("flags", "yaml"), default="flags")
    p.set_defaults(func=run)

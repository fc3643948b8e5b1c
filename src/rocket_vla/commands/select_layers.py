"""`rocket select-layers`: the paper's training-free balanced layer selection.

The flags are generated from :class:`rocket_vla.align.pairing.LayerSelectionConfig`, plus
the output's :class:`Options`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DESCRIPTION = (
    "Choose k student and k teacher layers, deep-anchored and evenly spaced, and pair them in "
    "order. Prints flags for `rocket train`, or YAML (--format yaml, --out FILE) that "
    "`rocket train --config FILE` reads."
)
HELP = "choose aligned layer pairs without training (balanced selection)"


@dataclass
class Options:
    format: Literal["flags", "yaml"] = "flags"
    """flags (for `rocket train`) or yaml (for `rocket train --config`)"""
    out: str | None = None
    """write to this file instead of printing"""


def main(argv: Sequence[str]) -> int:
    from rocket_vla.align.pairing import LayerSelectionConfig
    from rocket_vla.config_cli import format_pairs, parse_command

    cfg, opts = parse_command(argv, LayerSelectionConfig, "rocket select-layers", DESCRIPTION, Options)
    student, teacher = cfg.select()
    header = (f"# balanced selection: {len(student)} pairs from {cfg.student_depth} student and "
              f"{cfg.teacher_depth} teacher blocks (index k = stream after block k)\n")
    text = header + format_pairs(student, teacher, opts.format).rstrip("\n") + "\n"
    if opts.out:
        from pathlib import Path

        Path(opts.out).write_text(text, encoding="utf-8")
        print(f"# wrote {opts.out}; use it with `rocket train --config {opts.out}`")
    else:
        print(text, end="")
    return 0

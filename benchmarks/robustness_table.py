"""One robustness table from several `rocket eval` folders: success per LIBERO-PRO
perturbation kind, per policy, pooled over the folders of each policy (e.g. its seeds).

Each folder is an evaluation over a base suite and its perturbed versions (it holds
``episodes.jsonl``); folders are grouped under a label, ``LABEL=DIR[,DIR...]``:

    python benchmarks/robustness_table.py \\
        baseline=runs/robust_study_baseline-seed0,runs/robust_study_baseline-seed1 \\
        rocket=runs/robust_study_rocket-seed0,runs/robust_study_rocket-seed1

Per label and perturbation kind the table gives pooled successes / trials with the 95%
Wilson interval and, with more than one folder, each folder's rate (seed to seed spread).
Counts come from the episode records through the same code as each folder's own
``robustness.json`` (``rocket_vla.envs.robustness``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rocket_vla.envs.robustness import COLUMNS, robustness
from rocket_vla.envs.runner import RESULTS_FILE
from rocket_vla.records import read as read_records
from rocket_vla.study.stats import wilson


def folder_counts(folder: Path) -> dict[str, tuple[int, int]]:
    """``{kind: (successes, episodes)}`` over every base suite of one evaluation folder."""
    path = folder / RESULTS_FILE
    if not path.is_file():
        sys.exit(f"{folder} has no {RESULTS_FILE}; pass folders written by `rocket eval`.")
    report = robustness(read_records(path))
    counts: dict[str, tuple[int, int]] = {}
    for row in report["suites"]:
        for col in COLUMNS:
            if row[col]:
                w, n = counts.get(col, (0, 0))
                counts[col] = (w + row[col]["successes"], n + row[col]["episodes"])
    return counts


def cell(per_folder: list[dict[str, tuple[int, int]]], col: str) -> str:
    parts = [c[col] for c in per_folder if col in c]
    if not parts:
        return "-"
    wins, total = sum(w for w, _ in parts), sum(n for _, n in parts)
    ci = wilson(wins, total)
    text = f"{wins}/{total} ({100 * wins / total:.0f}%, {100 * ci.low:.0f}-{100 * ci.high:.0f})"
    if len(parts) > 1:
        text += " [" + ", ".join(f"{100 * w / n:.0f}" for w, n in parts) + "]"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="+", help="LABEL=DIR[,DIR...]")
    args = parser.parse_args()
    rows = []
    for group in args.groups:
        label, sep, dirs = group.partition("=")
        if not sep or not dirs:
            sys.exit(f"{group!r} is not LABEL=DIR[,DIR...]; e.g. rocket=runs/ev_rocket.")
        rows.append((label, [folder_counts(Path(d)) for d in dirs.split(",")]))
    cols = [c for c in COLUMNS if any(c in f for _, folders in rows for f in folders)]
    print("| policy | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for label, folders in rows:
        print(f"| {label} | " + " | ".join(cell(folders, c) for c in cols) + " |")


if __name__ == "__main__":
    main()

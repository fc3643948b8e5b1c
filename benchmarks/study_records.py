"""Carry a `rocket reproduce` study's finished stages to another machine or session without
its checkpoints, demonstrations or caches.

Why: the default study takes longer than one working session of a 2-core machine, and a
session's disk does not outlive it. A finished stage of the study is small -- the budget
search's record, each run's identity and test result, the gradient profile -- and the study
reuses it whenever the identity recorded with it (settings, demonstrations' content, teacher
weights, code) matches what the new machine collects and runs; it never reuses it otherwise.
`save` copies those records out of a study folder; `restore` puts them into a (new) study
folder, after which `rocket reproduce --only ...` finishes the runs still missing and the
last invocation writes the report.

    python benchmarks/study_records.py save runs/study results/study-default
    python benchmarks/study_records.py restore results/study-default runs/study

Records are flattened (``<run name>/``, ``grad/``, ``budget.json``) so the saved folder is not
caught by ignore rules for ``runs/``. Restoring never overwrites a file that differs: a
folder that already holds other records is refused, naming the file.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

#: Files of a run's folder that make up its finished record.
RUN_PATTERNS = ("identity.json", "result-*.json")
GRAD_FILES = ("record.json", "grad.json", "grad.png", "grad_over_training.png")


def study_records(study: Path) -> dict[str, Path]:
    """The finished-stage records of a study folder, by their path in the saved layout."""
    found: dict[str, Path] = {}
    if (study / "budget.json").is_file():
        found["budget.json"] = study / "budget.json"
    for run in sorted((study / "runs").glob("*")):
        for pattern in RUN_PATTERNS:
            for path in sorted(run.glob(pattern)):
                found[f"{run.name}/{path.name}"] = path
    for name in GRAD_FILES:
        if (study / "grad" / name).is_file():
            found[f"grad/{name}"] = study / "grad" / name
    return found


def saved_records(saved: Path) -> dict[str, Path]:
    """The files of a saved folder, by their path in the study layout."""
    found: dict[str, Path] = {}
    for path in sorted(p for p in saved.rglob("*") if p.is_file()):
        rel = path.relative_to(saved).as_posix()
        top = rel.split("/")[0]
        found[rel if top in ("budget.json", "grad") else f"runs/{rel}"] = path
    return found


def copy_all(files: dict[str, Path], dest: Path) -> int:
    """Copy ``files`` under ``dest``; refuse (before copying anything) a differing file there."""
    for rel, src in files.items():
        target = dest / rel
        if target.exists() and not filecmp.cmp(src, target, shallow=False):
            raise SystemExit(f"{target} already holds another record; restore into a new folder or "
                             "remove that file first.")
    copied = 0
    for rel, src in files.items():
        target = dest / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.replace(target)
        copied += 1
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    save = sub.add_parser("save", help="copy a study folder's finished records to DEST")
    save.add_argument("study", type=Path)
    save.add_argument("dest", type=Path)
    restore = sub.add_parser("restore", help="copy saved records into a study folder")
    restore.add_argument("saved", type=Path)
    restore.add_argument("study", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "save":
        files = study_records(args.study)
        if not files:
            raise SystemExit(f"{args.study} holds no finished study records; give the study's --out_dir.")
        print(f"saved {copy_all(files, args.dest)} new of {len(files)} records to {args.dest}")
    else:
        if not args.saved.is_dir():
            raise SystemExit(f"{args.saved} is not a folder of saved records; give the folder `save` wrote.")
        files = saved_records(args.saved)
        print(f"restored {copy_all(files, args.study)} new of {len(files)} records into {args.study}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

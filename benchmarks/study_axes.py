"""Re-tabulate a finished ``rocket reproduce`` folder on the measured compute axes.

The study's report puts training samples (and FLOPs, which are proportional to samples for a
fixed student) on the x-axis, so an aligned run and the baseline cost the same per step there.
What alignment adds per step -- the projector, the cosine loss, reading cached teacher
features -- shows only in the time each run spent. Every evaluated checkpoint records its
run's cumulative training CPU and wall seconds (``train/compute.py``), so this script reads
the per-run results the study wrote and prints the success of every run at every evaluated
step (the curves as numbers), the compute-to-success table on samples (as the report does),
``cpu_s`` and ``wall_s``, and each run's training time at the budget. It reads only; it never
writes into the study folder.

    python benchmarks/study_axes.py runs/study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rocket_vla.study import compute_report


def load_runs(out: Path) -> tuple[dict, list[dict], list[dict]]:
    """``results.json`` and the per-run results of the study's runs and its controls."""
    results_path = out / "results.json"
    if not results_path.is_file():
        raise SystemExit(f"{results_path} is missing; finish `rocket reproduce --out_dir {out}` first.")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    cfg = results["config"]
    points = "-".join(map(str, results["points"]))
    budget = str(results["points"][-1])
    runs, controls = [], []
    for variant in cfg["variants"]:
        for seed in cfg["seeds"]:
            path = out / "runs" / f"{variant}-seed{seed}" / f"result-test-t{cfg['eval_trials']}-{points}.json"
            runs.append(json.loads(path.read_text(encoding="utf-8")))
    for path in sorted((out / "runs").glob(f"*-*-seed*/result-test-t{cfg['eval_trials']}-{budget}.json")):
        controls.append(json.loads(path.read_text(encoding="utf-8")))
    return results, runs, controls


def curve_table(runs: list[dict], controls: list[dict]) -> str:
    """Markdown: per variant and evaluated step, the mean success over seeds and each seed's count."""
    steps = sorted({p["step"] for r in runs + controls for p in r["points"]})
    groups: dict[str, list[dict]] = {}
    for run in runs + controls:
        name = run["variant"] + (f" (`{run['teacher']}`)" if run in controls else "")
        groups.setdefault(name, []).append(run)
    lines = ["| variant | " + " | ".join(f"step {s:,}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for name, group in groups.items():
        group = sorted(group, key=lambda r: r["seed"])
        cells = []
        for step in steps:
            at = [next((p for p in r["points"] if p["step"] == step), None) for r in group]
            if any(p is None for p in at):
                cells.append("")
                continue
            rate = sum(p["successes"] / p["trials"] for p in at) / len(at)
            cells.append(f"{100 * rate:.0f}% ({' / '.join(str(p['successes']) for p in at)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="the folder given to rocket reproduce --out_dir")
    args = parser.parse_args()
    results, runs, controls = load_runs(args.out_dir)
    cfg = results["config"]
    trials = runs[0]["points"][0]["trials"]
    print(f"### success on the test init states at each evaluated step (mean over seeds; successes of "
          f"{trials} per seed)\n")
    print(curve_table(runs, controls))
    for axis in ("samples", "cpu_s", "wall_s"):
        summary = compute_report.summarise(runs, cfg["variants"], cfg["levels"], axis)
        print(f"\n### {compute_report.AXES[axis]}\n")
        print(compute_report.table(summary))
    print("\n### training time at the budget, per run\n")
    print("| run | samples | training CPU s | training wall s | CPU s per 1,000 samples |")
    print("|---|---|---|---|---|")
    for run in runs + controls:
        last = run["points"][-1]
        name = run["variant"] + (f" ({run['teacher']})" if run in controls else "") + f" seed {run['seed']}"
        print(f"| {name} | {last['samples']:,} | {last['cpu_s']:,.0f} | {last['wall_s']:,.0f} | "
              f"{1000 * last['cpu_s'] / last['samples']:.2f} |")


if __name__ == "__main__":
    main()

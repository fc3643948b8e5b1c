"""Robustness report: success per LIBERO-PRO perturbation kind next to the unperturbed suite.

The offline stand-in for the paper's LIBERO-Plus table. Built from episode records alone
(``episodes.jsonl`` of one run, or of a merge), so it can be recomputed at any time:
``rocket eval --suites libero_spatial,libero_spatial_swap,libero_spatial_lan ...`` writes it
as ``robustness.md`` / ``robustness.json`` next to the usual summary whenever a perturbed
suite is among the results.

Task ids line up across a base suite and its ``_swap`` / ``_object`` / ``_lan`` versions
(same task, perturbed scene or wording); a ``_task`` suite's task k is a different task
placed in task k's scene, so its per-task column compares scenes, not tasks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rocket_vla.envs.suites import PERTURBATIONS, split_perturbed

COLUMNS = ("unperturbed", *PERTURBATIONS)


def has_perturbed(records: list[dict[str, Any]]) -> bool:
    return any(split_perturbed(r["suite"])[1] for r in records)


def robustness(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"suites": [{base, <kind>: {successes, episodes, rate}}], "tasks": [...]}``."""
    cells: dict[tuple[str, int | None, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        base, kind = split_perturbed(r["suite"])
        col = kind or "unperturbed"
        for key in ((base, None, col), (base, int(r["task_id"]), col)):
            cells[key][0] += bool(r["success"])
            cells[key][1] += 1

    def row(base: str, task: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"base": base} if task is None else {"base": base, "task_id": task}
        for col in COLUMNS:
            w, n = cells.get((base, task, col), (0, 0))
            out[col] = {"successes": w, "episodes": n, "rate": w / n} if n else None
        return out

    bases = sorted({b for b, _, _ in cells})
    tasks = sorted({(b, t) for b, t, _ in cells if t is not None})
    return {"suites": [row(b, None) for b in bases], "tasks": [row(b, t) for b, t in tasks]}


def robustness_markdown(report: dict[str, Any]) -> str:
    def cell(c: dict[str, Any] | None) -> str:
        return "-" if c is None else f"{c['successes']}/{c['episodes']} ({100 * c['rate']:.0f}%)"

    head = "| suite | " + " | ".join(COLUMNS) + " |"
    sep = "|---" * (len(COLUMNS) + 1) + "|"
    lines = [head, sep] + [f"| {r['base']} | " + " | ".join(cell(r[c]) for c in COLUMNS) + " |"
                           for r in report["suites"]]
    lines += ["", head.replace("| suite |", "| suite | task |"), sep + "---|"]
    lines += [f"| {r['base']} | {r['task_id']} | " + " | ".join(cell(r[c]) for c in COLUMNS) + " |"
              for r in report["tasks"]]
    return "\n".join(lines) + "\n"


def write_robustness(out: Path, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Write ``robustness.{json,md}`` when the records include a perturbed suite."""
    if not has_perturbed(records):
        return None
    report = robustness(records)
    (out / "robustness.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "robustness.md").write_text(robustness_markdown(report), encoding="utf-8")
    return report

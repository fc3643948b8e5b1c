"""The study's answer to the paper's question: how much training compute does each variant need
to reach a given success, against the baseline trained until it stops improving.

Input: one record per (variant, seed) with the checkpoints evaluated along its single long run
(:func:`curve_points`); output: the converged success of each variant, the compute to reach
fixed fractions of the baseline's converged success, the ratio to the baseline's compute
paired by seed (:mod:`rocket_vla.study.convergence`), a Markdown table and a plot."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rocket_vla.study import convergence, stats

#: Compute axes a report can use: the field of an evaluated point, and its label.
AXES = {"samples": "training samples seen", "flops": "estimated training FLOPs",
        "cpu_s": "training CPU seconds", "wall_s": "training wall seconds"}


def curve_points(run: Mapping[str, Any], axis: str) -> list[convergence.Point]:
    """A run's evaluated checkpoints as ``(compute, success rate)`` points on ``axis``."""
    if axis not in AXES:
        raise ValueError(f"unknown compute axis {axis!r}")
    return [convergence.Point(float(p[axis]), p["successes"] / p["trials"])
            for p in sorted(run["points"], key=lambda p: p["step"])]


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def summarise(runs: Sequence[Mapping[str, Any]], variants: Sequence[str], fractions: Sequence[float],
              axis: str = "samples") -> dict[str, Any]:
    """Per variant: converged success over seeds (success at the last evaluated checkpoint:
    the budget where the baseline stopped improving), and for each success level -- a fraction
    of the baseline's converged mean -- the compute to reach it and its ratio to the baseline's.
    """
    by_variant: dict[str, dict[int, Mapping[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], {})[int(run["seed"])] = run
    if "baseline" not in by_variant:
        raise ValueError("the compute report needs the baseline's runs")
    finals = {v: {s: (r["points"][-1]["successes"], r["points"][-1]["trials"])
                  for s, r in seeds.items()} for v, seeds in by_variant.items()}
    base_converged = stats.summarise_seeds(finals["baseline"]).mean
    levels = convergence.success_levels(base_converged, fractions)
    reach = {v: {lv: convergence.reach_over_seeds(
        {s: curve_points(r, axis) for s, r in seeds.items()}, lv) for lv in levels}
        for v, seeds in by_variant.items()}
    out: dict[str, Any] = {"axis": axis, "baseline_converged": base_converged,
                           "fractions": [f for f in fractions if f * base_converged > 0],
                           "levels": levels, "variants": {}}
    for variant in [v for v in variants if v in by_variant]:
        out["variants"][variant] = {
            "converged": _plain(stats.summarise_seeds(finals[variant])),
            "budget_step": max(r["points"][-1]["step"] for r in by_variant[variant].values()),
            "reach": [_plain(reach[variant][lv]) for lv in levels],
            "ratio": [_plain(convergence.paired_ratio(reach[variant][lv], reach["baseline"][lv]))
                      for lv in levels],
            "curve": {str(s): [dataclasses.asdict(p) for p in curve_points(r, axis)]
                      for s, r in sorted(by_variant[variant].items())},
        }
    return out


def _num(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "not reached" if value is None else f"{value / scale:,.{digits}f}"


def _interval(ci: Mapping[str, float] | None, scale: float = 1.0, digits: int = 0) -> str:
    """``low, high`` -- a comma, not a dash, since a t-interval over few seeds can go below 0."""
    return "-" if ci is None else f"{ci['low'] / scale:,.{digits}f}, {ci['high'] / scale:,.{digits}f}"


def table(summary: Mapping[str, Any]) -> str:
    """Markdown: converged success, then compute to each level and the ratio to the baseline."""
    scale, unit = (1e12, "TFLOPs") if summary["axis"] == "flops" else (1.0, AXES[summary["axis"]])
    digits = 2 if summary["axis"] == "flops" else 0
    head = ["variant", "converged success % [95% CI over seeds]"]
    for frac, level in zip(summary["fractions"], summary["levels"], strict=True):
        head += [f"{unit} to {100 * level:.0f}% ({frac:.0%} of baseline) [95% CI]",
                 "ratio to baseline [95% CI] (pairs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in summary["variants"].items():
        conv = row["converged"]
        ci = conv["ci95"]
        cells = [variant, f"{100 * conv['mean']:.1f} ({conv['successes']}/{conv['trials']})"
                 + ("" if ci is None else f" [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]")]
        for reach, ratio in zip(row["reach"], row["ratio"], strict=True):
            partial = reach["reached"] < reach["seeds"]
            seeds = f" ({reach['reached']}/{reach['seeds']} seeds)" if partial else ""
            cells.append(f"{_num(reach['mean'], scale, digits)} [{_interval(reach['ci95'], scale, digits)}]"
                         + seeds)
            cells.append("-" if ratio["geo_mean"] is None else
                         f"{ratio['geo_mean']:.2f} [{_interval(ratio['ci95'], 1.0, 2)}] ({ratio['pairs']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: Mapping[str, Any], path: Path) -> Path:
    """Success against compute: each seed's curve thin, the mean over seeds bold, the levels
    dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (variant, row) in enumerate(summary["variants"].items()):
        colour = f"C{i}"
        curves = list(row["curve"].values())
        for curve in curves:
            ax.plot([p["compute"] for p in curve], [100 * p["success"] for p in curve], color=colour,
                    alpha=0.3, linewidth=0.8)
        if curves and all(len(c) == len(curves[0]) for c in curves):
            xs = [sum(c[k]["compute"] for c in curves) / len(curves) for k in range(len(curves[0]))]
            ys = [100 * sum(c[k]["success"] for c in curves) / len(curves) for k in range(len(curves[0]))]
            ax.plot(xs, ys, color=colour, linewidth=2, marker="o", label=variant)
    for level in summary["levels"]:
        ax.axhline(100 * level, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel(AXES[summary["axis"]])
    ax.set_ylabel("success % (test init states)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""The demo's summary table (Markdown + JSON) and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def success_rate(summary: dict[str, Any]) -> float:
    suites = summary.get("suites", [])
    return suites[0]["success_rate"] if suites else 0.0


def summary_markdown(results: dict[str, Any]) -> str:
    variants = list(results["variants"])
    lines = ["| | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    tasks = results["variants"][variants[0]]["eval"]["tasks"]
    for i, task in enumerate(tasks):
        cells = []
        for v in variants:
            t = results["variants"][v]["eval"]["tasks"][i]
            cells.append(f"{t['successes']}/{t['episodes']} ({100 * t['success_rate']:.0f}%)")
        lines.append(f"| success, task {task['task_id']} | " + " | ".join(cells) + " |")
    rows = [
        ("success, all tasks", lambda r: f"{100 * success_rate(r['eval']):.1f}%"),
        ("held-out action L1", lambda r: f"{r['action_l1']:.4f}"),
        ("training time (s)", lambda r: f"{r['train']['train_seconds']:.0f}"),
        ("training samples/s", lambda r: f"{r['train']['samples_per_s']:.1f}"),
    ]
    for name, fmt in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(results["variants"][v]) for v in variants) + " |")
    for k in results["probe_layers"]:
        cells = [f"{results['variants'][v]['probe'][str(k)]['r2']:.3f}" for v in variants]
        lines.append(f"| spatial probe R^2, layer {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out: Path) -> list[str]:
    """Training curves, success rates and probe R^2 per layer, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(results["variants"])
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for v in variants:
        hist = [h for h in results["variants"][v]["train"]["history"] if "action" in h]
        axes[0].plot([h["step"] for h in hist], [h["action"] for h in hist], label=v)
        align = [(h["step"], sum(h["pairs"]) / len(h["pairs"])) for h in hist if h.get("pairs")]
        if align:
            axes[1].plot(*zip(*align, strict=True), label=f"{v} (mean over pairs)")
    axes[0].set(title="action L1 (normalised)", xlabel="step")
    axes[1].set(title="alignment loss (1 - cos)", xlabel="step")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=110)
    files.append("training_curves.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    rates = [100 * success_rate(results["variants"][v]["eval"]) for v in variants]
    colors = ["#888888", "#d9480f", "#1c7ed6", "#37b24d", "#7048e8"]
    axes[0].bar(variants, rates, color=colors[: len(variants)])
    axes[0].set(title="LIBERO success (%)", ylim=(0, 100))
    layers = results["probe_layers"]
    for v in variants:
        axes[1].plot(layers, [results["variants"][v]["probe"][str(k)]["r2"] for k in layers], "o-", label=v)
    axes[1].set(title="spatial probe: held-out R^2", xlabel="student layer")
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "success_and_probe.png", dpi=110)
    files.append("success_and_probe.png")
    plt.close(fig)
    return files


def write(results: dict[str, Any], out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(results), encoding="utf-8")

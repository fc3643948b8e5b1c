"""The study's aggregation over runs, its Markdown report and plots."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rocket_vla.align.config import AlignConfig
from rocket_vla.study import stats
from rocket_vla.study.config import StudyConfig


def _rates(episodes: list[dict[str, Any]], task: int | None = None, below: int | None = None
           ) -> tuple[int, int]:
    chosen = [e for e in episodes if (task is None or e["task_id"] == task)
              and (below is None or e["trial"] < below)]
    return sum(e["success"] for e in chosen), len(chosen)


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def aggregate(cfg: StudyConfig, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant: final success over seeds (mean, std, t-interval, pooled Wilson), per task,
    the success-vs-step curve (first ``curve_trials`` trials of each task at every evaluated
    checkpoint), steps to reach the baseline's final success on that curve, the paired
    difference to the baseline, held-out action L1 and training speed."""
    final = str(cfg.steps)
    subset = cfg.first_trial + cfg.curve_trials
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs.values():
        by_variant.setdefault(run["variant"], {})[run["seed"]] = run
    out: dict[str, Any] = {}
    for variant in cfg.variants:
        seeds = by_variant.get(variant, {})
        counts = {s: _rates(r["evals"][final]) for s, r in seeds.items()}
        curve_seeds = {s: {int(step): _ratio(_rates(eps, below=subset)) for step, eps in r["evals"].items()}
                       for s, r in seeds.items()}
        steps = sorted({st for c in curve_seeds.values() for st in c})
        l1_mean, l1_std = stats.mean_std([r["action_l1"] for r in seeds.values()])
        out[variant] = {
            "final": _plain(stats.summarise_seeds(counts)),
            "per_seed": {str(s): _ratio(c) for s, c in counts.items()},
            "per_task": {str(t): _plain(stats.summarise_seeds({s: _rates(r["evals"][final], task=t)
                                                               for s, r in seeds.items()}))
                         for t in cfg.tasks},
            "curve": {str(st): stats.mean_std([c[st] for c in curve_seeds.values()])[0] for st in steps},
            "action_l1": {"mean": l1_mean, "std": l1_std},
            "train_seconds": stats.mean_std([r["train_seconds"] for r in seeds.values()])[0],
            "samples_per_s": stats.mean_std([r["samples_per_s"] for r in seeds.values()])[0],
        }
    if "baseline" in out:
        threshold = out["baseline"]["curve"][final]
        base = {int(s): v for s, v in out["baseline"]["per_seed"].items()}
        for variant, row in out.items():
            row["steps_to_baseline"] = stats.steps_to_threshold(
                {int(k): v for k, v in row["curve"].items()}, threshold)
            if variant != "baseline":
                diff, ci = stats.paired_difference({int(s): v for s, v in row["per_seed"].items()}, base)
                row["vs_baseline"] = {"mean": diff, "ci95": _plain(ci)}
    return {
        "config": cfg.to_dict(), "split": cfg.split,
        "init_states": {"test": [0, cfg.eval_trials - 1],
                        "validation": [cfg.eval_trials, cfg.eval_trials + cfg.val_trials - 1],
                        "demonstrations": [cfg.demo_first_init,
                                           cfg.demo_first_init + cfg.train_demos + cfg.heldout_demos - 1],
                        "evaluated": [cfg.first_trial, cfg.first_trial + cfg.trials - 1]},
        "curve_steps": cfg.curve_steps(), "curve_trials": cfg.curve_trials,
        "variants": out,
    }


def _ratio(count: tuple[int, int]) -> float:
    return count[0] / count[1]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _steps(row: dict[str, Any]) -> str:
    """Steps to the baseline's success: '-' without a baseline in the study."""
    if "steps_to_baseline" not in row:
        return "-"
    return "not reached" if row["steps_to_baseline"] is None else str(row["steps_to_baseline"])


def table(results: dict[str, Any]) -> str:
    """The results table in Markdown."""
    rows = results["variants"]
    tasks = list(next(iter(rows.values()))["per_task"])
    head = ["variant", "success % (mean of seeds)", "std", "95% CI (t, seeds)", "95% CI (Wilson, trials)",
            *[f"task {t} %" for t in tasks], "vs baseline (paired)", "steps to baseline", "action L1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, r in rows.items():
        f = r["final"]
        ci = f["ci95"]
        vs = r.get("vs_baseline")
        vs_txt = "-" if vs is None else f"{100 * vs['mean']:+.1f}"
        if vs is not None and vs["ci95"] is not None:
            vs_txt += f" [{100 * vs['ci95']['low']:+.1f}, {100 * vs['ci95']['high']:+.1f}]"
        cells = [
            variant, f"{_pct(f['mean'])} ({f['successes']}/{f['trials']})", _pct(f["std"]),
            "-" if ci is None else f"{_pct(ci['low'])}-{_pct(ci['high'])}",
            f"{_pct(f['pooled']['low'])}-{_pct(f['pooled']['high'])}",
            *[_pct(r["per_task"][t]["mean"]) for t in tasks], vs_txt,
            _steps(r),
            f"{r['action_l1']['mean']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out: Path) -> None:
    """``report.md`` with the table, curves, gradient-conflict matrices and provenance."""
    plots = plot(results, out)
    cfg = results["config"]
    states = results["init_states"]
    t = results.get("timings", {})
    lines = [
        "# rocket reproduce: the paper's variants in miniature", "",
        f"{len(cfg['variants'])} variants x seeds {cfg['seeds']} on {cfg['suite']} tasks {cfg['tasks']}; "
        f"MiniVLA `{cfg['model']}`, {cfg['steps']} steps x batch {cfg['batch_size']}, teacher "
        f"`{cfg['teacher']}` (fingerprint {str(results.get('teacher_fingerprint'))[:16]}), "
        f"target position embedding `{cfg.get('pos_embed') or AlignConfig().pos_embed}`, "
        f"{cfg['train_demos']} demonstrations per task.", "",
        f"Evaluated split: **{results['split']}**, init states {states['evaluated'][0]}-"
        f"{states['evaluated'][1]} per task (test {states['test']}, validation {states['validation']}, "
        f"demonstrations {states['demonstrations']}).", "",
        table(results),
        "Success-vs-step curve: first "
        f"{results['curve_trials']} trials per task at steps {results['curve_steps']}; 'steps to "
        "baseline' is the first evaluated step reaching the baseline's final success on those trials.",
        "",
    ]
    lines += [f"![{Path(p).stem}]({Path(p).relative_to(out).as_posix()})" for p in plots]
    if results.get("grad"):
        lines += ["", "Mean inter-pair gradient cosine (first seed, final checkpoints): " + ", ".join(
            f"{c['label']} {c['mean_inter_pair_cosine']:+.3f}" for c in results["grad"]["checkpoints"]),
            "", "![grad](grad/grad.png)"]
    lines += ["", f"Wall time: {t.get('wall_s', 0) / 60:.1f} min (collect {t.get('collect_s', 0):.0f} s, "
              f"teacher cache {t.get('teacher_cache_s', 0):.0f} s, training {t.get('train_s', 0):.0f} s, "
              f"evaluation {t.get('eval_s', 0):.0f} s, gradients {t.get('grad_s', 0):.0f} s); "
              f"code {results.get('code', {}).get('git')} ({results.get('code', {}).get('source')}).", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def plot(results: dict[str, Any], out: Path) -> list[str]:
    """Success per variant (mean, t-interval, each seed) and success-vs-step curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rocket_vla.analysis.plots import plot_curves

    rows = results["variants"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.4))
    for i, name in enumerate(names):
        f = rows[name]["final"]
        ax.bar(i, 100 * f["mean"], color="#8fb3d9")
        if f["ci95"] is not None:
            ax.errorbar(i, 100 * f["mean"], yerr=[[100 * (f["mean"] - f["ci95"]["low"])],
                                                  [100 * (f["ci95"]["high"] - f["mean"])]],
                        color="black", capsize=4)
        seeds = list(rows[name]["per_seed"].values())
        ax.scatter([i] * len(seeds), [100 * s for s in seeds], color="black", s=10, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel("success % (bars: mean, 95% CI; dots: seeds)")
    ax.set_ylim(0, 105)
    ax.set_title(f"closed-loop success, {results['split']} init states", fontsize=10)
    success = out / "success.png"
    fig.savefig(success, dpi=130, bbox_inches="tight")
    plt.close(fig)
    steps = results["curve_steps"]
    curves = plot_curves(steps, {n: [rows[n]["curve"].get(str(s)) for s in steps] for n in names},
                         out / "curves.png", title="success vs training step (mean over seeds)",
                         xlabel="training step", ylabel="success rate")
    return [str(success), str(curves)]

"""The study's aggregation over runs, its Markdown report and plots: success against compute
(:mod:`rocket_vla.study.compute_report`), converged success per task, held-out action L1, the
random-teacher control and gradient conflict."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rocket_vla.study import compute_report, stats
from rocket_vla.study.config import StudyConfig


def _final_counts(run: dict[str, Any], task: int | None = None) -> tuple[int, int]:
    episodes = [e for e in run["points"][-1]["episodes"] if task is None or e["task_id"] == task]
    return sum(e["success"] for e in episodes), len(episodes)


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def aggregate(cfg: StudyConfig, runs: list[dict[str, Any]], controls: list[dict[str, Any]],
              budget: dict[str, Any], points: list[int]) -> dict[str, Any]:
    """Everything the report shows, as plain data (``results.json``)."""
    axes = ["samples"] + (["flops"] if all(p["flops"] for r in runs for p in r["points"]) else [])
    compute = {axis: compute_report.summarise(runs, cfg.variants, cfg.levels, axis) for axis in axes}
    per_variant: dict[str, Any] = {}
    for variant in cfg.variants:
        seeds = {r["seed"]: r for r in runs if r["variant"] == variant}
        l1_mean, l1_std = stats.mean_std([r["action_l1"] for r in seeds.values()])
        per_variant[variant] = {
            "per_task": {str(t): _plain(stats.summarise_seeds(
                {s: _final_counts(r, t) for s, r in seeds.items()})) for t in cfg.data.tasks},
            "per_seed": {str(s): _final_counts(r) for s, r in sorted(seeds.items())},
            "action_l1": {"mean": l1_mean, "std": l1_std},
        }
    control = None
    if controls:
        rocket = {r["seed"]: _final_counts(r) for r in runs if r["variant"] == "rocket"}
        counts = {r["seed"]: _final_counts(r) for r in controls}
        control = {"teacher": controls[0]["teacher"],
                   "converged": _plain(stats.summarise_seeds(counts)),
                   "action_l1": stats.mean_std([r["action_l1"] for r in controls])[0]}
        if rocket:
            diff, ci = stats.paired_difference({s: a / n for s, (a, n) in rocket.items()},
                                               {s: a / n for s, (a, n) in counts.items()})
            control["rocket_minus_control"] = {"mean": diff, "ci95": _plain(ci)}
    data = cfg.data
    return {
        "config": cfg.to_dict(), "budget": budget, "points": points, "compute": compute,
        "variants": per_variant, "control": control,
        "init_states": {"test": [0, cfg.eval_trials - 1],
                        "validation": [cfg.eval_trials, cfg.eval_trials + cfg.val_trials - 1],
                        "demonstrations": [data.demo_first_init,
                                           data.demo_first_init + data.train_demos + data.heldout_demos - 1]},
    }


def table(results: dict[str, Any]) -> str:
    """The compute-to-success table (training samples) in Markdown."""
    return compute_report.table(results["compute"]["samples"]) + "\n"


def _span(pair: list[int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _details(results: dict[str, Any]) -> list[str]:
    """Per-task converged success and held-out action L1 per variant."""
    rows = results["variants"]
    tasks = list(next(iter(rows.values()))["per_task"])
    head = ["variant", *[f"task {t} % (seeds' mean)" for t in tasks], "per seed (successes, trials)",
            "held-out action L1 (mean, std)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, r in rows.items():
        l1 = r["action_l1"]
        lines.append("| " + " | ".join([
            variant, *[_pct(r["per_task"][t]["mean"]) for t in tasks],
            ", ".join(f"{s}: {a}/{n}" for s, (a, n) in r["per_seed"].items()),
            f"{l1['mean']:.4f}" + ("" if l1["std"] is None else f" ({l1['std']:.4f})")]) + " |")
    return lines


def write(results: dict[str, Any], out: Path) -> None:
    """``report.md`` with the tables, plots, the budget search and provenance."""
    cfg = results["config"]
    data, train = cfg["data"], cfg["train"]
    budget, states = results["budget"], results["init_states"]
    t = results.get("timings", {})
    plots = [compute_report.plot(summary, out / f"success_vs_{axis}.png")
             for axis, summary in results["compute"].items()]
    checks = ", ".join(f"{c['step']}: {c['successes']}/{c['trials']}" for c in budget["checks"])
    lines = [
        "# rocket reproduce: success against training compute", "",
        f"Variants {cfg['variants']} x seeds {cfg['seeds']} on {data['suite']} tasks {data['tasks']}; "
        f"MiniVLA `{train['student_preset']}`, batch {train['batch_size']}, lr {train['lr']} "
        f"({train['schedule']}), teacher `{train['teacher']}`, {data['train_demos']} demonstrations per task "
        f"(init states {_span(states['demonstrations'])}).", "",
        f"**Budget: {budget['budget']} steps**, found on the validation init states "
        f"{_span(states['validation'])} with the first seed's baseline ({budget['reason']}); validation "
        f"success by step: {checks}. Test init states {_span(states['test'])} evaluated at steps "
        f"{results['points']} (fixed by the budget alone, before any test evaluation).", "",
        "## Compute to reach a fraction of the baseline's converged success", "",
        table(results),
    ]
    if "flops" in results["compute"]:
        lines += ["Estimated training FLOPs (student, 6 x parameters x tokens per sample; the teacher "
                  "cache is filled once and not counted per run):", "",
                  compute_report.table(results["compute"]["flops"]), ""]
    lines += ["## Converged success per task and held-out action L1", "", *_details(results), ""]
    control = results.get("control")
    if control:
        conv = control["converged"]
        diff = control.get("rocket_minus_control")
        lines += [f"**Control** (ROCKET against `{control['teacher']}`, a teacher of random weights, at the "
                  f"budget): {_pct(conv['mean'])}% ({conv['successes']}/{conv['trials']}), held-out action "
                  f"L1 {control['action_l1']:.4f}"
                  + ("" if diff is None else f"; ROCKET minus control {100 * diff['mean']:+.1f} points")
                  + ".", ""]
    lines += [f"![{Path(p).stem}]({Path(p).relative_to(out).as_posix()})" for p in plots]
    if results.get("grad"):
        lines += ["", "Mean inter-pair gradient cosine (first seed, final checkpoints): " + ", ".join(
            f"{c['label']} {c['mean_inter_pair_cosine']:+.3f}" for c in results["grad"]["checkpoints"]),
            "", "![grad](grad/grad.png)"]
    lines += ["", f"Wall time: {t.get('wall_s', 0) / 60:.1f} min (collect {t.get('collect_s', 0):.0f} s, "
              f"teacher caches {t.get('teacher_cache_s', 0):.0f} s, "
              f"budget search {t.get('budget_s', 0):.0f} s, "
              f"training {t.get('train_s', 0):.0f} s, evaluation {t.get('eval_s', 0):.0f} s, gradients "
              f"{t.get('grad_s', 0):.0f} s); code {results.get('code', {}).get('git')} "
              f"({results.get('code', {}).get('source')}).", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")

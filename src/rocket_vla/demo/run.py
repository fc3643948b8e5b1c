"""`rocket demo` from start to finish: one function that runs the stages in order."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rocket_vla.config_cli import dotted
from rocket_vla.demo import pipeline, report
from rocket_vla.demo.config import DemoConfig
from rocket_vla.demo.pipeline import Log, print_log
from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import compared_code_version
from rocket_vla.pipeline import data as pipeline_data
from rocket_vla.pipeline.processes import set_threads


def run_demo(cfg: DemoConfig, log: Log = print_log) -> dict[str, Any]:
    """Collect (cached), train every variant on the same data and seed, evaluate each
    closed-loop, measure held-out action L1 and the spatial probe, write the report."""
    from rocket_vla.data.episodes import read_episodes

    cfg.validate()
    set_threads(cfg.threads)
    start = time.perf_counter()
    run = Path(cfg.out_dir)
    identity = run_identity(cfg)
    check_resumable(run, cfg, identity)
    run.mkdir(parents=True, exist_ok=True)
    (run / "demo_config.json").write_text(json.dumps(identity, indent=2), encoding="utf-8")
    log(f"run folder: {run.resolve()}")

    t0 = time.perf_counter()
    train_dir, heldout_dir = pipeline_data.collect(cfg.data, cfg.cache_dir, cfg.workers, log)
    collect_seconds = time.perf_counter() - t0
    check_data(run, train_dir, heldout_dir)
    train_eps, heldout_eps = read_episodes(train_dir), read_episodes(heldout_dir)
    log(f"{len(train_eps)} training and {len(heldout_eps)} held-out demonstrations ready")

    results: dict[str, Any] = {"config": cfg.to_dict(), "variants": {},
                               "collect_seconds": round(collect_seconds, 1)}
    t0 = time.perf_counter()
    teacher_cache = None
    if cfg.cache_teacher and cfg.aligned:
        teacher_cache = pipeline_data.cache_teacher(cfg.train.teacher, cfg.train.teacher_size, train_dir,
                                                    cfg.data.image_size, log, episodes=train_eps)
    results["teacher_cache_seconds"] = round(time.perf_counter() - t0, 1)
    trained = pipeline.train_all(cfg, train_dir, run, log, teacher_cache=teacher_cache)
    layers = _probe_layers(trained)
    results["probe_layers"] = layers
    for variant, tr in trained.items():
        ev = pipeline.evaluate_variant(cfg, variant, tr["checkpoint"], run, log)
        log(f"{variant}: success {100 * report.success_rate(ev):.1f}%")
        log(f"{variant}: held-out action L1 and spatial probe at layers {layers}")
        results["variants"][variant] = {
            "train": tr, "eval": ev,
            **pipeline.offline_measures(tr["checkpoint"], train_eps, heldout_eps, layers, cfg.probe_frames),
        }
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    report.write(results, run)
    results["plots"] = report.plot(results, run)
    report.write(results, run)
    log(f"done in {results['wall_seconds'] / 60:.1f} min; summary:\n" + report.summary_markdown(results))
    return results


# Settings that only change how fast or where a run goes, not what it computes.
_RUN_ONLY = {"out_dir", "cache_dir", "workers", "threads", "parallel_train", "log_seconds", "overwrite",
             "train.tensorboard"}
#: The demonstrations' content fingerprints the run's stages were made from.
DATA_FILE = "data_fingerprint.json"
#: What a demo run folder holds besides demo_config.json (cleared by ``overwrite``).
_STAGE_OUTPUTS = ("train", "eval", "summary.json", "summary.md", "training_curves.png",
                  "success_and_probe.png")


def run_identity(cfg: DemoConfig) -> dict[str, Any]:
    """What a run folder's results depend on: the settings (nested ones as dotted keys, so a
    refusal names ``train.steps``), plus the fingerprint of the teacher the aligned variants
    use (``train.teacher`` is a name; the weights behind ``tiny`` change when the bundled
    teacher is retrained, and a resumed run must not pair new alignment results with old
    ones)."""
    identity = dotted(cfg.to_dict())
    identity["teacher_fingerprint"] = (
        pipeline_data.teacher_fingerprint(cfg.train.teacher, cfg.train.teacher_size) if cfg.aligned
        else None)
    # The code that made the stages: a rerun with other code must not reuse them.
    identity["code"] = compared_code_version()
    return identity


def check_resumable(run: Path, cfg: DemoConfig, identity: dict[str, Any] | None = None) -> None:
    """Stages of a rerun are reused, so a run folder must only ever hold one configuration:
    refuse (before any work) to mix in results of another. ``identity``: the
    :func:`run_identity` of ``cfg``, when the caller has it."""
    saved = run / "demo_config.json"
    if not saved.is_file():
        return
    try:
        old = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RocketError(f"{saved} is unreadable; pass a new --out_dir folder.") from None
    new = identity if identity is not None else run_identity(cfg)
    changed = sorted(k for k in set(old) | set(new) if k not in _RUN_ONLY and old.get(k) != new.get(k))
    if changed and cfg.overwrite:
        clear_run(run)
    elif changed:
        what = ", ".join("rocket-vla code" if k == "code" else k for k in changed)
        raise RocketError(
            f"the run folder {run} was made with other settings or code ({what}); pass a new "
            "--out_dir folder, --overwrite to redo it, or the same settings and code to resume it."
        )


def check_data(run: Path, train_dir: Path, heldout_dir: Path) -> None:
    """Record the content fingerprints of the demonstrations the run uses; refuse a resume
    whose demonstrations differ from those its finished stages were made from."""
    data = pipeline_data.data_fingerprint(train_dir, heldout_dir)
    path = run / DATA_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != data:
            raise RocketError(
                f"the run folder {run} was made from other demonstrations than those in "
                f"{train_dir.parent}; pass a new --out_dir folder or --overwrite to redo it."
            )
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def clear_run(run: Path) -> None:
    """Delete a demo run folder's stage outputs (``--overwrite``)."""
    import shutil

    for name in (*_STAGE_OUTPUTS, DATA_FILE, "demo_config.json"):
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _probe_layers(trained: dict[str, dict[str, Any]]) -> list[int]:
    """The aligned student layers of the first aligned variant (all of them for comparison)."""
    from rocket_vla.train.checkpoint import read_config, resolve_checkpoint

    depth = None
    for tr in trained.values():
        cfg = read_config(resolve_checkpoint(tr["checkpoint"]))
        layers = cfg.get("align", {}).get("student_layers") or []
        depth = cfg["align"]["student_depth"]
        if layers:
            return sorted(layers)
    return list(range(1, (depth or 1) + 1))

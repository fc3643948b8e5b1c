"""One ``rocket train-teacher`` run: load, split, train the teacher and the single-view
variant, evaluate both against the constant baseline, and write the weights and metrics."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from rocket_vla.teachers.geometry.config import GeometryTrainConfig
from rocket_vla.teachers.geometry.data import PairFrames, load_pairs, split_by_episode
from rocket_vla.teachers.geometry.evaluate import evaluate_constant, evaluate_model, fit_constant_depth
from rocket_vla.teachers.geometry.loop import TrainLog, train_model
from rocket_vla.teachers.geometry.model import round_aggregator_fp16
from rocket_vla.teachers.vggt_heads import GeometryModel

log = logging.getLogger(__name__)


@dataclass
class GeometryRun:
    """What :func:`train_geometry` produced."""

    model: GeometryModel
    metrics: dict
    config: GeometryTrainConfig
    single_view: GeometryModel | None = None


@dataclass
class GeometryRunConfig(GeometryTrainConfig):
    """One `rocket train-teacher` run: the training settings plus where the frames come
    from, where the results go, and how the two models share the CPU."""

    data: str = ""
    """folder (or file) of collected episodes (`rocket collect` records depth and cameras)"""
    out_dir: str = "runs/tiny_teacher"
    """output folder: model.safetensors, config.json, metrics.json, MODEL_CARD.md"""
    single_view: bool = True
    """also train the single-view comparison model"""
    parallel: bool = True
    """train the single-view model at the same time in a second process (false: after the
    teacher)"""
    threads: int = 0
    """torch CPU threads per model (0: torch's default, or half the cores each when the two
    models train at the same time)"""

    def train_config(self) -> GeometryTrainConfig:
        """The training settings alone (what config.json records)."""
        return GeometryTrainConfig(**{f.name: getattr(self, f.name) for f in fields(GeometryTrainConfig)})


def run_training(cfg: GeometryRunConfig, command: Sequence[str] | None = None,
                 progress: Callable[[str], None] = print) -> tuple[Path, dict]:
    """Train (and evaluate) as ``cfg`` says, then write the weights, config, metrics and
    model card under ``cfg.out_dir``; returns the folder and the metrics."""
    from rocket_vla.data.episodes import list_episode_files
    from rocket_vla.errors import RocketError
    from rocket_vla.teachers.geometry.card import render_model_card

    data = Path(cfg.data)
    if not cfg.data:
        raise RocketError("no data was given; pass --data DIR (episodes from `rocket collect`).")
    if not data.exists():
        raise RocketError(
            f"data {data} does not exist; collect frames with `rocket collect --out_dir {data}`."
        )
    list_episode_files(data)  # a folder without episodes fails here, before any work
    parallel = cfg.parallel and cfg.single_view
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    elif parallel:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    run = train_geometry(data, cfg.train_config(), single_view_baseline=cfg.single_view,
                         parallel=parallel, progress=progress)
    out = save_run(run, cfg.out_dir, command=command)
    (out / "MODEL_CARD.md").write_text(render_model_card(out, data))
    return out, run.metrics


def summary(metrics: dict) -> dict:
    """Held-out pooled depth errors of each predictor, and where the models place the wrist
    camera's surfaces in the scene (world-point error, metres), for the terminal."""
    rows = {"constant_depth": metrics["constant_depth"]["heldout"]["all"],
            "teacher": metrics["teacher"]["heldout"]["all"]}
    if "single_view" in metrics:
        rows["single_view"] = metrics["single_view"]["heldout"]["all"]
    out = {k: {m: round(v[m], 4) for m in ("abs_rel", "rmse")} for k, v in rows.items()}
    for key in ("teacher", "single_view"):
        if key in out:
            out[key]["wrist_point_error"] = round(metrics[key]["heldout"]["eye_in_hand"]["point_error"], 4)
    return out


def _train_in_process(train: PairFrames, cfg: GeometryTrainConfig, views: int,
                      threads: int) -> tuple[dict[str, torch.Tensor], TrainLog]:
    """:func:`train_model` in a worker process; returns the weights and the log."""
    torch.set_num_threads(threads)
    model, tlog = train_model(train, cfg, views=views)
    return model.state_dict(), tlog


def train_geometry(
    data: str | Path, cfg: GeometryTrainConfig, *, single_view_baseline: bool = True,
    parallel: bool = True, progress: Callable[[str], None] | None = None,
) -> GeometryRun:
    """Load pairs, split by episode, train the teacher (and the single-view variant), evaluate.

    With ``parallel`` and at least two CPU cores, the single-view variant trains in a
    second process while this one trains the teacher, each with this process's torch thread
    count: the command then takes as long as one model instead of two. Training is seeded
    the same way in either case, so the weights equal the sequential run's.
    """
    torch.manual_seed(cfg.seed)
    say = progress or (lambda msg: log.info(msg))
    t0 = time.perf_counter()
    frames = load_pairs(data, cfg)
    train, held, held_ids = split_by_episode(frames, cfg.holdout_fraction, cfg.seed)
    say(f"{len(frames)} frame pairs from {len(frames.episode_names)} episodes: "
        f"{len(train)} train, {len(held)} held-out ({len(held_ids)} episodes); "
        f"loaded in {time.perf_counter() - t0:.0f}s")
    constants = fit_constant_depth(train)
    metrics: dict = {
        "data": {
            "pairs": len(frames), "train_pairs": len(train), "heldout_pairs": len(held),
            "episodes": len(frames.episode_names),
            "heldout_episodes": [frames.episode_names[i] for i in held_ids],
        },
        "constant_depth": {"values": constants, "heldout": evaluate_constant(held, constants)},
    }
    pool = None
    if single_view_baseline and parallel and (os.cpu_count() or 1) >= 2:
        say("training the single-view variant at the same time, in a second process")
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        pending = pool.submit(_train_in_process, train, cfg, 1, torch.get_num_threads())
    try:
        model, tlog = train_model(train, cfg, views=2, progress=say)
        single = None
        if pool is not None:
            state, slog = pending.result()
            single = GeometryModel(cfg.geometry_config(), seed=None)
            single.load_state_dict(state)
            single.eval()
        elif single_view_baseline:
            single, slog = train_model(train, cfg, views=1, progress=say)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    round_aggregator_fp16(model)
    metrics["teacher"] = {
        "train_seconds": round(tlog.seconds, 1), "losses": tlog.losses,
        "heldout": evaluate_model(model, held, cfg, views=2),
    }
    if cfg.small_every > 0:
        metrics["teacher"][f"heldout_at_{cfg.small_size}px"] = evaluate_model(
            model, held, cfg, views=2, size=cfg.small_size)
    if single is not None:
        round_aggregator_fp16(single)
        metrics["single_view"] = {
            "train_seconds": round(slog.seconds, 1), "losses": slog.losses,
            "heldout": evaluate_model(single, held, cfg, views=1),
        }
    metrics["total_seconds"] = round(time.perf_counter() - t0, 1)
    return GeometryRun(model=model, metrics=metrics, config=cfg, single_view=single)


def save_run(run: GeometryRun, out: str | Path, command: Sequence[str] | None = None) -> Path:
    """Write ``model.safetensors`` (aggregator + heads, fp16), ``config.json`` and
    ``metrics.json`` under ``out``; the teacher loads the aggregator and skips the heads.
    The single-view variant, when trained, goes to ``single_view.safetensors`` so that its
    reported errors can be re-measured (it is a comparison, not shipped)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agg_cfg = run.config.geometry_config().aggregator
    meta = {"format": "pt", "vggt_config": json.dumps(asdict(agg_cfg))}
    models = {"model.safetensors": run.model, "single_view.safetensors": run.single_view}
    for name, model in models.items():
        if model is not None:
            state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(out / name), metadata=meta)
    config = {
        "aggregator": asdict(agg_cfg),
        "native_input_size": run.config.input_size,
        "train": asdict(run.config),
        "command": list(command) if command else None,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(run.metrics, indent=2) + "\n")
    return out

"""The four profiles end to end: drive a :class:`~rocket_vla.analysis.subject.Subject`
through batches, feed the streaming statistics, and write JSON + PNG into one folder.

Each ``profile_*`` returns a JSON-able dict (also written as ``<name>.json``) so the
command, the docs and a notebook all read the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rocket_vla.align.indices import resolve_layers
from rocket_vla.analysis import plots
from rocket_vla.analysis.cka import MIN_SAMPLES, StreamingCKA
from rocket_vla.analysis.grad_conflict import GradConflict, ParamGroup, average, grad_conflict
from rocket_vla.analysis.grad_conflict import pair_losses as _pair_losses
from rocket_vla.analysis.importance import LayerImportance
from rocket_vla.analysis.pairs import recommend_pairs
from rocket_vla.analysis.projector_sim import ProjectorSimilarity
from rocket_vla.analysis.subject import Subject
from rocket_vla.errors import RocketError


def _write(out_dir: Path, name: str, data: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the [io] extra
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="batch")


# --- CKA -------------------------------------------------------------------------------
@dataclass
class CKASettings:
    """``student_layers``/``teacher_layers`` None = every index 1..depth (block outputs)."""

    student_layers: list[int] | None = None
    teacher_layers: list[int] | None = None
    samples: int = 256
    batch_size: int = 32
    mode: str = "flatten"
    estimator: str = "debiased"
    num_pairs: int | None = None
    progress: bool = True


def profile_cka(subject: Subject, settings: CKASettings, out_dir: Path) -> dict[str, Any]:
    """CKA map over ``settings.samples`` samples, both pairings, heatmap with the pairs."""
    if settings.samples < MIN_SAMPLES["debiased"]:
        raise RocketError(
            f"CKA needs at least {MIN_SAMPLES['debiased']} samples for the debiased estimator, "
            f"got {settings.samples}; raise --samples."
        )
    student = resolve_layers(settings.student_layers or list(range(1, subject.depth + 1)),
                             subject.depth, what="student layer")
    teacher = resolve_layers(settings.teacher_layers or list(range(1, subject.teacher_depth + 1)),
                             subject.teacher_depth, what="teacher layer")
    acc = StreamingCKA(student, teacher, mode=settings.mode)  # type: ignore[arg-type]
    total = -(-settings.samples // settings.batch_size)
    with torch.no_grad():
        batches = subject.batches(settings.samples, settings.batch_size,
                                  minimum=MIN_SAMPLES["debiased"])
        for batch in _progress(batches, total,
                               "cka", settings.progress):
            _, states, mask = subject.forward(batch, student)
            acc.update(states, subject.teacher_tokens(batch, teacher), mask, mask)
    result = acc.compute()
    sim = result.matrix(settings.estimator)  # type: ignore[arg-type]
    pairs = {m: recommend_pairs(sim, student, teacher, m, settings.num_pairs)  # type: ignore[arg-type]
             for m in ("hungarian", "monotone")}
    data = {**result.to_dict(), "estimator": settings.estimator, "label": subject.label,
            "pairs": {m: {"student_layers": s, "teacher_layers": t} for m, (s, t) in pairs.items()}}
    _write(out_dir, "cka", data)
    cells = {m: [(student.index(s), teacher.index(t)) for s, t in zip(*p, strict=True)]
             for m, p in pairs.items()}
    plots.plot_matrix(
        sim.tolist(), out_dir / "cka.png", row_labels=student, col_labels=teacher,
        title=f"linear CKA ({settings.estimator}, {result.num_samples} samples) - {subject.label}",
        xlabel="teacher layer", ylabel="student layer", pairs=cells,
    )
    return data


# --- gradient conflict -------------------------------------------------------------------
@dataclass
class GradSettings:
    group: ParamGroup = field(default_factory=ParamGroup)
    batches: int = 4
    batch_size: int = 16
    include_action: bool = True


def grad_profile(subject: Subject, settings: GradSettings) -> GradConflict:
    """Per-pair alignment losses (and the action loss) -> gradient cosines, batch-averaged."""
    aligner = subject.aligner
    if aligner.projectors is None:
        raise RocketError(
            f"{subject.label} was trained without alignment (baseline); gradient conflict "
            "needs an aligned checkpoint (naive, shared or rocket)."
        )
    cfg = aligner.config
    group = settings.group
    if not group.blocks_path:
        group = ParamGroup(group.kind, subject.blocks_path, group.block, group.name_filter)
    params = [p for _, p in group.select(subject.policy)]
    results = []
    for batch in subject.batches(settings.batches * settings.batch_size, settings.batch_size):
        pred, states, mask = subject.forward(batch, cfg.student_layers)
        targets = subject.teacher_tokens(batch, cfg.teacher_layers, cfg.pos_embed_scale, cfg.pos_embed)
        losses = {f"pair {s}-{t}": loss for s, t, loss in
                  zip(cfg.student_layers, cfg.teacher_layers,
                      _pair_losses(aligner, states, targets, mask), strict=True)}
        if settings.include_action:
            losses["action"] = subject.action_loss(batch, pred)
        results.append(grad_conflict(losses, params))
    out = average(results)
    out.meta = {"label": subject.label, "step": subject.step, "variant": cfg.variant,
                "projector": cfg.projector, "matryoshka": cfg.matryoshka,
                "param_group": group.kind}
    return out


def _latest(results: Sequence[Any]) -> list[Any]:
    """The last step of each variant, in first-seen order: one panel per run, not per step."""
    def key(r: Any) -> tuple[str, int]:
        meta = r.meta if isinstance(r, GradConflict) else r
        return meta["variant"], meta["step"]

    last: dict[str, Any] = {}
    for r in results:
        variant, step = key(r)
        if variant not in last or key(last[variant])[1] <= step:
            last[variant] = r
    return list(last.values())


def profile_grad(subjects: Sequence[Subject], settings: GradSettings, out_dir: Path
                 ) -> dict[str, Any]:
    """One cosine matrix per checkpoint (side by side) and inter-pair cosine over steps."""
    results = [grad_profile(s, settings) for s in subjects]
    data = {"checkpoints": [r.to_dict() for r in results]}
    _write(out_dir, "grad", data)
    labels = [n.replace("pair ", "") for n in results[0].names]
    plots.plot_matrices({r.meta["label"]: r.cosine.tolist() for r in _latest(results)},
                        out_dir / "grad.png", labels=labels,
                        title="cosine between per-loss gradients (backbone)")
    by_variant: dict[str, list[GradConflict]] = {}
    for r in results:
        by_variant.setdefault(f"{r.meta['variant']}", []).append(r)
    if any(len(v) > 1 for v in by_variant.values()):
        steps = sorted({r.meta["step"] for r in results})
        series = {}
        for variant, rs in by_variant.items():
            at = {r.meta["step"]: r.mean_offdiag() for r in rs}
            series[variant] = [at.get(s) for s in steps]
        plots.plot_curves(steps, series, out_dir / "grad_over_training.png",
                          title="mean inter-pair gradient cosine over training",
                          xlabel="training step", ylabel="mean cosine")
    return data


# --- projector similarity ------------------------------------------------------------------
def projector_profile(subject: Subject, samples: int, batch_size: int) -> dict[str, Any]:
    aligner = subject.aligner
    if aligner.projectors is None:
        raise RocketError(
            f"{subject.label} has no projector (baseline variant); `profile projector` needs "
            "a checkpoint trained with alignment (naive, shared or rocket)."
        )
    cfg = aligner.config
    acc = ProjectorSimilarity(cfg.num_pairs)
    with torch.no_grad():
        for batch in subject.batches(samples, batch_size):
            _, states, mask = subject.forward(batch, cfg.student_layers)
            targets = subject.teacher_tokens(batch, cfg.teacher_layers, cfg.pos_embed_scale, cfg.pos_embed)
            acc.update(aligner, states, targets, mask)
    return {"label": subject.label, "step": subject.step, "variant": cfg.variant,
            "student_layers": cfg.student_layers, "teacher_layers": cfg.teacher_layers,
            **acc.compute()}


def profile_projector(subjects: Sequence[Subject], samples: int, batch_size: int,
                      out_dir: Path) -> dict[str, Any]:
    """Per checkpoint: fit per pair, and input/output/teacher between-pair heatmaps."""
    results = [projector_profile(s, samples, batch_size) for s in subjects]
    data = {"checkpoints": results}
    _write(out_dir, "projector", data)
    for kind in ("inputs", "outputs", "teacher"):
        mats = {r["label"]: r[kind] for r in _latest(results) if r[kind] is not None}
        if mats:
            labels = [f"{s}-{t}" for s, t in zip(results[0]["student_layers"],
                                                 results[0]["teacher_layers"], strict=True)]
            plots.plot_matrices(mats, out_dir / f"projector_{kind}.png", labels=labels,
                                title=f"between-pair token cosine of {kind}")
    plots.plot_curves(
        list(range(len(results[0]["fit"]))),
        {r["label"]: r["fit"] for r in results}, out_dir / "projector_fit.png",
        title="cos(projected student, teacher) per pair", xlabel="pair", ylabel="cosine",
    )
    return data


# --- layer importance ---------------------------------------------------------------------
def profile_importance(subject: Subject, windows: Sequence[int], samples: int,
                       batch_size: int, out_dir: Path) -> dict[str, Any]:
    """Mean cos(h_s, h_{s+w}) per start layer and window, as curves."""
    acc = LayerImportance(subject.depth, tuple(windows))
    for batch in subject.batches(samples, batch_size):
        states, mask = subject.stream(batch)
        acc.update(states, mask)
    data = {"label": subject.label, **acc.compute()}
    _write(out_dir, "importance", data)
    plots.plot_curves(
        data["start_layers"],
        {f"w={w}": [row[i] for row in data["matrix"]] for i, w in enumerate(data["windows"])},
        out_dir / "importance.png", title=f"cos(h_s, h_(s+w)) - {subject.label}",
        xlabel="start layer s (hidden-state index)", ylabel="mean cosine",
    )
    return data

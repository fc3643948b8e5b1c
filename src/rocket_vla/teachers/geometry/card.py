"""MODEL_CARD.md of a geometry teacher run, written from its config.json and metrics.json
(no hand-copied numbers), with a verdict computed from the metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _data_section(data: Path) -> list[str]:
    """What was collected, from ``rocket collect``'s own records when they are there."""
    lines = [f"- Frames: every episode under `{data}` (agent-view + wrist pairs of one step)."]
    cfg_file, attempts = data / "collect_config.json", data / "attempts.jsonl"
    if cfg_file.is_file():
        c = json.loads(cfg_file.read_text())
        first, count = int(c.get("first_init", 0)), int(c.get("init_states", 0))
        lines.append(
            f"- Collected with `rocket collect`: suite(s) {', '.join(c.get('suites', []))}, tasks "
            f"{','.join(map(str, c.get('tasks', [])))}, official init states {first}.."
            f"{first + count - 1}, {c.get('image_size')} px, one frame every "
            f"{c.get('frame_stride')} steps, metric depth and camera parameters."
        )
    if attempts.is_file():
        rows = [json.loads(line) for line in attempts.read_text().splitlines() if line.strip()]
        failed = [f"task {r['task_id']} init {r['init']}" for r in rows if not r.get("success")]
        lines.append(
            f"- Scripted-expert attempts: {len(rows)}, kept {len(rows) - len(failed)} successful"
            + (f" (failed, not used: {', '.join(failed)})." if failed else ".")
        )
    return lines


def _num(value: float | None) -> str:
    """A card cell: three decimals, or a dash where a metric had no pixel to measure."""
    return "-" if value is None else f"{value:.3f}"


def _judge(changes: list[float]) -> str:
    """Words for relative error changes of the teacher (negative = teacher better)."""
    if all(c <= -0.10 for c in changes):
        return "clearly beats"
    if all(c < 0 for c in changes):
        return "beats (by less than 10%)"
    if all(abs(c) < 0.05 for c in changes):
        return "ties with (within 5%)"
    if all(c > 0 for c in changes):
        return "does NOT beat"
    return "is mixed against"


def _verdict(m: dict) -> list[str]:
    """Plain statements of whether the teacher beats each baseline, from the metrics."""
    out = []
    rivals = [("the best constant depth", m["constant_depth"]["heldout"])]
    if "single_view" in m:
        rivals.append(("the single-view variant", m["single_view"]["heldout"]))
    mine = m["teacher"]["heldout"]

    def change(res: dict, cam: str, metric: str) -> float:
        return (mine[cam][metric] - res[cam][metric]) / res[cam][metric]

    for name, res in rivals:
        parts = [f"{cam} {metric} {change(res, cam, metric):+.0%}"
                 for cam in ("all", "agentview", "eye_in_hand") for metric in ("abs_rel", "rmse")]
        judged = _judge([change(res, "all", k) for k in ("abs_rel", "rmse")])
        out.append(f"- Own-frame depth: the teacher {judged} {name} (pooled; relative change "
                   f"of its error: {', '.join(parts)}).")
    keys = ("scale_error", "point_error", "scene_abs_rel", "scene_rmse")
    if "single_view" in m and all(
        r["eye_in_hand"].get(k) is not None for r in (mine, m["single_view"]["heldout"]) for k in keys
    ):
        res = m["single_view"]["heldout"]
        parts = [f"wrist {k} {change(res, 'eye_in_hand', k):+.0%}" for k in keys]
        parts.append(f"pooled point_error {change(res, 'all', 'point_error'):+.0%}")
        judged = _judge([change(res, "eye_in_hand", k) for k in keys])
        out.append(f"- What the second view can fix (the wrist depth's per-frame scale, and where "
                   f"the wrist camera's surfaces lie in the agent-view frame): the teacher "
                   f"{judged} the single-view variant (relative change of its error: "
                   f"{', '.join(parts)}).")
    return out


def render_model_card(out: str | Path, data: str | Path, collect_commands: Sequence[str] = ()) -> str:
    """MODEL_CARD.md text from a run's ``config.json`` / ``metrics.json`` (no hand-copied numbers)."""
    out, data = Path(out), Path(data)
    config = json.loads((out / "config.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    agg, tr = config["aggregator"], config["train"]
    n_agg = None
    try:
        from safetensors import safe_open

        with safe_open(str(out / "model.safetensors"), "pt") as f:
            n_agg = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()  # noqa: SIM118
                        if k.startswith("aggregator."))
    except (OSError, ImportError):  # pragma: no cover - the card is still useful without it
        pass

    def row(name: str, res: dict, points: bool = True) -> str:
        cells = [name]
        for cam in ("agentview", "eye_in_hand", "all"):
            cells += [f"{res[cam]['abs_rel']:.3f}", f"{res[cam]['rmse']:.3f}"]
        cells.append(f"{res['all']['point_error']:.3f}" if points and "point_error" in res["all"]
                     else "-")
        return "| " + " | ".join(cells) + " |"

    d = m["data"]
    lines = [
        "# Tiny geometry teacher (bundled with rocket-vla)",
        "",
        "A small VGGT-architecture aggregator (our `VGGTTeacher`) trained from scratch to predict",
        "per-pixel metric depth and world points of LIBERO's agent-view and wrist cameras, the",
        "two views of one step given together (VGGT's multi-view input). It is the default",
        "teacher of offline runs: `rocket_vla.teachers.tiny.load_tiny_teacher(input_size, device)`.",
        "Only the aggregator is a teacher; the light depth/point heads ship in the same file",
        "(skipped on load) so the errors below can be reproduced.",
        "",
        "## Architecture",
        f"- Aggregator: width {agg['embed_dim']}, {agg['depth']} frame/global block pairs, "
        f"{agg['num_heads']} heads, {agg['num_register_tokens']} registers + camera token per view; "
        f"DINOv2-style patch embedding of {agg['patch_embed_depth']} blocks, patch {agg['patch_size']}"
        + (f"; {n_agg / 1e6:.2f} M parameters stored in float16." if n_agg else "."),
        f"- Teacher features: {agg['depth']} layers (index 1..{agg['depth']}, 0 = embeddings), "
        f"dim {2 * agg['embed_dim']} (concat of frame and global block outputs).",
        f"- Native input {config['native_input_size']} px -> "
        f"{config['native_input_size'] // agg['patch_size']}x"
        f"{config['native_input_size'] // agg['patch_size']} patches; one step in "
        f"{tr['small_every']} was trained at {tr['small_size']} px "
        f"({tr['small_size'] // agg['patch_size']}x{tr['small_size'] // agg['patch_size']} patches), "
        "so both sizes are in distribution; other sides work but were not trained."
        if tr["small_every"] else
        f"- Native input {config['native_input_size']} px.",
        "",
        "## Data",
        *_data_section(data),
        f"- {d['pairs']} frame pairs from {d['episodes']} episodes; held out by EPISODE "
        f"(seeded, fraction {tr['holdout_fraction']}): {len(d['heldout_episodes'])} episode(s), "
        f"{d['heldout_pairs']} pairs; {d['train_pairs']} training pairs.",
        "- Held-out episodes: " + ", ".join(f"`{e}`" for e in d["heldout_episodes"]) + ".",
        "",
        "## Recipe",
        *(f"    {c}" for c in collect_commands),
        f"    {' '.join(config['command']) if config.get('command') else 'rocket train-teacher'}",
        "",
        f"- Targets: depth and world points (agent-view camera frame) from the collected depth, "
        f"intrinsics and camera-to-world extrinsics, sampled at {tr['target_size']}x"
        f"{tr['target_size']} (nearest pixel centre); pixels beyond {tr['max_depth']} m unsupervised.",
        f"- Loss: confidence-weighted depth + point loss (alpha {tr['conf_alpha']}); AdamW lr "
        f"{tr['lr']}, weight decay {tr['weight_decay']}, {tr['warmup']} warm-up steps then "
        f"cosine, clip {tr['grad_clip']}; {tr['steps']} steps of {tr['batch_size']} pairs; "
        f"seed {tr['seed']}.",
        f"- CPU cost: teacher {m['teacher']['train_seconds'] / 60:.1f} min"
        + (f", single-view variant {m['single_view']['train_seconds'] / 60:.1f} min"
           if "single_view" in m else "")
        + f", whole command {m['total_seconds'] / 60:.1f} min (2 shared CPU cores).",
        "",
        f"## Held-out depth errors ({d['heldout_pairs']} pairs, {tr['target_size']} px maps, "
        f"native {config['native_input_size']} px input)",
        "",
        "| predictor | agentview abs-rel | agentview RMSE (m) | wrist abs-rel | wrist RMSE (m) "
        "| pooled abs-rel | pooled RMSE (m) | world-point error (m) |",
        "|---|---|---|---|---|---|---|---|",
        row("teacher (2 views)", m["teacher"]["heldout"]),
    ]
    if "single_view" in m:
        lines.append(row("single-view variant", m["single_view"]["heldout"]))
    lines.append(row("best constant depth", m["constant_depth"]["heldout"]))
    small_key = f"heldout_at_{tr['small_size']}px"
    if small_key in m["teacher"]:
        lines.append(row(f"teacher at {tr['small_size']} px input", m["teacher"][small_key]))
    scene_rows = [(name, m[key]["heldout"]) for name, key in
                  (("teacher (2 views)", "teacher"), ("single-view variant", "single_view"))
                  if key in m and "scene_abs_rel" in m[key]["heldout"]["all"]]
    if scene_rows:
        lines += [
            "",
            "What a second view can fix: the wrist depth's *scale error* (mean over frames of "
            "|log median(pred/gt)|, how far the camera is from what it sees, one factor per frame) "
            "and the scene-frame geometry (world points in the agent-view camera frame; *scene "
            "depth* is their z, the distance along the agent-view camera's axis).",
            "",
            "| predictor | wrist depth scale error | wrist point error (m) | wrist scene abs-rel "
            "| wrist scene RMSE (m) | agentview point error (m) | pooled point error (m) |",
            "|---|---|---|---|---|---|---|",
            *("| " + " | ".join([name] + [_num(r[cam].get(k)) for cam, k in (
                ("eye_in_hand", "scale_error"),
                ("eye_in_hand", "point_error"), ("eye_in_hand", "scene_abs_rel"),
                ("eye_in_hand", "scene_rmse"), ("agentview", "point_error"), ("all", "point_error"))])
              + " |" for name, r in scene_rows),
        ]
    consts = m["constant_depth"]["values"]
    lines += [
        "",
        "- Best constant: per camera, fitted on the training pixels for each metric "
        "(mean for RMSE, 1/d-weighted median for abs-rel): "
        + ", ".join(f"{cam} {v['rmse']:.3f} / {v['abs_rel']:.3f} m" for cam, v in consts.items())
        + ".",
        "- Single-view variant: the same model, recipe, steps, pixels and targets (depth, and "
        "world points in the agent-view frame), each camera image a 1-view sample, so the "
        "difference is what seeing the other camera adds.",
        "- Errors are measured with the aggregator rounded to the shipped float16 weights.",
        "",
        "## Verdict (computed from the numbers above)",
        *_verdict(m),
        "",
        "## Limits",
        "- Trained on one LIBERO suite's scenes and cameras; not a general depth model.",
        "- Small data and a short CPU schedule: a teacher of rough geometry, far below VGGT-1B; "
        "use the official checkpoint when it is available.",
        "- At this size and budget, whether the model learns to read the other view varies from "
        "run to run; docs/teacher.md compares seeds and sizes "
        "(`benchmarks/teacher_views.py` measures it for any run).",
    ]
    return "\n".join(lines) + "\n"

"""Where the tiny teacher's depth error comes from, and what its second view changes.

Reads a `rocket train-teacher` run folder (``model.safetensors`` = the 2-view teacher,
``single_view.safetensors`` = its single-view variant, ``config.json``) and the data it
was trained on, rebuilds the same held-out split, and reports for both models:

* own-frame depth abs-rel split into pixels at a depth edge (a 3x3 neighbour differs by
  more than 10% in depth) and smooth pixels, with each part's share of the error: edge
  error is set by the patch grid's resolution, which a second view does not change;
* the per-frame depth scale error and the scale-aligned abs-rel (the depth map's shape);
* for the 2-view teacher, the wrist errors when each held-out wrist image is paired with
  the agent-view image of a *different* held-out step: if the teacher reads the other view,
  its wrist geometry gets worse with the wrong one.

    python benchmarks/teacher_views.py --run runs/tiny_teacher --data DATA --out views.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rocket_vla.teachers.geometry import (
    CAMERAS,
    GeometryTrainConfig,
    PairFrames,
    evaluate_model,
    frame_scale_ratios,
    load_pairs,
    predict_frames,
    split_by_episode,
)
from rocket_vla.teachers.vggt_heads import GeometryModel


def load_model(path: Path, cfg: GeometryTrainConfig) -> GeometryModel:
    model = GeometryModel(cfg.geometry_config(), seed=None)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval()


def edge_mask(depth: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood spans more than 10% in depth (log-depth range > 0.1)."""
    logd = depth.clamp_min(1e-3).log().flatten(0, 1)[:, None]
    hi = F.max_pool2d(logd, 3, 1, 1)
    lo = -F.max_pool2d(-logd, 3, 1, 1)
    return ((hi - lo) > 0.1)[:, 0].reshape(depth.shape)


def breakdown(pred: torch.Tensor, held: PairFrames) -> dict:
    gt, valid, edges = held.depth, held.valid, edge_mask(held.depth)
    out = {}
    for c, cam in enumerate(CAMERAS):
        rel = (pred[:, c] - gt[:, c]).abs() / gt[:, c].clamp_min(1e-6)
        v = valid[:, c]
        total = float(rel[v].sum())
        row = {}
        for name, sel in (("edge", v & edges[:, c]), ("smooth", v & ~edges[:, c])):
            row[name] = {"pixel_share": float(sel.sum() / v.sum()), "abs_rel": float(rel[sel].mean()),
                         "error_share": float(rel[sel].sum()) / total}
        ratios = frame_scale_ratios(pred[:, c:c + 1], gt[:, c:c + 1], v[:, None])[:, 0]
        has = ~torch.isnan(ratios)
        aligned = ((pred[:, c] / ratios[:, None, None] - gt[:, c]).abs() / gt[:, c]).where(v, 0.0)
        row["scale_error"] = float(ratios[has].log().abs().mean())
        row["scale_aligned_abs_rel"] = float((aligned.sum((1, 2)) / v.sum((1, 2)))[has].mean())
        out[cam] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a `rocket train-teacher` output folder")
    ap.add_argument("--data", required=True, help="the data the run was trained on")
    ap.add_argument("--out", default=None, help="write the report here as JSON")
    args = ap.parse_args()
    run = Path(args.run)
    cfg = GeometryTrainConfig(**json.loads((run / "config.json").read_text())["train"])
    frames = load_pairs(args.data, cfg)
    held = split_by_episode(frames, cfg.holdout_fraction, cfg.seed)[1]
    report: dict = {"run": str(run), "heldout_pairs": len(held)}
    for name, file, views in (("teacher", "model.safetensors", 2),
                              ("single_view", "single_view.safetensors", 1)):
        if not (run / file).is_file():
            continue
        model = load_model(run / file, cfg)
        report[name] = breakdown(predict_frames(model, held, cfg, views)[0], held)
        if views == 2:
            perm = torch.randperm(len(held), generator=torch.Generator().manual_seed(0))
            wrong = PairFrames(torch.stack([held.images[perm, 0], held.images[:, 1]], 1),
                               held.depth, held.cam_points, held.rel, held.valid, held.episode,
                               held.episode_names)
            right = evaluate_model(model, held, cfg, views=2)["eye_in_hand"]
            swapped = evaluate_model(model, wrong, cfg, views=2)["eye_in_hand"]
            keys = ("abs_rel", "scale_error", "point_error")
            report["teacher_wrist_with_wrong_agentview"] = {
                k: {"right": right[k], "wrong": swapped[k]} for k in keys}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Held-out metrics of the geometry teacher and of its baselines (the best constant depth).

Own-frame depth (abs-rel, RMSE), the world-point error in the agent-view frame, the
scene-frame depth (z of the world points) and the per-frame depth scale error.
"""

from __future__ import annotations

import torch

from rocket_vla.teachers.geometry.config import GeometryTrainConfig
from rocket_vla.teachers.geometry.data import CAMERAS, PairFrames, view_batch
from rocket_vla.teachers.geometry.model import predict
from rocket_vla.teachers.vggt_heads import GeometryModel


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """abs-rel (mean |p - g| / g) and RMSE (metres) over valid pixels."""
    p, g = pred[valid].double(), gt[valid].double()
    return {"abs_rel": float(((p - g).abs() / g).mean()),
            "rmse": float(((p - g) ** 2).mean().sqrt()),
            "pixels": int(valid.sum())}


def frame_scale_ratios(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per frame-view [N, V, H, W] -> [N, V]: the (lower) median of ``pred / gt`` over the
    valid pixels, NaN where a view has none."""
    ratio = torch.where(valid, pred.double() / gt.double(), torch.nan)
    return ratio.flatten(2).nanmedian(dim=-1).values


def frame_scale_error(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> float | None:
    """Mean over frame-views [N, V, ...] with a valid pixel of ``|log median(pred / gt)|``."""
    logs = frame_scale_ratios(pred, gt, valid).log().abs()
    logs = logs[~torch.isnan(logs)]
    return float(logs.mean()) if logs.numel() else None


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> float:
    order = torch.argsort(values)
    v, w = values[order], weights[order]
    cum = torch.cumsum(w, 0)
    return float(v[torch.searchsorted(cum, cum[-1] / 2).clamp(max=len(v) - 1)])


def fit_constant_depth(train: PairFrames) -> dict[str, dict[str, float]]:
    """Per camera, the best constant for each metric on the training pixels: the mean
    minimises RMSE, the 1/d-weighted median minimises abs-rel."""
    out = {}
    for i, cam in enumerate(CAMERAS):
        d = train.depth[:, i][train.valid[:, i]].double()
        out[cam] = {"rmse": float(d.mean()), "abs_rel": _weighted_median(d, 1.0 / d)}
    return out


def evaluate_constant(held: PairFrames, constants: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Held-out metrics of the constant predictor (each metric with its own best constant)."""
    result: dict[str, dict] = {}
    for i, cam in enumerate(CAMERAS + ("all",)):
        cams = range(2) if cam == "all" else [i]
        m: dict[str, float] = {}
        for metric in ("abs_rel", "rmse"):
            preds = torch.stack([torch.full_like(held.depth[:, j], constants[CAMERAS[j]][metric])
                                 for j in range(2)], dim=1)
            sel = torch.zeros_like(held.valid)
            for j in cams:
                sel[:, j] = held.valid[:, j]
            full = depth_metrics(preds, held.depth, sel)
            m[metric], m["pixels"] = full[metric], full["pixels"]
        result[cam] = m
    return result


@torch.no_grad()
def predict_frames(model: GeometryModel, frames: PairFrames, cfg: GeometryTrainConfig, views: int,
                   size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth [N, 2, t, t] and world points [N, 2, t, t, 3] of every pair of ``frames``,
    each camera seen as ``views`` allows (2: together, 1: alone), input side ``size``."""
    size = size or cfg.input_size
    model.eval()
    t = cfg.target_size
    depth, points = [], []
    for lo in range(0, len(frames), cfg.eval_batch):
        index = torch.arange(lo, min(len(frames), lo + cfg.eval_batch))
        out = predict(model, view_batch(frames, index, views, size, cfg.input_size)[0], t)
        depth.append(out["depth"].reshape(len(index), 2, t, t))
        points.append(out["world_points"].reshape(len(index), 2, t, t, 3))
    return torch.cat(depth), torch.cat(points)


@torch.no_grad()
def evaluate_model(model: GeometryModel, held: PairFrames, cfg: GeometryTrainConfig,
                   views: int, size: int | None = None) -> dict[str, dict]:
    """Held-out metrics per camera and pooled: own-frame depth (``abs_rel``, ``rmse``), the
    world-point error in metres (``point_error``, agent-view frame), the scene-frame
    depth (``scene_abs_rel``, ``scene_rmse``: predicted vs true z of the world points) and
    the depth ``scale_error``: the mean over frames of ``|log median(pred / gt)|``, the part
    of a depth map's error that is one factor for the whole frame (how far away the camera
    thinks the scene is), as opposed to its shape."""
    pred, pts = predict_frames(model, held, cfg, views, size)
    target = held.points(torch.arange(len(held)))
    perr = (pts - target).norm(dim=-1)
    in_front = target[..., 2] > 0  # scene-frame depth is defined in front of the camera
    result: dict[str, dict] = {}
    for i, cam in enumerate(CAMERAS + ("all",)):
        sel = held.valid.clone() if cam == "all" else torch.zeros_like(held.valid)
        if cam != "all":
            sel[:, i] = held.valid[:, i]
        m = depth_metrics(pred, held.depth, sel)
        m["point_error"] = float(perr[sel].double().mean())
        front = sel & in_front
        scene = depth_metrics(pts[..., 2], target[..., 2], front) if front.any() else {}
        m["scene_abs_rel"], m["scene_rmse"] = scene.get("abs_rel"), scene.get("rmse")
        m["scale_error"] = frame_scale_error(pred, held.depth, sel)
        result[cam] = m
    return result

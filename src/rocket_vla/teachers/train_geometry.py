"""Train a small VGGT-architecture geometry teacher on collected LIBERO frames.

Why this exists: offline runs need a teacher whose features carry 3D structure, and the
only way to put 3D structure into a small network without downloading VGGT-1B is to train
it, as VGGT was trained, to predict per-pixel depth and world points for several views of
one scene at once. LIBERO collection (``rocket collect``) records exactly the ground truth
needed: metric depth and camera intrinsics/extrinsics for the agent-view and wrist cameras.

Recipe (what :func:`train_geometry` does):

* **Samples** are the two cameras of one recorded step, stacked as a 2-view input
  ``[agentview, eye_in_hand]`` (VGGT's multi-view setting; view 0 is the reference).
* **Targets** per view: metric depth, and world points expressed in the reference
  (agent-view) camera frame, VGGT's convention. Points come from depth by
  :func:`unproject_depth` (``X_cam = d * K^-1 [u, v, 1]``) and the camera-to-world
  extrinsics (:func:`relative_transform`). Targets are sampled at ``target_size`` (nearest
  pixel centre of the full-resolution maps, so every target is a true surface point);
  the dense heads predict at that size, which keeps the CPU cost in the aggregator.
* **Loss**: :func:`rocket_vla.teachers.vggt_heads.geometry_loss` (confidence-weighted
  depth + point errors). AdamW, linear warm-up then cosine decay, gradient clipping.
* **Input sizes**: the native size is ``input_size`` (112 -> 8x8 patches); every
  ``small_every``-th step runs at ``small_size`` (56 -> 4x4) so that a run that asks the
  teacher for 56-px inputs (the training default) still gets features it was trained on.
* **Held-out split by episode** (seeded), never by frame: neighbouring frames of one
  episode are nearly identical, so a frame split would measure memorisation.
* **Baselines** on the same held-out pixels: the best constant depth per camera fitted on
  the training frames (each metric gets its own optimum, the mean for RMSE and the
  1/d-weighted median for abs-rel, so the baseline is as strong as a constant can be), and a *single-view
  variant*: the same model, recipe and targets (depth, and world points in the agent-view
  frame), but every camera image is its own 1-view sample, so any gain of the teacher over
  it is what seeing the other camera adds.
* **Metrics** per camera and pooled: depth abs-rel and RMSE in each camera's own frame;
  the world-point error (metres, agent-view frame); and the *scene-frame depth*, the
  z-coordinate of the predicted world points (how far each surface lies along the
  agent-view camera's axis). Own-frame depth of LIBERO's fixed cameras is nearly determined
  by one image; where the wrist camera's surfaces lie in the scene depends on the hand's
  pose, which the agent-view image shows, so that is where a second view can pay.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError
from rocket_vla.teachers.vggt import VGGTConfig
from rocket_vla.teachers.vggt_heads import GeometryConfig, GeometryModel, geometry_loss

if TYPE_CHECKING:
    from rocket_vla.data.episodes import Episode

log = logging.getLogger(__name__)

CAMERAS = ("agentview", "eye_in_hand")


# --------------------------------------------------------------------------- geometry
def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Camera-frame points ``[H, W, 3]`` of a depth map ``[H, W]`` (z-depth, metres).

    Pixel ``(u = column, v = row)`` with depth ``d`` maps to ``d * K^-1 [u, v, 1]``, the
    convention of :meth:`rocket_vla.envs.libero_env.LiberoEnv.camera_parameters`
    (``K`` may have negative focal lengths: it describes the 180-degree-rotated images).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise RocketError(f"depth must be a single [H, W] map, got shape {depth.shape}.")
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                       indexing="ij")
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H, W, 3]
    rays = pixels @ np.linalg.inv(np.asarray(intrinsics, dtype=np.float64)).T
    return rays * depth[..., None]


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points ``[..., 3]``."""
    t = np.asarray(transform, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ t[:3, :3].T + t[:3, 3]


def relative_transform(cam_to_world: np.ndarray, ref_cam_to_world: np.ndarray) -> np.ndarray:
    """The transform taking camera-frame points into the reference camera's frame."""
    return np.linalg.inv(np.asarray(ref_cam_to_world, np.float64)) @ np.asarray(
        cam_to_world, np.float64)


# --------------------------------------------------------------------------- config
@dataclass
class GeometryTrainConfig:
    """Everything a teacher training run depends on (written next to the weights)."""

    # model: a VGGT aggregator small enough to ship (~1.2 M parameters, ~2.4 MB in fp16)
    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 4
    patch_embed_depth: int = 2
    head_dim: int = 16
    # data
    input_size: int = 112  # native teacher input (multiple of 14): 8x8 patches
    small_size: int = 56  # also trained every `small_every` steps: 4x4 patches
    small_every: int = 2  # 0 disables mixed-size training
    target_size: int = 28  # depth / point maps are predicted and scored at this side
    max_depth: float = 10.0  # pixels farther than this (or not finite) are not supervised
    holdout_fraction: float = 0.2
    # optimisation
    steps: int = 400
    batch_size: int = 4  # frame pairs per step
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 50
    grad_clip: float = 1.0
    conf_alpha: float = 0.2
    seed: int = 0
    eval_batch: int = 32
    log_every: int = 50

    def __post_init__(self) -> None:
        for name in ("input_size", "small_size"):
            side = getattr(self, name)
            if side <= 0 or side % 14:
                raise RocketError(f"{name} {side} must be a positive multiple of 14 (the patch size).")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise RocketError(
                f"holdout fraction {self.holdout_fraction} must be in (0, 1); e.g. 0.2."
            )
        if self.steps < 1 or self.batch_size < 1:
            raise RocketError("steps and batch size must be at least 1.")
        for name in ("embed_dim", "depth", "num_heads", "patch_embed_depth", "head_dim", "target_size",
                     "eval_batch", "log_every"):
            if getattr(self, name) < 1:
                raise RocketError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("small_every", "warmup", "seed"):
            if getattr(self, name) < 0:
                raise RocketError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("lr", "grad_clip", "max_depth"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise RocketError(f"{name} must be a positive finite number, got {getattr(self, name)}.")
        for name in ("weight_decay", "conf_alpha"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise RocketError(f"{name} must be a finite number >= 0, got {getattr(self, name)}.")

    def geometry_config(self) -> GeometryConfig:
        agg = VGGTConfig.tiny(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
            patch_embed_depth=self.patch_embed_depth, patch_embed_heads=self.num_heads,
            img_size=self.input_size,
        )
        return GeometryConfig(aggregator=agg, head_layers=tuple(range(1, self.depth + 1)),
                              head_dim=self.head_dim, conf_alpha=self.conf_alpha)


# --------------------------------------------------------------------------- data
@dataclass
class PairFrames:
    """Frame pairs of a set of episodes, ready for training.

    images: uint8 [N, 2, 3, S, S] at the native input size (view 0 = agentview).
    depth: float32 [N, 2, t, t]; cam_points: float32 [N, 2, t, t, 3] in each camera's frame.
    rel: float32 [N, 4, 4], the wrist-to-agentview transform of each pair.
    valid: bool [N, 2, t, t]; episode: int64 [N], index into ``episode_names``.
    """

    images: torch.Tensor
    depth: torch.Tensor
    cam_points: torch.Tensor
    rel: torch.Tensor
    valid: torch.Tensor
    episode: torch.Tensor
    episode_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, mask: torch.Tensor) -> PairFrames:
        idx = torch.nonzero(mask).flatten()
        return PairFrames(self.images[idx], self.depth[idx], self.cam_points[idx],
                          self.rel[idx], self.valid[idx], self.episode[idx],
                          list(self.episode_names))

    def points(self, index: torch.Tensor) -> torch.Tensor:
        """World-point targets [B, 2, t, t, 3] of rows ``index``, in the agent-view camera
        frame (VGGT's reference frame is the first view of a sample).

        The single-view variant is trained on these same targets, one camera at a time: it
        must place the wrist camera's surfaces in the scene frame from the wrist image
        alone, so the two models differ only in whether they see the other camera.
        """
        pts = self.cam_points[index]
        rel = self.rel[index]  # [B, 4, 4]
        wrist = torch.einsum("bij,bhwj->bhwi", rel[:, :3, :3], pts[:, 1]) + rel[:, None, None, :3, 3]
        return torch.stack([pts[:, 0], wrist], dim=1)


def _resize_images(rgb: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, 3, size, size], resized like `Teacher.prepare`."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def _sample_maps(maps: np.ndarray, size: int) -> torch.Tensor:
    """Nearest-pixel-centre sampling [N, H, W, ...] -> [N, size, size, ...]."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    extra = t.shape[3:]
    t = t.reshape(*t.shape[:3], -1).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(size, size), mode="nearest-exact")
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], size, size, *extra)


def episode_pairs(ep: Episode, cfg: GeometryTrainConfig) -> dict[str, torch.Tensor]:
    """Pairs of one episode as tensors; RocketError if it lacks depth or camera parameters."""
    where = ep.source or ep.name or "an episode"
    need = [f"{c}_{k}" for c in CAMERAS for k in ("rgb", "depth", "extrinsics")]
    missing = [k for k in need if k not in ep.obs]
    missing += [f"{c}_intrinsics" for c in CAMERAS if f"{c}_intrinsics" not in ep.attrs]
    if missing:
        raise RocketError(
            f"{where} has no {', '.join(missing)}; the geometry teacher needs depth and camera "
            "parameters, so collect the data with `rocket collect` (without --no-depth)."
        )
    images, depth, cam_points = [], [], []
    for cam in CAMERAS:
        d = np.asarray(ep.obs[f"{cam}_depth"], dtype=np.float64)
        k = np.asarray(ep.attrs[f"{cam}_intrinsics"], dtype=np.float64)
        pts = np.stack([unproject_depth(frame, k) for frame in d])
        images.append(_resize_images(ep.obs[f"{cam}_rgb"], cfg.input_size))
        depth.append(_sample_maps(d, cfg.target_size))
        cam_points.append(_sample_maps(pts, cfg.target_size))
    ext = ep.obs
    rel = np.stack([relative_transform(w, a) for a, w in
                    zip(ext["agentview_extrinsics"], ext["eye_in_hand_extrinsics"], strict=True)])
    depth_t = torch.stack(depth, dim=1)
    valid = torch.isfinite(depth_t) & (depth_t > 0) & (depth_t < cfg.max_depth)
    return {
        "images": torch.stack(images, dim=1),
        "depth": torch.where(valid, depth_t, torch.zeros_like(depth_t)),
        "cam_points": torch.nan_to_num(torch.stack(cam_points, dim=1)),
        "rel": torch.from_numpy(rel.astype(np.float32)),
        "valid": valid,
    }


def load_pairs(data: str | Path, cfg: GeometryTrainConfig) -> PairFrames:
    """All frame pairs of the episodes under ``data`` (a file or a folder of HDF5 files)."""
    from rocket_vla.data.episodes import iter_episodes

    parts: dict[str, list[torch.Tensor]] = {}
    episode_ids: list[torch.Tensor] = []
    names: list[str] = []
    for ep in iter_episodes(data):
        pairs = episode_pairs(ep, cfg)
        for key, value in pairs.items():
            parts.setdefault(key, []).append(value)
        episode_ids.append(torch.full((pairs["images"].shape[0],), len(names), dtype=torch.int64))
        names.append(_episode_label(ep, data))
    if not names:
        raise RocketError(f"{data} holds no episodes; collect some with `rocket collect`.")
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return PairFrames(episode=torch.cat(episode_ids), episode_names=names, **cat)


def _episode_label(ep: Episode, root: str | Path) -> str:
    try:
        rel = str(Path(ep.source).relative_to(Path(root)))
    except (ValueError, TypeError):
        rel = str(ep.source)
    return f"{rel}:{ep.name}" if ep.name else rel


def split_by_episode(
    frames: PairFrames, fraction: float, seed: int
) -> tuple[PairFrames, PairFrames, list[int]]:
    """(train, held-out, held-out episode ids): a seeded choice of whole episodes."""
    n = len(frames.episode_names)
    if n < 2:
        raise RocketError(
            f"the data holds {n} episode; a held-out split by episode needs at least 2, so "
            "collect more episodes."
        )
    k = min(n - 1, max(1, int(round(fraction * n))))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = sorted(perm[:k])
    mask = torch.isin(frames.episode, torch.tensor(held))
    return frames.subset(~mask), frames.subset(mask), held


# --------------------------------------------------------------------------- model I/O
def predict(model: GeometryModel, images: torch.Tensor, out_size: int) -> dict[str, torch.Tensor]:
    """Run ``model`` on images [B, S, 3, H, W] in [0, 1] and decode the heads at ``out_size``.

    Same computation and parameterisation as :meth:`GeometryModel.forward`, except that the
    dense heads are decoded at ``out_size`` instead of the input size: on CPU the
    full-resolution head convolutions would cost more than the aggregator being trained.
    """
    b, s, _, height, width = images.shape
    p = model.cfg.aggregator.patch_size
    tokens = model.aggregator(images, model.layers)
    start = model.aggregator.patch_start
    rows, cols = height // p, width // p
    grids = [tokens[k][:, :, start:].reshape(b * s, rows, cols, -1) for k in model.layers]
    size = (out_size, out_size)
    d = model.depth_head(grids, size).reshape(b, s, 2, *size)
    w = model.point_head(grids, size).reshape(b, s, 4, *size)
    return {
        "depth": torch.exp(d[:, :, 0]),
        "depth_conf": 1.0 + torch.exp(d[:, :, 1]),
        "world_points": (torch.sign(w[:, :, :3]) * torch.expm1(w[:, :, :3].abs())).permute(0, 1, 3, 4, 2),
        "world_points_conf": 1.0 + torch.exp(w[:, :, 3]),
    }


def _as_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """[B, 2, ...] pairs -> [B, 2, ...] (2 views) or [2B, 1, ...] (each camera alone)."""
    return x if views == 2 else x.reshape(x.shape[0] * 2, 1, *x.shape[2:])


def _batch(frames: PairFrames, index: torch.Tensor, views: int, size: int,
           native: int) -> tuple[torch.Tensor, ...]:
    images = frames.images[index].float() / 255.0  # [B, 2, 3, S, S]
    if size != native:
        b = images.shape[0]
        images = F.interpolate(images.reshape(b * 2, 3, native, native), size=(size, size),
                               mode="bilinear", align_corners=False, antialias=True)
        images = images.reshape(b, 2, 3, size, size)
    points = frames.points(index)
    return (_as_views(images, views), _as_views(frames.depth[index], views),
            _as_views(points, views), _as_views(frames.valid[index], views))


# --------------------------------------------------------------------------- training
@dataclass
class TrainLog:
    steps: int
    seconds: float
    losses: list[tuple[int, float]]


def train_model(
    frames: PairFrames, cfg: GeometryTrainConfig, views: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[GeometryModel, TrainLog]:
    """Train a fresh :class:`GeometryModel` on ``frames`` with ``views`` (2 or 1) per sample."""
    if views not in (1, 2):
        raise RocketError(f"views must be 1 or 2, got {views}.")
    if len(frames) == 0:
        raise RocketError("no training frames; collect more episodes or lower the held-out fraction.")
    torch.manual_seed(cfg.seed)
    model = GeometryModel(cfg.geometry_config(), seed=cfg.seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "token" not in n
             and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "token" not in n
                and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses: list[tuple[int, float]] = []
    running: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.steps):
        index = torch.randint(len(frames), (min(cfg.batch_size, len(frames)),), generator=gen)
        small = cfg.small_every > 0 and step % cfg.small_every == cfg.small_every - 1
        size = cfg.small_size if small else cfg.input_size
        images, depth, points, valid = _batch(frames, index, views, size, cfg.input_size)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        out = predict(model, images, cfg.target_size)
        loss = geometry_loss(out, depth, points, valid, alpha=cfg.conf_alpha)["total"]
        if not torch.isfinite(loss):
            raise RocketError(
                f"the geometry loss became {loss.item()} at step {step}; lower --lr."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        running.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
            mean = float(np.mean(running))
            losses.append((step + 1, mean))
            running.clear()
            if progress:
                progress(f"[{views}-view] step {step + 1}/{cfg.steps} loss {mean:.4f} "
                         f"lr {lr_at(step):.2e} {time.perf_counter() - start:.0f}s")
    model.eval()
    return model, TrainLog(cfg.steps, time.perf_counter() - start, losses)


# --------------------------------------------------------------------------- evaluation
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
        out = predict(model, _batch(frames, index, views, size, cfg.input_size)[0], t)
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


# --------------------------------------------------------------------------- the run
@dataclass
class GeometryRun:
    """What :func:`train_geometry` produced."""

    model: GeometryModel
    metrics: dict
    config: GeometryTrainConfig
    single_view: GeometryModel | None = None


def _round_aggregator_fp16(model: GeometryModel) -> None:
    """Round the aggregator to the precision it ships in, so reported errors are the shipped ones."""
    with torch.no_grad():
        for p in model.aggregator.parameters():
            p.copy_(p.half().float())


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
    _round_aggregator_fp16(model)
    metrics["teacher"] = {
        "train_seconds": round(tlog.seconds, 1), "losses": tlog.losses,
        "heldout": evaluate_model(model, held, cfg, views=2),
    }
    if cfg.small_every > 0:
        metrics["teacher"][f"heldout_at_{cfg.small_size}px"] = evaluate_model(
            model, held, cfg, views=2, size=cfg.small_size)
    if single is not None:
        _round_aggregator_fp16(single)
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


# --------------------------------------------------------------------------- model card
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

"""Training data of the geometry teacher: frame pairs of collected episodes, split by episode.

A sample is the two cameras of one recorded step, ``[agentview, eye_in_hand]`` (view 0 is
VGGT's reference view), with depth and camera-frame points sampled at the target size
(nearest pixel centre, so every target is a true surface point).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError
from rocket_vla.teachers.geometry.camera import relative_transform, unproject_depth
from rocket_vla.teachers.geometry.config import GeometryTrainConfig

if TYPE_CHECKING:
    from rocket_vla.data.episodes import Episode

CAMERAS = ("agentview", "eye_in_hand")


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
            "parameters, so collect the data with `rocket collect` (without --depth false)."
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


def _as_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """[B, 2, ...] pairs -> [B, 2, ...] (2 views) or [2B, 1, ...] (each camera alone)."""
    return x if views == 2 else x.reshape(x.shape[0] * 2, 1, *x.shape[2:])


def view_batch(frames: PairFrames, index: torch.Tensor, views: int, size: int,
               native: int) -> tuple[torch.Tensor, ...]:
    """(images, depth, world points, valid) of rows ``index``, the images resized from the
    stored ``native`` side to ``size`` and every tensor shaped for ``views`` (2 or 1)."""
    images = frames.images[index].float() / 255.0  # [B, 2, 3, S, S]
    if size != native:
        b = images.shape[0]
        images = F.interpolate(images.reshape(b * 2, 3, native, native), size=(size, size),
                               mode="bilinear", align_corners=False, antialias=True)
        images = images.reshape(b, 2, 3, size, size)
    points = frames.points(index)
    return (_as_views(images, views), _as_views(frames.depth[index], views),
            _as_views(points, views), _as_views(frames.valid[index], views))

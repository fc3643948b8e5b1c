"""Dense geometry heads on our VGGT aggregator, for training a small teacher of our own.

A teacher is useful for alignment because its features encode 3D structure; the way to
put that structure into a small VGGT-architecture network is to train it to predict
per-pixel depth and world points (in the first view's camera frame) for several views
at once, as VGGT itself was trained. This module provides that network and its loss;
the training command and the LIBERO ground truth live elsewhere.

The heads are deliberately light (a DPT-like fusion of a few aggregator layers rather
than VGGT's full DPT): the tiny teacher's job is to shape the aggregator's features,
and only the aggregator is kept as the teacher afterwards (:meth:`GeometryModel.teacher`).

Outputs follow VGGT's parameterisation: depth through ``exp`` (positive), world points
through ``sign(x) * (exp(|x|) - 1)`` (any sign, compressed large values), and a
confidence ``1 + exp(x)`` per pixel for each, trained with the aleatoric loss
``c * |pred - gt| - alpha * log(c)`` so the model can down-weight pixels it cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import TeacherInput
from rocket_vla.teachers.vggt import Aggregator, VGGTConfig, VGGTTeacher, init_vggt_weights


@dataclass
class GeometryConfig:
    """Aggregator sizes plus head sizes; ``head_layers`` use the project index convention."""

    aggregator: VGGTConfig = field(default_factory=VGGTConfig.tiny)
    head_layers: tuple[int, ...] = (1, 2, 3, 4)
    head_dim: int = 64
    conf_alpha: float = 0.2


class DenseHead(nn.Module):
    """Fuse patch tokens of several layers into a per-pixel map of ``out_channels``.

    Each layer's tokens are projected to ``dim`` channels on the patch grid and summed;
    two conv stages refine the sum; the result is upsampled to the image size.
    """

    def __init__(self, in_dim: int, num_layers: int, dim: int, out_channels: int) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Linear(in_dim, dim) for _ in range(num_layers))
        self.refine = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1), nn.GELU(),
        )
        self.out = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(dim // 2, out_channels, 1),
        )

    def forward(self, grids: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """``grids``: per layer [N, h, w, in_dim] -> [N, out_channels, H, W]."""
        fused = sum(proj(g) for proj, g in zip(self.projects, grids, strict=True))
        x = self.refine(fused.permute(0, 3, 1, 2))  # type: ignore[union-attr]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.out(x)


def expp1(x: torch.Tensor) -> torch.Tensor:
    return 1.0 + torch.exp(x)


def inverse_log(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class GeometryModel(nn.Module):
    """Aggregator + depth head + world-point head (state keys: ``aggregator.*``, ``*_head.*``)."""

    def __init__(self, cfg: GeometryConfig | None = None, seed: int | None = 0) -> None:
        super().__init__()
        self.cfg = cfg or GeometryConfig()
        agg_cfg = self.cfg.aggregator
        depth = agg_cfg.depth
        layers = [k if k >= 0 else depth + 1 + k for k in self.cfg.head_layers]
        if not layers or min(layers) < 0 or max(layers) > depth:
            raise RocketError(
                f"head layers {self.cfg.head_layers} are outside 0..{depth}; pick aggregator "
                "layers that exist."
            )
        self.layers = layers
        self.aggregator = Aggregator(agg_cfg)
        width = 2 * agg_cfg.embed_dim
        self.depth_head = DenseHead(width, len(layers), self.cfg.head_dim, 2)
        self.point_head = DenseHead(width, len(layers), self.cfg.head_dim, 4)
        init_vggt_weights(self, seed)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images`` [B, S, 3, H, W] in [0, 1] -> depth [B, S, H, W], depth_conf,
        world_points [B, S, H, W, 3], world_points_conf."""
        b, s, _, height, width = images.shape
        p = self.cfg.aggregator.patch_size
        if height % p or width % p:
            raise RocketError(f"image sides must be multiples of {p}, got {height}x{width}.")
        tokens = self.aggregator(images, self.layers)
        start = self.aggregator.patch_start
        rows, cols = height // p, width // p
        grids = [tokens[k][:, :, start:].reshape(b * s, rows, cols, -1) for k in self.layers]
        d = self.depth_head(grids, (height, width)).reshape(b, s, 2, height, width)
        w = self.point_head(grids, (height, width)).reshape(b, s, 4, height, width)
        return {
            "depth": torch.exp(d[:, :, 0]),
            "depth_conf": expp1(d[:, :, 1]),
            "world_points": inverse_log(w[:, :, :3]).permute(0, 1, 3, 4, 2),
            "world_points_conf": expp1(w[:, :, 3]),
        }

    def teacher(self, input_cfg: TeacherInput | None = None) -> VGGTTeacher:
        """A frozen `VGGTTeacher` holding a copy of this model's aggregator weights."""
        teacher = VGGTTeacher(self.cfg.aggregator, input_cfg, seed=None)
        teacher.model.aggregator.load_state_dict(self.aggregator.state_dict())
        teacher.weights_changed()
        return teacher


def confidence_loss(
    pred: torch.Tensor, conf: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """Mean over valid pixels of ``c * |pred - target| - alpha * log c``.

    ``pred``/``target`` [..., H, W] or [..., H, W, 3]; ``conf``/``valid`` [..., H, W].
    No valid pixel gives zero (not NaN), so frames without ground truth are harmless.
    """
    err = (pred - target).abs()
    if err.ndim == conf.ndim + 1:
        err = err.sum(-1)
    per_pixel = conf * err - alpha * torch.log(conf)
    mask = valid.to(per_pixel.dtype)
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1.0)


def geometry_loss(
    out: dict[str, torch.Tensor], depth: torch.Tensor, points: torch.Tensor,
    valid: torch.Tensor, alpha: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Depth and world-point losses for ground truth ``depth`` [B, S, H, W], ``points``
    [B, S, H, W, 3] and a ``valid`` mask [B, S, H, W]; ``total`` is their sum."""
    depth_loss = confidence_loss(out["depth"], out["depth_conf"], depth, valid, alpha)
    point_loss = confidence_loss(
        out["world_points"], out["world_points_conf"], points, valid, alpha
    )
    return {"depth": depth_loss, "points": point_loss, "total": depth_loss + point_loss}

"""Running the geometry model for training and evaluation, and rounding it as it ships."""

from __future__ import annotations

import torch

from rocket_vla.teachers.vggt_heads import GeometryModel


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


def round_aggregator_fp16(model: GeometryModel) -> None:
    """Round the aggregator to the precision it ships in, so reported errors are the shipped ones."""
    with torch.no_grad():
        for p in model.aggregator.parameters():
            p.copy_(p.half().float())

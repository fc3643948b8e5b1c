"""Put teacher patch features on the student's token grid.

The teacher sees full frames at its own patch grid (37x37 for VGGT at 518 px); the
student has its own per-image grid (16x16 for OpenVLA). Per view we optionally add a
fixed 2D sin-cos position embedding (x0.1, as the paper does), resample bilinearly with
``align_corners=True`` semantics, flatten row-major, and concatenate the views in the
student's image order. Token ``p`` of the result pairs with student visual token ``p``
exactly (the official code is off by one here).

A student that saw a random crop is matched with the same region of the teacher's
full-frame grid through ``crop_boxes``: ``(x0, y0, x1, y1)`` as fractions of the full
frame. The full box ``(0, 0, 1, 1)`` reproduces ``F.interpolate(..., align_corners=True)``
exactly; a sub-box samples the same corner-to-corner lattice inside the box. This is what
lets a feature cache store full frames once and serve any augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError


def sincos_pos_embed_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding ``[dim, height, width]``.

    Half of the channels encode the row, half the column; each half is split into sin
    and cos over geometrically spaced frequencies (base 10000), as in ViT/MAE.
    """
    if dim % 4:
        raise RocketError(f"the sin-cos position embedding needs a width divisible by 4, got {dim}.")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows = torch.arange(height, dtype=torch.float64)[:, None] * omega  # [h, q]
    cols = torch.arange(width, dtype=torch.float64)[:, None] * omega  # [w, q]
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)  # [h, 2q]
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=1)  # [w, 2q]
    emb = torch.cat(
        [
            row_emb[:, None, :].expand(height, width, 2 * quarter),
            col_emb[None, :, :].expand(height, width, 2 * quarter),
        ],
        dim=-1,
    )
    return emb.permute(2, 0, 1).float().contiguous()


def _crop_grid(
    boxes: torch.Tensor, out_h: int, out_w: int, dtype: torch.dtype
) -> torch.Tensor:
    """Sampling grid for ``grid_sample(align_corners=True)`` from boxes ``[N, 4]``."""
    steps_y = torch.linspace(0.0, 1.0, out_h, device=boxes.device, dtype=dtype) if out_h > 1 else (
        torch.full((1,), 0.5, device=boxes.device, dtype=dtype)
    )
    steps_x = torch.linspace(0.0, 1.0, out_w, device=boxes.device, dtype=dtype) if out_w > 1 else (
        torch.full((1,), 0.5, device=boxes.device, dtype=dtype)
    )
    x0, y0, x1, y1 = (boxes[:, i, None].to(dtype) for i in range(4))
    xs = x0 + (x1 - x0) * steps_x[None]  # [N, out_w] in [0, 1]
    ys = y0 + (y1 - y0) * steps_y[None]  # [N, out_h]
    grid_x = xs[:, None, :].expand(-1, out_h, -1) * 2 - 1
    grid_y = ys[:, :, None].expand(-1, -1, out_w) * 2 - 1
    return torch.stack([grid_x, grid_y], dim=-1)  # [N, out_h, out_w, 2]


def resample_teacher(
    features: torch.Tensor,
    grid: tuple[int, int],
    *,
    crop_boxes: torch.Tensor | None = None,
    pos_embed_scale: float = 0.0,
) -> torch.Tensor:
    """Resample teacher patch features ``[B, S, h, w, C]`` to ``[B, S * gh * gw, C]``.

    Args:
        features: per-view teacher patch grid (channels last, as ``Teacher.features``).
        grid: the student's per-image token grid ``(gh, gw)``.
        crop_boxes: optional ``[B, S, 4]`` or ``[B, 4]`` boxes ``(x0, y0, x1, y1)`` in
            ``[0, 1]`` of the full frame that each student image was cropped to.
        pos_embed_scale: weight of the 2D sin-cos position embedding added before
            resampling (the paper uses 0.1; 0 disables it).
    """
    if features.dim() != 5:
        raise RocketError(
            f"teacher features must be [B, S, h, w, C], got shape {tuple(features.shape)}; "
            "add the view dimension S (1 for a single camera)."
        )
    b, s, h, w, c = features.shape
    gh, gw = grid
    maps = features.reshape(b * s, h, w, c).permute(0, 3, 1, 2)
    if pos_embed_scale:
        pos = sincos_pos_embed_2d(c, h, w).to(device=maps.device, dtype=maps.dtype)
        maps = maps + pos_embed_scale * pos
    if crop_boxes is None:
        if (h, w) == (gh, gw):
            out = maps
        else:
            out = F.interpolate(maps, size=(gh, gw), mode="bilinear", align_corners=True)
    else:
        boxes = crop_boxes
        if boxes.dim() == 2 and boxes.shape == (b, 4):
            boxes = boxes[:, None, :].expand(b, s, 4)
        if boxes.shape != (b, s, 4):
            raise RocketError(
                f"crop boxes must be [B, S, 4] or [B, 4] for features {tuple(features.shape)}, "
                f"got {tuple(crop_boxes.shape)}; give one (x0, y0, x1, y1) box per image."
            )
        sample_dtype = maps.dtype if maps.dtype in (torch.float32, torch.float64) else torch.float32
        grid_xy = _crop_grid(boxes.reshape(b * s, 4).to(maps.device), gh, gw, sample_dtype)
        out = F.grid_sample(
            maps.to(sample_dtype), grid_xy, mode="bilinear", padding_mode="border",
            align_corners=True,
        ).to(maps.dtype)
    return out.permute(0, 2, 3, 1).reshape(b, s * gh * gw, c)


def student_grid(num_tokens_per_image: int) -> tuple[int, int]:
    """Square per-image grid for a token count (256 -> (16, 16))."""
    side = math.isqrt(num_tokens_per_image)
    if side * side != num_tokens_per_image:
        raise RocketError(
            f"{num_tokens_per_image} visual tokens per image is not a square grid; "
            "pass the student grid (rows, cols) explicitly."
        )
    return side, side

"""Image augmentation whose geometry is data: the crop box travels with the sample.

OpenVLA-OFT trains with a random crop of 90% of the image area plus colour jitter. For
ROCKET the teacher must describe the same region the student saw, and a feature cache
stores full frames only -- so the crop is reported as a box ``(x0, y0, x1, y1)`` in
fractions of the full frame, and the aligner resamples the teacher's full-frame grid
inside that box (:func:`rocket_vla.align.resample_teacher`).

Everything runs batched on tensors with an explicit ``torch.Generator``: the training
loop seeds it from (seed, step), so a resumed run draws exactly the same augmentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError

FULL_BOX = (0.0, 0.0, 1.0, 1.0)


@dataclass
class AugmentConfig:
    """``crop_area``: fraction of the frame kept (square crop, 0.9 as in OpenVLA-OFT);
    jitter strengths are the +- range of the multiplicative factors."""

    enabled: bool = True
    crop_area: float = 0.9
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def validate(self) -> None:
        """Refuse values that make no sense as a crop or a jitter.

        A crop keeps a fraction of the frame, so ``crop_area`` lies in (0, 1]: above 1 the
        box reaches outside the image, and 0 or below has no side. :func:`color_jitter`
        multiplies by ``1 +- strength``, so a strength of 1 or more lets a factor reach 0
        (a black or grey frame) or flip sign, and large ones saturate nearly every pixel.
        """
        if not (math.isfinite(self.crop_area) and 0.0 < self.crop_area <= 1.0):
            raise RocketError(
                f"augment.crop_area must be a fraction of the frame in (0, 1] (0.9 crops like "
                f"OpenVLA-OFT, 1 keeps the full frame), got {self.crop_area}."
            )
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 1.0):
                raise RocketError(
                    f"augment.{name} must be a jitter strength in [0, 1) (the factor is "
                    f"1 +- strength; 0 turns it off), got {value}."
                )


def random_boxes(n: int, area: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n, 4]`` square boxes covering ``area`` of the frame at uniform random offsets."""
    side = math.sqrt(area)
    origin = torch.rand(n, 2, generator=generator) * (1.0 - side)
    return torch.cat([origin, origin + side], dim=1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``images`` ``[N, 3, H, W]`` to ``boxes`` ``[N, 4]`` and resize to ``size``.

    One bilinear ``grid_sample`` does both, treating the box as a continuous region of the
    frame (pixel areas, ``align_corners=False``), so the box is exact even when it does not
    fall on pixel edges.
    """
    n = images.shape[0]
    boxes = boxes.to(images.dtype)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = boxes[:, 2] - boxes[:, 0]
    theta[:, 1, 1] = boxes[:, 3] - boxes[:, 1]
    theta[:, 0, 2] = boxes[:, 0] + boxes[:, 2] - 1.0
    theta[:, 1, 2] = boxes[:, 1] + boxes[:, 3] - 1.0
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Plain resize of ``[N, 3, H, W]`` (the evaluation path: full frame, no jitter)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def color_jitter(images: torch.Tensor, cfg: AugmentConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast and saturation per image; ``images`` in [0, 1]."""
    n = images.shape[0]

    def factor(strength: float) -> torch.Tensor:
        f = 1.0 + (torch.rand(n, generator=generator) * 2.0 - 1.0) * strength
        return f.to(images.dtype).view(n, 1, 1, 1)

    x = images * factor(cfg.brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(cfg.contrast) + mean
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray) * factor(cfg.saturation) + gray
    return x.clamp(0.0, 1.0)


def augment_views(
    images: torch.Tensor, size: int, cfg: AugmentConfig, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``[B, S, 3, H, W]`` views independently; returns images and boxes ``[B, S, 4]``.

    With ``cfg.enabled`` False every box is the full frame and images are only resized.
    """
    b, s = images.shape[:2]
    flat = images.reshape(b * s, *images.shape[2:])
    if not cfg.enabled:
        boxes = torch.tensor(FULL_BOX).expand(b * s, 4).clone()
        return resize(flat, size).reshape(b, s, 3, size, size), boxes.view(b, s, 4)
    boxes = random_boxes(b * s, cfg.crop_area, generator)
    # Antialiased downscale first so the bilinear crop does not alias on large frames.
    flat = resize(flat, max(size, round(size / math.sqrt(cfg.crop_area))))
    out = color_jitter(crop_resize(flat, boxes, size), cfg, generator)
    return out.reshape(b, s, 3, size, size), boxes.view(b, s, 4)

"""Put teacher patch features on the student's token grid.

The teacher sees full frames at its own patch grid (37x37 for VGGT at 518 px); the
student has its own per-image grid (16x16 for OpenVLA). Per view we optionally add a
fixed 2D position embedding (x0.1, as the paper does; ``"sincos"``, MAE's on integer patch
positions, or ``"vggt-uv"``, VGGT's own on diagonal-normalised coordinates, which the
official code adds -- see :func:`pos_embed_2d`), resample bilinearly with
``align_corners=True`` semantics, flatten row-major, and concatenate the views in the
student's image order. Token ``p`` of the result pairs with student visual token ``p``
exactly (the official code is off by one here).

A student that saw a random crop is matched with the same region of the teacher's
full-frame grid through ``crop_boxes``: ``(x0, y0, x1, y1)`` as fractions of the full
frame. The full box ``(0, 0, 1, 1)`` reproduces ``F.interpolate(..., align_corners=True)``
exactly; a sub-box samples the same corner-to-corner lattice inside the box. This is what
lets a feature cache store full frames once and serve any augmentation.

Two implementations live here. :func:`resample_teacher` is the readable per-tensor one
(``F.interpolate`` / ``F.grid_sample``), the reference. :func:`resample_layers` is the
training path: all layers and views in one call at the caller's compute dtype. Full
frames go through one ``F.interpolate`` on a channels-last view (no copy). Crop boxes use
the fact that bilinear sampling on a tensor-product grid is separable: two batched matmuls
``R_y X R_x^T`` with interpolation matrices built from the boxes on the device (no host
round trip, no per-pixel gather). The position embedding -- linear, so it commutes with
resampling -- is added at the student grid from a cached table (already resampled for
full frames) instead of to every teacher layer at the teacher grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError

#: The position embeddings that can be added to teacher targets (``AlignConfig.pos_embed``).
POS_EMBEDS = ("sincos", "vggt-uv")


def _axis_embed(positions: torch.Tensor, quarter: int, base: float) -> torch.Tensor:
    """1D sin-cos of ``positions [n]`` at ``quarter`` frequencies ``base ** (-i / quarter)``:
    ``[n, 2 * quarter]``, all sines then all cosines. Both 2D embeddings below are two of these."""
    omega = 1.0 / (base ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    angles = positions.to(torch.float64)[:, None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _grid_embed(row_emb: torch.Tensor, col_emb: torch.Tensor, *, row_first: bool) -> torch.Tensor:
    """``[4q, h, w]`` float32 from a per-row table ``[h, 2q]`` and a per-column table ``[w, 2q]``:
    the row's channels first (``row_first``) or the column's."""
    height, width, half = row_emb.shape[0], col_emb.shape[0], row_emb.shape[1]
    row_part = row_emb[:, None, :].expand(height, width, half)
    col_part = col_emb[None, :, :].expand(height, width, half)
    parts = [row_part, col_part] if row_first else [col_part, row_part]
    return torch.cat(parts, dim=-1).permute(2, 0, 1).float().contiguous()


def _check_width(dim: int, kind: str) -> int:
    if dim % 4:
        raise RocketError(f"the {kind} position embedding needs a width divisible by 4, got {dim}.")
    return dim // 4


def sincos_pos_embed_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding ``[dim, height, width]`` (``"sincos"``).

    MAE-style: integer patch positions, base 10000, the row in the first half of the
    channels and the column in the second; each half is sines then cosines.
    """
    quarter = _check_width(dim, "sin-cos")
    rows = _axis_embed(torch.arange(height), quarter, 10000.0)
    cols = _axis_embed(torch.arange(width), quarter, 10000.0)
    return _grid_embed(rows, cols, row_first=True)


def uv_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch-centre coordinates ``(u [width], v [height])`` normalised by the image diagonal.

    The frame is centred on 0 and scaled so that its corners lie at distance 1: the
    half-extents are ``a / sqrt(1 + a^2)`` and ``1 / sqrt(1 + a^2)`` for the aspect ratio
    ``a = width / height`` (the teacher's grid; its sides are the image's divided by the patch
    size, so the ratio is the image's). Patch ``j`` of ``n`` sits at ``span * (2j + 1 - n) / n``.
    These are VGGT's own coordinates (its ``create_uv_grid``).
    """
    aspect = width / height
    diagonal = math.hypot(aspect, 1.0)
    span_x, span_y = aspect / diagonal, 1.0 / diagonal
    u = span_x * (2 * torch.arange(width, dtype=torch.float64) + 1 - width) / width
    v = span_y * (2 * torch.arange(height, dtype=torch.float64) + 1 - height) / height
    return u, v


def uv_pos_embed_2d(dim: int, height: int, width: int, omega_0: float = 100.0) -> torch.Tensor:
    """VGGT's own position embedding ``[dim, height, width]`` (``"vggt-uv"``).

    The official ROCKET / Spatial Forcing code adds this one to the teacher's patch grid:
    :func:`uv_grid` coordinates, base frequency ``omega_0 = 100``, the x (column) coordinate
    in the first half of the channels and y (row) in the second; each half is sines then
    cosines. Unlike ``"sincos"`` it does not depend on the grid's resolution, only on where a
    patch sits in the frame.
    """
    quarter = _check_width(dim, "VGGT UV")
    u, v = uv_grid(height, width)
    rows, cols = _axis_embed(v, quarter, omega_0), _axis_embed(u, quarter, omega_0)
    return _grid_embed(rows, cols, row_first=False)  # x (the column) first


def pos_embed_2d(kind: str, dim: int, height: int, width: int) -> torch.Tensor:
    """The position embedding named ``kind`` (one of :data:`POS_EMBEDS`), ``[dim, h, w]``."""
    if kind == "sincos":
        return sincos_pos_embed_2d(dim, height, width)
    if kind == "vggt-uv":
        return uv_pos_embed_2d(dim, height, width)
    raise RocketError(f"unknown position embedding {kind!r}; use one of {', '.join(POS_EMBEDS)}.")


def _constant(fn):
    """Memoise a constant-table builder per (arguments, device, dtype).

    The tables are built outside autograd and outside inference mode, so a table first made
    under ``torch.inference_mode`` can still be used by a training step. Callers must not
    modify the returned tensors in place (they are shared).
    """
    cached = functools.lru_cache(maxsize=64)(fn)

    @functools.wraps(fn)
    def wrapper(*args):
        with torch.inference_mode(False), torch.no_grad():
            return cached(*args)

    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return wrapper


@_constant
def pos_embed_table(
    dim: int, height: int, width: int, device: torch.device, dtype: torch.dtype, kind: str = "sincos"
) -> torch.Tensor:
    """:func:`pos_embed_2d` channels last ``[height, width, dim]``, cached on ``device``.

    Recomputing it each step costs a float64 build on the host and a host-to-device copy
    (which waits for the device); cached, it is one lookup (per kind, shape, device, dtype).
    """
    return pos_embed_2d(kind, dim, height, width).permute(1, 2, 0).to(device, dtype).contiguous()


@_constant
def resampled_pos_embed(
    dim: int, height: int, width: int, grid: tuple[int, int], device: torch.device, dtype: torch.dtype,
    kind: str = "sincos",
) -> torch.Tensor:
    """The position embedding ``kind`` of a ``height x width`` teacher grid resampled to ``grid``
    (full frame, ``align_corners=True``), ``[gh, gw, dim]``, computed in float64 once."""
    table = pos_embed_2d(kind, dim, height, width).double()[None]
    if (height, width) != tuple(grid):
        table = F.interpolate(table, size=tuple(grid), mode="bilinear", align_corners=True)
    return table[0].permute(1, 2, 0).to(device, dtype).contiguous()


def axis_weights(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear weights ``[..., out, size]`` for sample positions ``coords [..., out]``
    given in source-pixel units (0 = first patch centre, size - 1 = last).

    Positions outside the grid are clamped to its border (``padding_mode="border"``). Built
    from comparisons with ``arange`` rather than ``one_hot``, whose range check would read
    the indices back to the host.
    """
    coords = coords.clamp(0, size - 1)
    low = coords.floor()
    frac = (coords - low)[..., None]
    index = torch.arange(size, device=coords.device, dtype=coords.dtype)
    return (1 - frac) * (index == low[..., None]) + frac * (index == low[..., None] + 1)


def crop_weights(
    boxes: torch.Tensor, height: int, width: int, grid: tuple[int, int], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation matrices ``R_y [N, gh, h]``, ``R_x [N, gw, w]`` for boxes ``[N, 4]``.

    The lattice of :func:`_box_lattice`, as :func:`_crop_grid` gives it to
    ``grid_sample(align_corners=True, padding_mode="border")``, computed on the boxes'
    device without leaving it.
    """
    work = boxes.dtype if boxes.dtype == torch.float64 else torch.float32
    ys, xs = _box_lattice(boxes, grid, work)
    return axis_weights(ys * (height - 1), height).to(dtype), axis_weights(xs * (width - 1), width).to(dtype)


def _box_lattice(
    boxes: torch.Tensor, grid: tuple[int, int], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample positions ``(ys [N, gh], xs [N, gw])`` as fractions of the full frame for boxes
    ``[N, 4]``: ``gh x gw`` points from corner to corner of each box (``align_corners=True``),
    the box's centre on an axis of one point. Both resampling paths sample this lattice."""
    steps = [
        torch.linspace(0.0, 1.0, out, device=boxes.device, dtype=dtype) if out > 1
        else torch.full((1,), 0.5, device=boxes.device, dtype=dtype)
        for out in grid
    ]
    b = boxes.to(dtype)
    ys = b[:, 1, None] + (b[:, 3, None] - b[:, 1, None]) * steps[0]
    xs = b[:, 0, None] + (b[:, 2, None] - b[:, 0, None]) * steps[1]
    return ys, xs


def separable_resample(maps: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor) -> torch.Tensor:
    """``R_y X R_x^T`` for channels-last maps ``[..., N, h, w, C]`` -> ``[..., N, gh, gw, C]``.

    ``ry``/``rx`` are ``[N, gh, h]``/``[N, gw, w]`` (or ``[1, ...]`` for one grid for all);
    leading dimensions of ``maps`` (e.g. layers) broadcast. Two batched matmuls, no copy of
    the input: the rows are contracted on the ``[h, w * C]`` view, then the columns.
    """
    *lead, n, h, w, c = maps.shape
    rows = torch.matmul(ry, maps.reshape(*lead, n, h, w * c))  # [..., N, gh, w*C]
    rows = rows.reshape(*rows.shape[:-1], w, c)  # [..., N, gh, w, C]
    return torch.matmul(rx.unsqueeze(-3), rows)  # [..., N, gh, gw, C]


def _crop_grid(
    boxes: torch.Tensor, out_h: int, out_w: int, dtype: torch.dtype
) -> torch.Tensor:
    """Sampling grid for ``grid_sample(align_corners=True)`` from boxes ``[N, 4]``."""
    ys, xs = _box_lattice(boxes, (out_h, out_w), dtype)
    grid_x = xs[:, None, :].expand(-1, out_h, -1) * 2 - 1
    grid_y = ys[:, :, None].expand(-1, -1, out_w) * 2 - 1
    return torch.stack([grid_x, grid_y], dim=-1)  # [N, out_h, out_w, 2]


def resample_teacher(
    features: torch.Tensor,
    grid: tuple[int, int],
    *,
    crop_boxes: torch.Tensor | None = None,
    pos_embed_scale: float = 0.0,
    pos_embed: str = "sincos",
) -> torch.Tensor:
    """Resample teacher patch features ``[B, S, h, w, C]`` to ``[B, S * gh * gw, C]``.

    Args:
        features: per-view teacher patch grid (channels last, as ``Teacher.features``).
        grid: the student's per-image token grid ``(gh, gw)``.
        crop_boxes: optional ``[B, S, 4]`` or ``[B, 4]`` boxes ``(x0, y0, x1, y1)`` in
            ``[0, 1]`` of the full frame that each student image was cropped to.
        pos_embed_scale: weight of the 2D position embedding added before resampling
            (the paper uses 0.1; 0 disables it).
        pos_embed: which embedding, one of :data:`POS_EMBEDS` (see :func:`pos_embed_2d`).
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
        pos = pos_embed_table(c, h, w, maps.device, maps.dtype, pos_embed).permute(2, 0, 1)
        maps = maps + pos_embed_scale * pos
    if crop_boxes is None:
        if (h, w) == (gh, gw):
            out = maps
        else:
            out = F.interpolate(maps, size=(gh, gw), mode="bilinear", align_corners=True)
    else:
        boxes = _view_boxes(crop_boxes, b, s, tuple(features.shape))
        sample_dtype = maps.dtype if maps.dtype in (torch.float32, torch.float64) else torch.float32
        grid_xy = _crop_grid(boxes.to(maps.device), gh, gw, sample_dtype)
        out = F.grid_sample(
            maps.to(sample_dtype), grid_xy, mode="bilinear", padding_mode="border",
            align_corners=True,
        ).to(maps.dtype)
    return out.permute(0, 2, 3, 1).reshape(b, s * gh * gw, c)


def _view_boxes(crop_boxes: torch.Tensor, b: int, s: int, shape: tuple[int, ...]) -> torch.Tensor:
    """One box per image, ``[B * S, 4]``, from ``[B, S, 4]`` or ``[B, 4]`` (shared by the
    views); ``shape`` is the features' shape, for the error message."""
    boxes = crop_boxes
    if boxes.dim() == 2 and boxes.shape == (b, 4):
        boxes = boxes[:, None, :].expand(b, s, 4)
    if boxes.shape != (b, s, 4):
        raise RocketError(
            f"crop boxes must be [B, S, 4] or [B, 4] for features {shape}, "
            f"got {tuple(crop_boxes.shape)}; give one (x0, y0, x1, y1) box per image."
        )
    return boxes.reshape(b * s, 4)


def _interpolate_channels_last(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Full-frame resampling of ``[L, N, h, w, C]`` in one ``F.interpolate`` call.

    The permuted view ``[L*N, C, h, w]`` *is* channels-last memory, which the bilinear
    kernels read directly (no copy), and their output permuted back is again contiguous
    ``[L, N, gh, gw, C]``. On the CPU this beat the two dense matmuls of
    :func:`separable_resample` (docs/benchmarks.md, "Resampling paths")."""
    layers, n, h, w, c = maps.shape
    nchw = maps.reshape(layers * n, h, w, c).permute(0, 3, 1, 2)
    out = F.interpolate(nchw, size=grid, mode="bilinear", align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(layers, n, *grid, c)


def resample_layers(
    features: torch.Tensor | Sequence[torch.Tensor],
    grid: tuple[int, int],
    *,
    crop_boxes: torch.Tensor | None = None,
    pos_embed_scale: float = 0.0,
    pos_embed: str = "sincos",
) -> list[torch.Tensor]:
    """Many layers on one grid: ``[B, S * gh * gw, C]`` per layer, at the input dtype.

    ``features`` is either stacked ``[L, B, S, h, w, C]`` -- then every layer and view goes
    through one pair of batched matmuls -- or a list of ``[B, S, h, w, C]`` tensors of one
    shape and dtype, resampled one by one with the same (cached or once-built) matrices,
    which saves stacking them when they are separate tensors already at the right dtype.
    Equal, up to rounding, to :func:`resample_teacher` per layer. Each result is contiguous.
    """
    groups = [features] if isinstance(features, torch.Tensor) else [f.unsqueeze(0) for f in features]
    if not groups or any(g.dim() != 6 or g.shape[1:] != groups[0].shape[1:] for g in groups):
        shapes = [tuple(g.shape) for g in groups]
        raise RocketError(
            f"teacher features must be stacked [L, B, S, h, w, C] or a list of equal [B, S, h, w, C] "
            f"tensors, got {shapes}; stack the per-layer tensors on a new first dimension."
        )
    _, b, s, h, w, c = groups[0].shape
    gh, gw = grid
    dtype, device = groups[0].dtype, groups[0].device
    pos = None
    if crop_boxes is None:
        identity = (h, w) == (gh, gw)
        if pos_embed_scale:
            pos = resampled_pos_embed(c, h, w, (gh, gw), device, dtype, pos_embed)  # [gh, gw, C]
    else:
        identity = False
        boxes = _view_boxes(crop_boxes, b, s, tuple(groups[0].shape[1:])).to(device)
        ry, rx = crop_weights(boxes, h, w, (gh, gw), dtype)
        if pos_embed_scale:  # resampled through this step's boxes: [N, gh, gw, C]
            table = pos_embed_table(c, h, w, device, dtype, pos_embed)
            pos = separable_resample(table[None], ry, rx)
    outs: list[torch.Tensor] = []
    for group in groups:
        maps = group.reshape(group.shape[0], b * s, h, w, c)
        if identity:  # same grid: nothing to resample
            out = maps if pos is None else maps + pos_embed_scale * pos
        else:
            if crop_boxes is None:
                out = _interpolate_channels_last(maps, (gh, gw))
            else:
                out = separable_resample(maps, ry, rx)
            if pos is not None:
                out.add_(pos, alpha=pos_embed_scale)
        outs.extend(out.reshape(-1, b, s * gh * gw, c).unbind(0))
    return outs


def student_grid(num_tokens_per_image: int) -> tuple[int, int]:
    """Square per-image grid for a token count (256 -> (16, 16))."""
    side = math.isqrt(num_tokens_per_image)
    if side * side != num_tokens_per_image:
        raise RocketError(
            f"{num_tokens_per_image} visual tokens per image is not a square grid; "
            "pass the student grid (rows, cols) explicitly."
        )
    return side, side

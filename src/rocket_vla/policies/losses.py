"""Action losses several students share, reduced over the steps that hold data.

Why here: a chunk that runs past an episode's end is padded, and every student must ignore
the padding the same way, so the reductions live once, beside the students, not inside one of
them.
"""

from __future__ import annotations

import torch


def action_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 over valid chunk steps only (``mask`` ``[B, chunk]``, False past an episode's end)."""
    weights = mask.to(pred.dtype).unsqueeze(-1)
    total = (pred - target).abs().mul(weights).sum()
    return total / (weights.sum() * pred.shape[-1]).clamp_min(1.0)


def masked_mean(per_element: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of a per-element loss ``[B, chunk, dims]`` over the valid chunk steps (``mask``
    ``[B, chunk]``); the caller has already cut away padded action dims."""
    valid = mask[..., None].expand_as(per_element).float()
    return (per_element * valid).sum() / valid.sum().clamp_min(1.0)

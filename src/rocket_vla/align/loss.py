"""Cosine alignment loss with token masks, vectorised over the batch.

Reduction, stated once because masks make it matter: per pair, each sample's loss is the
mean of ``1 - cos`` over its valid tokens; the pair's loss is the mean over samples that
have at least one valid token; the alignment loss is the mean over pairs that have at
least one valid token. A sample or pair with no valid token contributes exactly zero
(never NaN), and an all-masked batch gives a loss of 0 with a zero gradient.
"""

from __future__ import annotations

import torch


def cosine_distance(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - cos`` over the last dim, in at least float32 so bf16 autocast stays stable.

    Written as ``(p . t_hat) / |p|``: the target is frozen, so it is normalised once and
    autograd only tracks the prediction's side. Vectors shorter than ``eps`` count as
    length ``eps``, so a zero vector (e.g. a blank padded token) gives 1, never NaN.
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred, target = pred.to(dtype), target.to(dtype)
    target_unit = target / torch.linalg.vector_norm(target, dim=-1, keepdim=True).clamp_min(eps)
    dot = torch.linalg.vecdot(pred, target_unit)
    return 1.0 - dot / torch.linalg.vector_norm(pred, dim=-1).clamp_min(eps)


def masked_sample_mean(
    values: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean of ``values [B, T]`` over valid tokens; returns (means, has_any)."""
    if mask is None:
        return values.mean(dim=1), torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    weights = mask.to(values.dtype)
    count = weights.sum(dim=1)
    # where() rather than multiplying by the mask: a masked token with a non-finite value
    # (e.g. from a padded image) must not poison the forward sum (0 * inf is NaN).
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=1)
    return total / count.clamp_min(1.0), count > 0


def masked_mean(values: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``values`` over ``dim`` counting only ``valid`` entries (0 if none)."""
    weights = valid.to(values.dtype)
    total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=dim)
    return total / weights.sum(dim=dim).clamp_min(1.0)

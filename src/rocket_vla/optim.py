"""The optimiser and learning-rate schedule both training loops use.

Two loops train models in rocket-vla: the student loop (:mod:`rocket_vla.train.loop`) and
the geometry teacher's (:mod:`rocket_vla.teachers.geometry.loop`). They share one AdamW
builder and one warm-up/schedule multiplier so that a change to either reaches both.

Why it sits at the top of the package, next to ``errors.py``, rather than in ``train/``:
``teachers/`` must not import ``train/`` (a teacher is a dependency of training, never the
other way round), and both need this. It depends on torch alone, so every package may
import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def lr_lambda(*, warmup: int, steps: int, schedule: str = "cosine",
              decay_after: int = 0, floor: float = 0.0) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step ``s`` (for ``LambdaLR``).

    Linear warm-up over ``warmup`` steps (``(s + 1) / warmup``), then ``schedule``:
    ``"step"`` (the paper: x0.1 from step ``decay_after`` on), ``"cosine"`` (half a cosine
    from 1 at the end of warm-up down to ``floor`` at ``steps``; openpi's fine-tuning recipes
    end at a tenth of the peak) or ``"constant"``.
    """

    def fn(s: int) -> float:
        if warmup and s < warmup:
            return (s + 1) / warmup
        if schedule == "step":
            return 0.1 if s >= decay_after else 1.0
        if schedule == "cosine":
            progress = (s - warmup) / max(1, steps - warmup)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return fn


def build_scheduler(optimizer: torch.optim.Optimizer, *, warmup: int, steps: int,
                    schedule: str = "cosine", decay_after: int = 0, floor: float = 0.0
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :func:`lr_lambda`: step it once after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(warmup=warmup, steps=steps, schedule=schedule,
                             decay_after=decay_after, floor=floor))


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.999),
                    no_decay: Sequence[str] = ()) -> torch.optim.AdamW:
    """AdamW with two groups: weight decay on every trainable tensor of 2 or more
    dimensions (matrices, and embeddings such as position tables), none on vectors (norms,
    biases). A parameter whose name contains one of ``no_decay`` also goes undecayed, for
    models whose learned tokens and position embeddings must not shrink towards zero."""
    decay, free = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decayed = p.dim() >= 2 and not any(part in name for part in no_decay)
        (decay if decayed else free).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": free, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)

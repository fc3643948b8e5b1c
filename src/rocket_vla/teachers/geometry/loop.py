"""The geometry teacher's training loop: seeded batches, mixed input sizes, AdamW with warm-up
then cosine (the builder :mod:`rocket_vla.optim` shares with the student loop), clipping."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rocket_vla.errors import RocketError
from rocket_vla.optim import build_optimizer, build_scheduler
from rocket_vla.teachers.geometry.config import GeometryTrainConfig
from rocket_vla.teachers.geometry.data import PairFrames, view_batch
from rocket_vla.teachers.geometry.model import predict
from rocket_vla.teachers.vggt_heads import GeometryModel, geometry_loss


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
    # VGGT's camera/register tokens and position embeddings are learned constants: no decay.
    opt = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          no_decay=("token", "pos_embed"))
    schedule = build_scheduler(opt, warmup=cfg.warmup, steps=cfg.steps, schedule="cosine")

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses: list[tuple[int, float]] = []
    running: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.steps):
        index = torch.randint(len(frames), (min(cfg.batch_size, len(frames)),), generator=gen)
        small = cfg.small_every > 0 and step % cfg.small_every == cfg.small_every - 1
        size = cfg.small_size if small else cfg.input_size
        images, depth, points, valid = view_batch(frames, index, views, size, cfg.input_size)
        lr = schedule.get_last_lr()[0]  # this step's
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
        schedule.step()
        running.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
            mean = float(np.mean(running))
            losses.append((step + 1, mean))
            running.clear()
            if progress:
                progress(f"[{views}-view] step {step + 1}/{cfg.steps} loss {mean:.4f} "
                         f"lr {lr:.2e} {time.perf_counter() - start:.0f}s")
    model.eval()
    return model, TrainLog(cfg.steps, time.perf_counter() - start, losses)

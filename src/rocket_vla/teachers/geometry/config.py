"""The settings of a geometry teacher training run (written next to its weights)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rocket_vla.errors import RocketError
from rocket_vla.teachers.vggt import VGGTConfig
from rocket_vla.teachers.vggt_heads import GeometryConfig


@dataclass
class GeometryTrainConfig:
    """Everything a teacher training run depends on (written next to the weights)."""

    # model: a VGGT aggregator small enough to ship (~1.2 M parameters, ~2.4 MB in fp16)
    embed_dim: int = 96
    """aggregator width"""
    depth: int = 4
    """frame/global block pairs"""
    num_heads: int = 4
    """attention heads"""
    patch_embed_depth: int = 2
    """blocks of the DINOv2-style patch embedding"""
    head_dim: int = 16
    """width of the depth and point heads"""
    input_size: int = 112
    """native teacher input side (multiple of 14): 8x8 patches"""
    small_size: int = 56
    """second input side, trained every small_every steps: 4x4 patches"""
    small_every: int = 2
    """train at small_size every k-th step (0: input_size only)"""
    target_size: int = 28
    """side of the predicted and scored depth and point maps"""
    max_depth: float = 10.0
    """pixels farther than this (metres, or not finite) are not supervised"""
    holdout_fraction: float = 0.2
    """fraction of EPISODES held out for evaluation"""
    steps: int = 400
    """optimizer steps"""
    batch_size: int = 4
    """frame pairs per step"""
    lr: float = 1e-3
    """AdamW learning rate"""
    weight_decay: float = 0.05
    """AdamW weight decay"""
    warmup: int = 50
    """linear warm-up steps (then cosine decay)"""
    grad_clip: float = 1.0
    """gradient-norm clip"""
    conf_alpha: float = 0.2
    """weight of the confidence term of the loss"""
    seed: int = 0
    """seed of weights, split and batches"""
    eval_batch: int = 32
    """pairs per evaluation batch"""
    log_every: int = 50
    """progress line interval in steps"""

    def __post_init__(self) -> None:
        for name in ("input_size", "small_size"):
            side = getattr(self, name)
            if side <= 0 or side % 14:
                raise RocketError(f"{name} {side} must be a positive multiple of 14 (the patch size).")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise RocketError(
                f"holdout fraction {self.holdout_fraction} must be in (0, 1); e.g. 0.2."
            )
        if self.steps < 1 or self.batch_size < 1:
            raise RocketError("steps and batch size must be at least 1.")
        for name in ("embed_dim", "depth", "num_heads", "patch_embed_depth", "head_dim", "target_size",
                     "eval_batch", "log_every"):
            if getattr(self, name) < 1:
                raise RocketError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("small_every", "warmup", "seed"):
            if getattr(self, name) < 0:
                raise RocketError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("lr", "grad_clip", "max_depth"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise RocketError(f"{name} must be a positive finite number, got {getattr(self, name)}.")
        for name in ("weight_decay", "conf_alpha"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise RocketError(f"{name} must be a finite number >= 0, got {getattr(self, name)}.")

    def geometry_config(self) -> GeometryConfig:
        agg = VGGTConfig.tiny(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
            patch_embed_depth=self.patch_embed_depth, patch_embed_heads=self.num_heads,
            img_size=self.input_size,
        )
        return GeometryConfig(aggregator=agg, head_layers=tuple(range(1, self.depth + 1)),
                              head_dim=self.head_dim, conf_alpha=self.conf_alpha)

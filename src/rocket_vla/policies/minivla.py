"""MiniVLA: a small OpenVLA-OFT-style vision-language-action model in one file.

Why it exists: ROCKET needs a student whose residual stream it can tap, and an offline
CPU demo needs one that trains in minutes. MiniVLA keeps the parts of OpenVLA-OFT that
matter for the method and drops the 7B LLM:

* each camera image is cut into patches by its own linear patch embedding (a ViT stem
  per camera, so the wrist and third-person views need not share statistics);
* the instruction is tokenised without any downloaded vocabulary: byte by byte (UTF-8
  bytes + 1; 0 is padding) or word by word (lower-cased words hashed with CRC-32 into a
  fixed table). Words keep a LIBERO instruction (12-20 words, up to ~90 bytes) whole in a
  quarter of the tokens, which matters on a CPU where every token costs a full MLP;
* the 8-dim proprio state is one token;
* ``chunk`` learned action-query tokens read the whole sequence out in parallel, and an
  L1-regression head maps each to a 7-dim action (OFT's parallel decoding);
* a pre-norm transformer with full (bidirectional) attention runs over
  ``[camera-0 patches | camera-1 patches | proprio | text | action queries]``.

The visual tokens come first, so the aligner's span is ``(0, cameras * grid**2)`` and each
image is a row-major ``grid x grid`` patch grid -- exactly what
:func:`rocket_vla.align.resample_teacher` produces from a teacher's features.
The blocks live in ``self.blocks`` (:attr:`MiniVLA.blocks_path`); hidden-state index ``k``
is the stream after block ``k`` (0 = embeddings), as everywhere in rocket-vla.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from rocket_vla.data.text import BYTE_VOCAB, PAD_TOKEN, TOKENIZERS, WORD_VOCAB, tokenize, word_id
from rocket_vla.dictconfig import DictConfig
from rocket_vla.errors import RocketError
from rocket_vla.policies.losses import action_l1
from rocket_vla.policies.student import Student, register_student

__all__ = ["BYTE_VOCAB", "PAD_TOKEN", "TOKENIZERS", "WORD_VOCAB", "MiniVLA", "MiniVLAConfig", "tokenize",
           "word_id"]



@dataclass
class MiniVLAConfig(DictConfig):
    """Sizes of a MiniVLA. Use :meth:`preset` (``tiny`` for tests/CI, ``demo`` for the CPU demo)."""

    CONFIG_WHAT = "MiniVLA"
    CONFIG_FIX = "the checkpoint is from another version of MiniVLA."

    image_size: int = 64
    patch_size: int = 8
    num_cameras: int = 2
    dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    max_text_len: int = 48
    tokenizer: str = "bytes"  # "bytes" or "words" (see :func:`tokenize`)
    proprio_dim: int = 8
    action_dim: int = 7
    chunk: int = 8
    dropout: float = 0.0

    PRESETS = {
        "tiny": dict(image_size=32, patch_size=8, dim=32, depth=4, num_heads=2, max_text_len=16),
        "demo": dict(image_size=64, patch_size=16, dim=128, depth=6, num_heads=4, max_text_len=20,
                     tokenizer="words"),
        "small": dict(image_size=128, patch_size=16, dim=256, depth=8, num_heads=8,
                      max_text_len=24, tokenizer="words"),
    }

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise RocketError(
                f"MiniVLA image_size {self.image_size} is not a multiple of patch_size "
                f"{self.patch_size}; pick sizes that divide."
            )
        if self.tokenizer not in TOKENIZERS:
            raise RocketError(
                f"unknown MiniVLA tokenizer {self.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}."
            )
        if self.dim % self.num_heads:
            raise RocketError(
                f"MiniVLA dim {self.dim} is not divisible by num_heads {self.num_heads}."
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MiniVLAConfig:
        if name not in cls.PRESETS:
            raise RocketError(
                f"unknown MiniVLA size {name!r}; choose one of {', '.join(cls.PRESETS)}."
            )
        return cls(**{**cls.PRESETS[name], **overrides})

    # -- the layout the aligner needs ----------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    @property
    def tokens_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def visual_span(self) -> tuple[int, int]:
        return 0, self.num_cameras * self.tokens_per_image

    @property
    def vocab_size(self) -> int:
        return WORD_VOCAB if self.tokenizer == "words" else BYTE_VOCAB

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Instruction tokens ``[B, max_text_len]`` in this model's tokenizer."""
        return tokenize(texts, self.max_text_len, self.tokenizer)

    @property
    def seq_len(self) -> int:
        return self.visual_span[1] + 1 + self.max_text_len + self.chunk



class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = key_mask[:, None, None, :] if key_mask is not None else None
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


@register_student("minivla")
class MiniVLA(Student):
    """The student. ``forward`` returns normalised action chunks ``[B, chunk, action_dim]``.

    Inputs: ``images`` float ``[B, cameras, 3, H, W]`` in [0, 1] at ``image_size``;
    ``proprio`` ``[B, proprio_dim]`` (normalised); ``text`` tokens ``[B, max_text_len]``
    from :meth:`MiniVLAConfig.tokenize`. Through the :class:`Student` interface,
    :meth:`prepare` does the tokenisation and :meth:`action_loss` is OFT's masked L1.
    """

    config_class = MiniVLAConfig
    blocks_path = "blocks"
    final_path = "norm"

    def __init__(self, config: MiniVLAConfig) -> None:
        super().__init__()
        self.config = c = config
        patch_in = 3 * c.patch_size * c.patch_size
        self.patch_embed = nn.ModuleList(nn.Linear(patch_in, c.dim) for _ in range(c.num_cameras))
        self.image_pos = nn.Parameter(torch.zeros(c.num_cameras, c.tokens_per_image, c.dim))
        self.text_embed = nn.Embedding(c.vocab_size, c.dim, padding_idx=PAD_TOKEN)
        self.text_pos = nn.Parameter(torch.zeros(c.max_text_len, c.dim))
        self.proprio_embed = nn.Linear(c.proprio_dim, c.dim)
        self.action_queries = nn.Parameter(torch.zeros(c.chunk, c.dim))
        self.blocks = nn.ModuleList(
            Block(c.dim, c.num_heads, c.mlp_ratio, c.dropout) for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.action_head = nn.Linear(c.dim, c.action_dim)
        self._init_weights()
        self.checkpointing = False  # see enable_gradient_checkpointing

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for p in (self.image_pos, self.text_pos, self.action_queries):
            nn.init.trunc_normal_(p, std=0.02)

    # -- what ROCKET needs to know -------------------------------------------------------
    @property
    def depth(self) -> int:
        return self.config.depth

    @property
    def width(self) -> int:
        return self.config.dim

    @property
    def num_cameras(self) -> int:
        return self.config.num_cameras

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def chunk(self) -> int:
        return self.config.chunk

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def proprio_dim(self) -> int:
        return self.config.proprio_dim

    @property
    def tokens_per_sample(self) -> int:
        """Length of the sequence the blocks run per sample (the training FLOPs estimate)."""
        return self.config.seq_len

    @property
    def visual_spans(self) -> list[tuple[int, int]]:
        return [self.config.visual_span]

    @property
    def image_grid(self) -> tuple[int, int]:
        return self.config.grid

    # -- the Student interface -------------------------------------------------------------
    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        device = self.device
        inputs = {
            "images": batch["images"].to(device),
            "proprio": batch["proprio"].to(device),
            "text": self.config.tokenize(list(batch["instructions"])).to(device),
        }
        for key in ("actions", "action_mask"):
            if key in batch:
                inputs[key] = batch[key].to(device)
        return inputs

    def visual_index(self, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        return self.visual_spans

    def action_loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        pred = self(inputs["images"], inputs["proprio"], inputs["text"])
        return action_l1(pred.float(), inputs["actions"], inputs["action_mask"])

    @torch.no_grad()
    def predict(self, inputs: dict[str, Any]) -> torch.Tensor:
        return self(inputs["images"], inputs["proprio"], inputs["text"])

    @classmethod
    def build(cls, preset: str | None = None, path: str | None = None, **overrides: Any) -> MiniVLA:
        """``preset`` is one of :attr:`MiniVLAConfig.PRESETS` (default ``demo``); MiniVLA has
        no pretrained weights, so ``path`` is refused."""
        if path is not None:
            raise RocketError(
                "MiniVLA trains from scratch and loads no pretrained weights; drop --student_path."
            )
        return cls(MiniVLAConfig.preset(preset or "demo", **overrides))

    def enable_gradient_checkpointing(self) -> None:
        self.checkpointing = True

    def full_train(self) -> list[str]:
        # Under LoRA: the proprio input, the action queries and the regression head (OFT's
        # new parts) train in full; the blocks get adapters; the embeddings stay frozen.
        return ["proprio_embed", "action_queries", "norm.", "action_head"]

    # -- forward -------------------------------------------------------------------------
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, S, 3, H, W]`` -> ``[B, S, grid*grid, 3*p*p]`` patches in row-major order."""
        b, s, ch, h, w = images.shape
        p = self.config.patch_size
        x = images.reshape(b, s, ch, h // p, p, w // p, p)
        return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, s, (h // p) * (w // p), ch * p * p)

    def forward(
        self, images: torch.Tensor, proprio: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        c = self.config
        if images.dim() != 5 or tuple(images.shape[1:]) != (
            c.num_cameras, 3, c.image_size, c.image_size
        ):
            raise RocketError(
                f"MiniVLA expects images [B, {c.num_cameras}, 3, {c.image_size}, "
                f"{c.image_size}], got {tuple(images.shape)}; resize to the model's image_size."
            )
        patches = self.patchify(images * 2.0 - 1.0)
        visual = torch.cat(
            [self.patch_embed[i](patches[:, i]) + self.image_pos[i] for i in range(c.num_cameras)],
            dim=1,
        )
        text = text[:, : c.max_text_len]
        words = self.text_embed(text) + self.text_pos[: text.shape[1]]
        state = self.proprio_embed(proprio).unsqueeze(1)
        queries = self.action_queries.unsqueeze(0).expand(images.shape[0], -1, -1)
        x = torch.cat([visual, state, words, queries], dim=1)
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        text_start = visual.shape[1] + 1
        keep[:, text_start : text_start + text.shape[1]] = text != PAD_TOKEN
        for block in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, keep, use_reentrant=False)
            else:
                x = block(x, keep)
        x = self.norm(x)
        return self.action_head(x[:, -c.chunk :])


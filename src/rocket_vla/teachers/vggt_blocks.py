"""The building blocks of VGGT's aggregator: 2D RoPE, attention blocks, the patch conv.

Parameter names follow the published checkpoint layout (``attn.qkv``, ``ls1.gamma``, ...),
so :mod:`~rocket_vla.teachers.vggt` can load the official weights strictly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- RoPE
def rope_frequencies(half_dim: int, base: float) -> torch.Tensor:
    """Inverse frequencies for one axis: ``base ** (-2i / half_dim)``, i < half_dim/2."""
    return 1.0 / (base ** (torch.arange(0, half_dim, 2, dtype=torch.float32) / half_dim))


def rope_tables(
    positions: torch.Tensor, head_dim: int, base: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[N, head_dim]`` for integer (row, col) ``positions`` [N, 2].

    The first half of the head dim encodes the row, the second the column; inside each
    half the frequencies are laid out twice (``[f, f]``) to pair channel ``j`` with
    ``j + quarter`` -- the rotate-half layout the published weights were trained with.
    """
    half = head_dim // 2
    inv = rope_frequencies(half, base).to(positions.device)
    tables_cos, tables_sin = [], []
    for axis in (0, 1):
        angles = positions[:, axis].to(torch.float32)[:, None] * inv[None, :]  # [N, half/2]
        angles = torch.cat([angles, angles], dim=-1)  # [N, half]
        tables_cos.append(angles.cos())
        tables_sin.append(angles.sin())
    return torch.cat(tables_cos, dim=-1), torch.cat(tables_sin, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., N, head_dim] by the tables; each half rotates independently."""
    half = x.shape[-1] // 2
    quarter = half // 2
    pieces = []
    for part in (x[..., :half], x[..., half:]):
        pieces.append(torch.cat([-part[..., quarter:], part[..., :quarter]], dim=-1))
    rotated = torch.cat(pieces, dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def patch_positions(rows: int, cols: int, num_special: int, device: torch.device) -> torch.Tensor:
    """(row, col) per token of one view: special tokens at (0, 0), patches from (1, 1)."""
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    grid = torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(-1, 2) + 1
    special = torch.zeros(num_special, 2, dtype=grid.dtype, device=device)
    return torch.cat([special, grid], dim=0)


# --------------------------------------------------------------------------- blocks
class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with optional qk-LayerNorm and optional 2D RoPE."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm: nn.Module = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, init_values: float, eps: float,
        qk_norm: bool,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qk_norm)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchConv(nn.Module):
    """Non-overlapping patchify as a strided convolution (``patch_embed.proj`` in DINOv2)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class BlockCaller:
    """Runs blocks eagerly or through ``torch.compile`` and keeps per-shape constants.

    Both are execution state, not parameters: nothing here enters the state dict, so a
    compiled or cache-holding model saves and loads exactly like a fresh one.
    ``compile_blocks``/``compile_mode``/``cache_constants`` are set by the teacher from
    its :class:`~rocket_vla.teachers.base.TeacherRuntime` before each forward.
    """

    compile_blocks: bool = False
    compile_mode: str | None = None
    cache_constants: bool = True

    def _call_block(self, block: nn.Module, *args: object) -> torch.Tensor:
        if not self.compile_blocks:
            return block(*args)
        compiled: dict[tuple[int, str | None], Callable] = self.__dict__.setdefault("_compiled", {})
        key = (id(block), self.compile_mode)
        fn = compiled.get(key)
        if fn is None:
            # dynamic=False: one static graph per token shape (frame / global / DINO blocks,
            # per input size), shared by every block of that shape.
            fn = compiled[key] = torch.compile(block, mode=self.compile_mode, dynamic=False)
        return fn(*args)

    def _constant(self, key: tuple, build: Callable[[], object]) -> object:
        """``build()``, memoised under ``key`` when constants are cached."""
        if not self.cache_constants:
            return build()
        store: dict[tuple, object] = self.__dict__.setdefault("_constants", {})
        if key not in store:
            store[key] = build()
        return store[key]

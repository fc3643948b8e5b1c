"""VGGT's aggregator, written for rocket-vla, as a `Teacher`.

VGGT is on neither PyPI nor in transformers, so this is our own implementation of the
network the paper aligns to. Module and parameter names follow the published checkpoint
layout exactly (``aggregator.patch_embed.blocks.3.attn.qkv.weight``, ...), because the
official ``model.pt`` is loaded with *strict* matching (:mod:`.vggt_checkpoint`): a weight
that silently fails to load would give a plausible-looking but wrong teacher. The blocks
and RoPE live in :mod:`.vggt_blocks`; this module assembles them into the aggregator and
the teacher.

The network, per sample of S views [S, 3, H, W] in [0, 1]:

1. ImageNet normalisation, then a DINOv2 ViT (ViT-L/14 with 4 registers for VGGT-1B);
   its final-normed patch tokens are the patch embedding.
2. Each view gets a camera token and ``R`` register tokens in front of its patches
   (view 0 has its own pair, the others share a second pair): ``1 + R + h*w`` tokens.
3. ``depth`` alternating blocks: a frame block attends within each view, then a global
   block attends across all views' tokens. Both use qk-LayerNorm and 2D RoPE (base 100;
   the first half of each head's channels rotate with the patch row, the second half
   with the column; patch positions start at 1 and the special tokens sit at 0).
4. The output of pair ``g`` is concat(frame-block output, global-block output): 2C wide.

In the project's index convention layer ``g`` (1..depth) is that concat; layer 0 is the
token stream entering the first pair, duplicated to 2C so every layer has the same width
(both halves of the concat would be this stream if the blocks were identities).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Teacher,
    TeacherInput,
    TeacherRuntime,
)
from rocket_vla.teachers.vggt_blocks import Block, BlockCaller, PatchConv, patch_positions, rope_tables
from rocket_vla.teachers.vggt_checkpoint import LoadReport, load_aggregator, read_checkpoint


@dataclass
class VGGTConfig:
    """Sizes of a VGGT aggregator. Defaults are VGGT-1B; see :meth:`tiny` for tests."""

    embed_dim: int = 1024
    depth: int = 24  # alternating frame/global pairs
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4  # of the aggregator (camera token + these per view)
    init_values: float = 0.01  # layer-scale init of the aggregator blocks
    rope_base: float = 100.0
    patch_size: int = 14
    img_size: int = 518  # sets the patch-embed position table (518/14 = 37 -> 1370 rows)
    patch_embed_depth: int = 24
    patch_embed_heads: int = 16
    patch_embed_registers: int = 4
    patch_embed_init_values: float = 1.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or self.embed_dim % self.patch_embed_heads:
            raise RocketError(
                f"VGGT embed_dim {self.embed_dim} must be divisible by the head counts "
                f"({self.num_heads}, {self.patch_embed_heads}); pick matching sizes."
            )
        head_dim = self.embed_dim // self.num_heads
        if head_dim % 4:
            raise RocketError(
                f"VGGT head dim {head_dim} must be divisible by 4 for 2D RoPE; change "
                "embed_dim or num_heads."
            )
        if self.img_size % self.patch_size:
            raise RocketError(
                f"VGGT img_size {self.img_size} must be a multiple of patch_size {self.patch_size}."
            )

    @classmethod
    def vggt_1b(cls) -> VGGTConfig:
        return cls()

    @classmethod
    def tiny(cls, **overrides: object) -> VGGTConfig:
        """A few-hundred-k-parameter aggregator for tests and a small trained teacher."""
        base = dict(
            embed_dim=64,
            depth=4,
            num_heads=4,
            num_register_tokens=4,
            patch_size=14,
            img_size=56,
            patch_embed_depth=2,
            patch_embed_heads=4,
            patch_embed_registers=4,
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


class DinoEncoder(BlockCaller, nn.Module):
    """DINOv2 ViT with register tokens; returns its final-normed patch tokens."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        grid = cfg.img_size // cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.patch_embed_registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused here; in the checkpoint
        self.patch_embed = PatchConv(cfg.patch_size, dim)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.patch_embed_heads, cfg.mlp_ratio, cfg.patch_embed_init_values, 1e-6,
                  qk_norm=False)
            for _ in range(cfg.patch_embed_depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_table(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """The learned position table, bicubically resized (antialiased) to the patch grid.

        Memoised when no gradient flows to it, keyed on the table's storage and version
        counter too, so loading or editing the weights (in place or by assignment) rebuilds it.
        """
        table = self.pos_embed
        if torch.is_grad_enabled() and table.requires_grad:
            return self._position_table(rows, cols, dtype)
        key = ("pos", rows, cols, dtype, table.device, table.data_ptr(), table._version)
        return self._constant(key, lambda: self._position_table(rows, cols, dtype))

    def _position_table(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        table = self.pos_embed
        n = table.shape[1] - 1
        side = int(math.isqrt(n))
        if rows * cols == n and rows == cols:
            return table.to(dtype)
        cls_pos, grid = table[:, :1].float(), table[:, 1:].float()
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([cls_pos, grid], dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.position_table(rows, cols, x.dtype)
        regs = self.register_tokens.expand(n, -1, -1).to(x.dtype)
        x = torch.cat([x[:, :1], regs, x[:, 1:]], dim=1)
        for block in self.blocks:
            x = self._call_block(block, x)
        x = self.norm(x)
        return x[:, 1 + self.register_tokens.shape[1]:]


class Aggregator(BlockCaller, nn.Module):
    """The VGGT aggregator: patch embedding + alternating frame/global attention."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = DinoEncoder(cfg)
        self.frame_blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, cfg.init_values, 1e-5, qk_norm=True)
            for _ in range(cfg.depth)
        )
        self.global_blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, cfg.init_values, 1e-5, qk_norm=True)
            for _ in range(cfg.depth)
        )
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, cfg.num_register_tokens, dim))

    @property
    def patch_start(self) -> int:
        return 1 + self.cfg.num_register_tokens

    def _special_tokens(self, batch: int, views: int) -> torch.Tensor:
        """[B*S, 1+R, C]: view 0 takes slot 0 of each bank, the other views slot 1."""
        bank = torch.cat([self.camera_token, self.register_token], dim=2)  # [1, 2, 1+R, C]
        first = bank[:, :1].expand(batch, 1, -1, -1)
        rest = bank[:, 1:].expand(batch, views - 1, -1, -1)
        return torch.cat([first, rest], dim=1).reshape(batch * views, *bank.shape[2:])

    def configure(self, runtime: TeacherRuntime, device: torch.device) -> None:
        """Adopt the runtime's compile and constant-cache settings (here and in the DINO part)."""
        for part in (self, self.patch_embed):
            part.compile_blocks = runtime.compiles_on(device)
            part.compile_mode = runtime.compile_mode
            part.cache_constants = runtime.cache_constants

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        def build() -> tuple[torch.Tensor, torch.Tensor]:
            mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
            return mean, std

        return self._constant(("norm", device), build)  # type: ignore[return-value]

    def _rope(
        self, views: int, rows: int, cols: int, head_dim: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """(frame, global) RoPE tables at ``dtype``: the queries' dtype, so applying them casts nothing."""

        def build() -> tuple:
            pos = patch_positions(rows, cols, self.patch_start, device)
            cos, sin = rope_tables(pos, head_dim, self.cfg.rope_base)
            cos, sin = cos.to(dtype), sin.to(dtype)
            return (cos, sin), (cos.repeat(views, 1), sin.repeat(views, 1))

        return self._constant(("rope", views, rows, cols, head_dim, device, dtype), build)  # type: ignore[return-value]

    def forward(self, images: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
        """Tokens [B, S, 1+R+h*w, 2C] for each index in ``layers`` (0..depth).

        ``images`` are in [0, 1] (any float dtype; normalised in float32, then cast to the
        weights' dtype); the loop stops after the deepest requested pair.
        """
        b, s, _, height, width = images.shape
        if min(layers) < 0 or max(layers) > self.cfg.depth:
            raise RocketError(f"VGGT layers must be in 0..{self.cfg.depth}, got {layers}.")
        mean, std = self._normalisation(images.device)
        weight_dtype = self.camera_token.dtype
        images = ((images.float() - mean) / std).reshape(b * s, 3, height, width).to(weight_dtype)
        patches = self.patch_embed(images)
        special = self._special_tokens(b, s).to(patches.dtype)
        x = torch.cat([special, patches], dim=1)  # [B*S, P, C]
        p, c = x.shape[1], x.shape[2]

        rows, cols = height // self.cfg.patch_size, width // self.cfg.patch_size
        head_dim = c // self.cfg.num_heads
        # q/k leave qk-LayerNorm in float32 under autocast, in the weights' dtype otherwise
        rope_dtype = torch.float32 if torch.is_autocast_enabled(images.device.type) else weight_dtype
        rope_frame, rope_global = self._rope(s, rows, cols, head_dim, images.device, rope_dtype)

        wanted = set(layers)
        out: dict[int, torch.Tensor] = {}
        if 0 in wanted:
            x0 = x.reshape(b, s, p, c)
            out[0] = torch.cat([x0, x0], dim=-1)
        for g in range(1, max(layers) + 1):
            x = self._call_block(self.frame_blocks[g - 1], x.reshape(b * s, p, c), rope_frame)
            frame_out = x.reshape(b, s, p, c)
            x = self._call_block(self.global_blocks[g - 1], x.reshape(b, s * p, c), rope_global)
            if g in wanted:
                out[g] = torch.cat([frame_out, x.reshape(b, s, p, c)], dim=-1)
        return out


class VGGTModel(nn.Module):
    """Container whose state-dict keys carry the published ``aggregator.`` prefix."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        self.aggregator = Aggregator(cfg)


def init_vggt_weights(model: nn.Module, seed: int | None = None) -> None:
    """Random init in the style of the original (truncated-normal linears, tiny tokens).

    Used for tests, benchmarks and as the starting point of a teacher we train ourselves;
    a seed makes two builds bit-identical, which the fingerprint tests rely on.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def normal(param: torch.Tensor, std: float) -> None:
        values = torch.randn(param.shape, generator=gen) * std
        param.copy_(values.clamp(-2 * std, 2 * std) if std > 1e-3 else values)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                normal(module.weight, 0.02)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, DinoEncoder):
                normal(module.pos_embed, 0.02)
                normal(module.cls_token, 1e-6)
                normal(module.register_tokens, 1e-6)
                module.mask_token.zero_()
            elif isinstance(module, Aggregator):
                normal(module.camera_token, 1e-6)
                normal(module.register_token, 1e-6)


# --------------------------------------------------------------------------- teacher
class VGGTTeacher(Teacher):
    """VGGT aggregator features: ``depth`` layers of width ``2 * embed_dim``."""

    name = "vggt"
    supports_reduced_weights = True

    def __init__(
        self,
        config: VGGTConfig | None = None,
        input_cfg: TeacherInput | None = None,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = 0,
        materialise: bool = True,
        runtime: TeacherRuntime | None = None,
    ) -> None:
        super().__init__(input_cfg, runtime)
        self.config = config or VGGTConfig()
        if materialise:
            self.model = VGGTModel(self.config).to(device)
            init_vggt_weights(self.model, seed)
        else:
            with torch.device("meta"):
                self.model = VGGTModel(self.config)
        self.model.eval().requires_grad_(False)
        self.num_layers = self.config.depth
        self.dim = 2 * self.config.embed_dim
        self.patch_size = self.config.patch_size
        self.load_report: LoadReport | None = None
        self.match_weights_dtype()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        config: VGGTConfig | None = None,
        input_cfg: TeacherInput | None = None,
        *,
        device: torch.device | str = "cpu",
        runtime: TeacherRuntime | None = None,
    ) -> VGGTTeacher:
        """Build on the meta device and assign the checkpoint's tensors (no double allocation)."""
        teacher = cls(config, input_cfg, materialise=False, runtime=runtime)
        teacher.load_checkpoint(path)
        teacher.to(device)
        return teacher

    def load_checkpoint(self, path: str | Path) -> LoadReport:
        state = read_checkpoint(path)
        self.load_report = load_aggregator(self.model.aggregator, state, str(path))
        self.model.float()
        self.weights_changed()
        self.match_weights_dtype()
        return self.load_report

    def save(self, path: str | Path, *, metadata: Mapping[str, str] | None = None) -> None:
        """Write the aggregator as safetensors with the published key names."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        meta = {"format": "pt", "vggt_config": str(asdict(self.config))}
        meta.update(metadata or {})
        save_file(state, str(path), metadata=meta)

    def _architecture(self) -> dict:
        return {"class": "VGGTAggregator", **asdict(self.config)}

    def _forward_layers(self, images: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        self.model.aggregator.configure(self.runtime, images.device)
        tokens = self.model.aggregator(images, layers)
        b, s, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        start = self.model.aggregator.patch_start
        return [tokens[k][:, :, start:].reshape(b, s, rows, cols, self.dim) for k in layers]

"""The pi0.5 network on transformers' building blocks: PaliGemma prefix + AdaRMS Gemma expert.

What makes pi0.5 differ from pi0 (sources in docs/students.md, "pi0.5"):

* the flow-matching time enters the action expert through **adaptive RMS norms**: every
  norm of the expert (before attention, before the MLP, the final one) maps a time
  condition to ``(scale, shift, gate)`` and returns ``x_hat * (1 + scale) + shift``; the
  gate multiplies the branch in its residual add (``x + y * gate``). The condition is
  ``silu(time_mlp_out(silu(time_mlp_in(sincos(t)))))``;
* there is **no time/action MLP fusion and no state token**: the suffix is
  ``action_in_proj(x_t)`` alone, one bidirectional block of ``chunk`` tokens;
* the state goes into the prompt as text (the student's job, :mod:`rocket_vla.policies.pi05`).

The VLM is transformers' ``PaliGemmaModel`` unchanged; its prefix (images + prompt,
bidirectional) runs once and leaves its keys/values in a cache that the expert's attention
extends, as both Gemmas attend jointly in the original (the prefix never attends to the
suffix, so running it first is the same computation). The expert's blocks reuse transformers'
``GemmaAttention``/``GemmaMLP``/``GemmaRotaryEmbedding``; only the norms and the residual
gating are ours.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rocket_vla.errors import RocketError


class AdaRMSNorm(nn.Module):
    """RMS norm whose scale, shift and residual gate come from a condition vector.

    ``dense`` starts at zero weight (openpi and LeRobot initialise it so), so at init the
    norm is a plain unit RMS norm and the gate equals the dense bias."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.dense.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wide = torch.promote_types(x.dtype, torch.float32)  # at least float32, as openpi
        var = x.to(wide).pow(2).mean(-1, keepdim=True)
        normed = x.to(wide) * torch.rsqrt(var + self.eps)
        scale, shift, gate = self.dense(cond)[:, None, :].chunk(3, dim=-1)
        out = normed * (1.0 + scale.to(wide)) + shift.to(wide)
        return out.to(x.dtype), gate.to(x.dtype)


class ExpertLayer(nn.Module):
    """One Gemma block of the action expert with AdaRMS norms and gated residuals."""

    def __init__(self, config: Any, layer_idx: int) -> None:
        super().__init__()
        from transformers.models.gemma.modeling_gemma import GemmaAttention, GemmaMLP

        width = config.hidden_size
        self.self_attn = GemmaAttention(config, layer_idx)
        self.mlp = GemmaMLP(config)
        self.input_layernorm = AdaRMSNorm(width, width, config.rms_norm_eps)
        self.post_attention_layernorm = AdaRMSNorm(width, width, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor, cache: Any) -> torch.Tensor:
        h, gate = self.input_layernorm(x, cond)
        h, _ = self.self_attn(hidden_states=h, position_embeddings=rope, attention_mask=mask, cache=cache)
        x = x + h * gate
        h, gate = self.post_attention_layernorm(x, cond)
        return x + self.mlp(h) * gate


class AdaRMSExpert(nn.Module):
    """The action expert: ``num_hidden_layers`` :class:`ExpertLayer` and a final AdaRMS norm."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers.models.gemma.modeling_gemma import GemmaRotaryEmbedding

        self.config = config
        self.layers = nn.ModuleList(ExpertLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = AdaRMSNorm(config.hidden_size, config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = GemmaRotaryEmbedding(config)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor, cache: Any) -> torch.Tensor:
        rope = self.rotary_emb(x, positions)
        for layer in self.layers:
            x = layer(x, cond, rope, mask, cache)
        return self.norm(x, cond)[0]


def sincos_time(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """``[sin, cos]`` of ``t`` at periods spaced geometrically from min to max (float64)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * t.double()[:, None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def gemma_config(data: dict[str, Any], what: str) -> Any:
    from transformers import GemmaConfig

    fields = {k: v for k, v in data.items() if k not in ("model_type", "transformers_version")}
    try:
        config = GemmaConfig(**fields)
    except (TypeError, ValueError) as err:
        raise RocketError(
            f"the recorded pi0.5 {what} config is invalid ({err}); rebuild it from a preset.") from None
    config._attn_implementation = "sdpa"
    return config


def paligemma_config(data: dict[str, Any]) -> Any:
    from transformers import PaliGemmaConfig

    fields = {k: v for k, v in data.items() if k not in ("model_type", "transformers_version")}
    try:
        return PaliGemmaConfig(**fields)
    except (TypeError, ValueError) as err:
        raise RocketError(
            f"the recorded pi0.5 VLM config is invalid ({err}); rebuild it from a preset.") from None


class PI05Model(nn.Module):
    """PaliGemma + AdaRMS action expert + the pi0.5 action/time projections (module docstring).

    ``spec`` holds ``vlm_config`` (PaliGemma), ``expert_config`` (Gemma), ``chunk_size``,
    ``max_action_dim``, ``num_inference_steps``, ``min_period``/``max_period`` (time
    sin-cos periods, openpi's 4e-3 and 4.0).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        from transformers import AutoModel

        self.spec = spec
        vlm_cfg = paligemma_config(spec["vlm_config"])
        expert_cfg = gemma_config(spec["expert_config"], "action expert")
        text = vlm_cfg.text_config
        if (expert_cfg.head_dim, expert_cfg.num_key_value_heads, expert_cfg.num_hidden_layers) != (
                text.head_dim, text.num_key_value_heads, text.num_hidden_layers):
            raise RocketError(
                "the pi0.5 action expert must match the VLM's head_dim, key/value heads and depth "
                f"(it reads their cache), got {expert_cfg.head_dim}/{expert_cfg.num_key_value_heads}/"
                f"{expert_cfg.num_hidden_layers} vs {text.head_dim}/{text.num_key_value_heads}/"
                f"{text.num_hidden_layers}; give the expert the same values."
            )
        self.vlm = AutoModel.from_config(vlm_cfg)
        self.expert = AdaRMSExpert(expert_cfg)
        width, dim = expert_cfg.hidden_size, int(spec["max_action_dim"])
        self.action_in_proj = nn.Linear(dim, width)
        self.action_out_proj = nn.Linear(width, dim)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)
        self.image_token_id = int(vlm_cfg.image_token_id)

    # -- pieces --------------------------------------------------------------------------
    def embed_prefix(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Text embeddings with the image tokens (leading, camera-major) replaced by SigLIP
        features through the projector; the embedding scales text by sqrt(width) itself."""
        b, s = pixel_values.shape[:2]
        images = self.vlm.get_image_features(pixel_values.flatten(0, 1)).pooler_output
        images = images.reshape(b, s * images.shape[1], images.shape[2])
        is_image = input_ids == self.image_token_id
        text = self.vlm.get_input_embeddings()(input_ids.masked_fill(is_image, 0))
        n = images.shape[1]
        return torch.cat([images.to(text.dtype), text[:, n:]], dim=1)

    def prefix_cache(self, inputs: dict[str, Any]) -> tuple[Any, int]:
        """Run images + prompt (bidirectional) through the VLM once; its key/value cache."""
        mask = inputs["attention_mask"]
        embeds = self.embed_prefix(inputs["input_ids"], inputs["pixel_values"])
        out = self.vlm(inputs_embeds=embeds, attention_mask=mask, position_ids=mask.cumsum(-1) - 1,
                       token_type_ids=torch.zeros_like(mask), use_cache=True)
        return out.cache, embeds.shape[1]

    def time_condition(self, t: torch.Tensor) -> torch.Tensor:
        width = self.action_in_proj.out_features
        emb = sincos_time(t, width, float(self.spec["min_period"]), float(self.spec["max_period"]))
        emb = emb.to(self.time_mlp_in.weight.dtype)
        return F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(emb))))

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, prefix_mask: torch.Tensor, cache: Any
                 ) -> torch.Tensor:
        """The expert's velocity for noisy chunk ``x_t`` at time ``t`` given the prefix cache.

        Action tokens see every valid prefix token and each other (one bidirectional block)."""
        b, h = x_t.shape[:2]
        x = self.action_in_proj(x_t)
        cond = self.time_condition(t)
        positions = prefix_mask.sum(-1, keepdim=True) + torch.arange(h, device=x.device)[None]
        keys = torch.cat([prefix_mask.bool(), torch.ones(b, h, dtype=torch.bool, device=x.device)], 1)
        mask = torch.zeros(b, 1, h, keys.shape[1], dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(~keys[:, None, None, :], torch.finfo(x.dtype).min)
        out = self.expert(x, cond, positions, mask, cache)
        return self.action_out_proj(out)

    # -- loss and sampling -----------------------------------------------------------------
    def loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Per-element flow-matching loss ``[B, chunk, max_action_dim]``: ``x_t = t noise +
        (1 - t) actions``, target ``noise - actions``; ``t ~ 0.999 Beta(1.5, 1) + 0.001``."""
        actions = inputs["actions"]
        noise = inputs.get("noise")
        if noise is None:
            noise = torch.randn_like(actions)
        t = inputs.get("timestep")
        if t is None:
            beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
            t = (beta.sample((actions.shape[0],)) * 0.999 + 0.001).to(actions.device)
        t = t.to(torch.promote_types(t.dtype, torch.float32))  # openpi keeps time in float32
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
        cache, _ = self.prefix_cache(inputs)
        v = self.velocity(x_t.to(actions.dtype), t, inputs["attention_mask"], cache)
        wide = torch.promote_types(v.dtype, torch.float32)
        return (v.to(wide) - (noise - actions).to(wide)) ** 2

    def sample(self, inputs: dict[str, Any], steps: int) -> torch.Tensor:
        """Euler integration of the flow from noise (t = 1) to actions (t = 0)."""
        b = inputs["input_ids"].shape[0]
        dtype = self.action_in_proj.weight.dtype
        x = inputs.get("noise")
        if x is None:
            x = torch.randn(b, int(self.spec["chunk_size"]), int(self.spec["max_action_dim"]),
                            device=inputs["input_ids"].device, dtype=dtype)
        cache, prefix_len = self.prefix_cache(inputs)
        dt = -1.0 / steps
        for step in range(steps):
            t = torch.full((b,), 1.0 + step * dt, dtype=torch.float32, device=x.device)
            v = self.velocity(x, t, inputs["attention_mask"], cache)
            cache.crop(prefix_len - cache.get_seq_length())  # keep the prefix: steps never meet
            x = x + dt * v
        return x

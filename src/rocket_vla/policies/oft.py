"""An OpenVLA-OFT-style student on a transformers vision-language model.

Why: the paper's OpenVLA results use OFT's recipe -- the VLM reads the prompt plus learned
*action-query* tokens, and an MLP regresses a whole chunk of continuous actions from the
VLM's last hidden states at those tokens, trained with L1 (parallel decoding, no
autoregressive action tokens). This module applies that recipe to any
``AutoModelForImageTextToText`` model whose image-token layout it knows (see
:data:`FAMILIES`; each entry was written from the model's own code): built from a config
offline (the ``*-tiny`` presets) or loaded from a local checkpoint (``--student_path``).

Sequence fed to the VLM (static positions)::

    [image tokens, camera 0] ... [camera S-1] [BOS] instruction "\\n" <pad...> [proprio] [q_1 .. q_chunk]

* image tokens: the config's ``image_token_id`` repeated as many times per camera as the
  model's vision path yields (e.g. Idefics3/SmolVLM: ``(image_size / patch)^2 / scale^2``
  after pixel shuffle; Qwen2.5-VL: ``(image_size / patch / merge)^2``, each camera's run
  wrapped in the config's vision start/end ids, so the image tokens are not one slice and
  :meth:`OFTStudent.visual_index` returns a ``[B, T]`` index); the model itself scatters its
  image features into those slots. Pixels take each family's own input form (Qwen's flat
  patch rows + ``image_grid_thw``, Idefics3's ``[B, S, ...]``, else ``[B*S, ...]``).
* text: the checkpoint's tokenizer (``tokenizer="checkpoint"``) or, for models built from a
  config (no tokenizer files offline), the deterministic hashed-word tokenizer of
  :mod:`~rocket_vla.policies.prompt`; right-padded to ``max_text_len`` (masked out).
* proprio: **a projected token** (OFT's proprio projector: a 2-layer MLP of the 8-dim state
  to the model width) placed before the queries.
* the VLM's token-logit head is dropped (never used; see :func:`_drop_lm_head`).
* action queries: ``chunk`` learned embeddings, one per chunk step; their final hidden states
  go through an MLP head to ``action_dim`` each. (OFT uses one token per action *dimension*;
  one per step keeps the sequence short on a CPU.)

The proprio token and the queries are written into the model's input embeddings by a forward
hook on its embedding module, so the model still receives ``input_ids`` and finds its image
tokens (and Qwen's M-RoPE positions, from ``mm_token_type_ids``) as in its own pipeline. Other
families get position ids that do not advance over the prompt's padding. Attention is the
model's own: decoder LMs are causal and the queries come last, so they see the whole prompt;
PaliGemma gets its prefix-LM ``token_type_ids`` (prompt bidirectional, proprio+queries suffix).

Prompt wording beyond this layout (chat templates, ``<fake_token_around_image>`` wrappers) is
not reproduced: fine-tuning adapts to it, but a zero-shot pretrained prompt format is not kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rocket_vla.errors import RocketError
from rocket_vla.policies.losses import action_l1
from rocket_vla.policies.pretrained import load_local_pretrained
from rocket_vla.policies.prompt import (
    TextEncoder,
    VLMStudentConfig,
    image_token_index,
    instruction_rows,
    pad_rows,
)
from rocket_vla.policies.student import Student, register_student


def _flat_pixels(images: torch.Tensor, grid: tuple[int, int], config: Any) -> dict[str, torch.Tensor]:
    return {"pixel_values": images.flatten(0, 1)}  # [B*S, 3, H, W], cameras of a sample in order


def _nested_pixels(images: torch.Tensor, grid: tuple[int, int], config: Any) -> dict[str, torch.Tensor]:
    return {"pixel_values": images}  # [B, S, 3, H, W] (Idefics3/SmolVLM)


def _qwen_patches(images: torch.Tensor, grid: tuple[int, int], config: Any) -> dict[str, torch.Tensor]:
    """Qwen2-VL's flat patch layout (``Qwen2VLImageProcessor.patchify``): per image, patches
    grouped by ``merge x merge`` windows, each patch flattened as (channel, time, row, col) with
    the still frame repeated ``temporal_patch_size`` times; plus ``image_grid_thw``."""
    vision = config.vision_config
    p, m, t = int(vision.patch_size), int(vision.spatial_merge_size), int(vision.temporal_patch_size)
    x = images.flatten(0, 1)
    n, c, h, w = x.shape
    gh, gw = h // p, w // p
    x = x.reshape(n, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
    flat = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1).reshape(n * gh * gw, c * t * p * p)
    thw = torch.tensor([[1, gh, gw]], dtype=torch.long, device=images.device).expand(n, 3)
    return {"pixel_values": flat, "image_grid_thw": thw}


@dataclass(frozen=True)
class Family:
    """How one VLM family takes images, read from its transformers code: the token grid per
    image (given the square side), the pixel inputs, its processor's normalisation, the tokens
    wrapped around each image run, and how positions are made."""

    grid: Callable[[Any, int], tuple[int, int]]
    pixels: Callable[[torch.Tensor, tuple[int, int], Any], dict[str, torch.Tensor]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    prefix_lm: bool = False  # PaliGemma: token_type_ids 0 on the prompt (bidirectional)
    #: position id of the first token when we pass positions (PaliGemma counts from 1);
    #: None: the model makes its own (Qwen's M-RoPE, from ``mm_token_type_ids``)
    first_position: int | None = 0
    wrap: tuple[str, str] | None = None  # config attributes of the ids around each image run
    fixed_size: bool = True  # the vision tower takes only vision_config.image_size


def _patch_grid(config: Any, size: int) -> tuple[int, int]:
    side = size // config.vision_config.patch_size
    return side, side


def _shuffled_grid(config: Any, size: int) -> tuple[int, int]:
    # Idefics3/SmolVLM pixel-shuffle the patch grid by ``scale_factor`` in each direction;
    # the resulting tokens are row-major over the coarser grid (Idefics3Connector.pixel_shuffle).
    rows, cols = _patch_grid(config, size)
    r = int(config.scale_factor)
    if rows % r or cols % r:
        raise RocketError(
            f"a {rows}x{cols} patch grid cannot be pixel-shuffled by {r}; pick image_size / "
            "patch_size divisible by scale_factor."
        )
    return rows // r, cols // r


def _llava_grid(config: Any, size: int) -> tuple[int, int]:
    if config.vision_feature_select_strategy != "default":
        raise RocketError(
            "Llava with vision_feature_select_strategy='full' keeps the CLS token, which has no "
            "place on the image grid; use 'default'."
        )
    return _patch_grid(config, size)


def _merged_grid(config: Any, size: int) -> tuple[int, int]:
    # Qwen2.5-VL merges merge x merge patches into one token, row-major over the merged grid
    # (its window attention permutes tokens internally and restores the order at the end).
    vision = config.vision_config
    step = int(vision.patch_size) * int(vision.spatial_merge_size)
    if size % step:
        raise RocketError(
            f"Qwen2.5-VL needs an image side divisible by patch_size x spatial_merge_size = {step}, "
            f"got {size}; set image_size to a multiple of {step}."
        )
    return size // step, size // step


_HALF = (0.5, 0.5, 0.5)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: model_type -> layout, from each model's modeling code in transformers 5.
FAMILIES: dict[str, Family] = {
    "paligemma": Family(_patch_grid, _flat_pixels, _HALF, _HALF, prefix_lm=True, first_position=1),
    "idefics3": Family(_shuffled_grid, _nested_pixels, _HALF, _HALF),
    "smolvlm": Family(_shuffled_grid, _nested_pixels, _HALF, _HALF),
    "llava": Family(_llava_grid, _flat_pixels, _CLIP_MEAN, _CLIP_STD),
    "qwen2_5_vl": Family(_merged_grid, _qwen_patches, _CLIP_MEAN, _CLIP_STD, first_position=None,
                         wrap=("vision_start_token_id", "vision_end_token_id"), fixed_size=False),
}

_V = 512


def _tiny_llama(layers: int = 6) -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": layers, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": _V}


#: Tiny VLMs built from configs (random weights) that a CPU runs in well under a second a step.
OFT_PRESETS: dict[str, dict[str, Any]] = {
    "smolvlm-tiny": {
        "model_type": "smolvlm", "text_config": _tiny_llama(),
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "patch_size": 8, "image_size": 64},
        "scale_factor": 2, "image_token_id": _V - 1,
    },
    "paligemma-tiny": {
        "model_type": "paligemma",
        "text_config": {"model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 6,
                        "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
                        "head_dim": 32, "vocab_size": _V},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 16,
                          "image_size": 64, "vision_use_head": False},
        "projection_dim": 64, "image_token_id": _V,  # outside the text vocabulary, as PaliGemma's
    },
    "qwen2.5-vl-tiny": {
        "model_type": "qwen2_5_vl",
        "text_config": {"model_type": "qwen2_5_vl_text", "hidden_size": 64, "num_hidden_layers": 6,
                        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                        "vocab_size": _V, "bos_token_id": 2, "eos_token_id": 1,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                            "mrope_section": [2, 3, 3]}},
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                          "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2,
                          "window_size": 32, "out_hidden_size": 64, "fullatt_block_indexes": [1]},
        "image_token_id": _V - 1, "video_token_id": _V - 2, "vision_start_token_id": _V - 3,
        "vision_end_token_id": _V - 4,
    },
    "llava-tiny": {
        "model_type": "llava", "text_config": _tiny_llama(),
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 3, "num_attention_heads": 2, "patch_size": 16,
                          "image_size": 64},
        "vision_feature_layer": -1, "image_token_id": _V - 1,
    },
}


@dataclass
class OFTStudentConfig(VLMStudentConfig):
    """What rebuilds an OFT-style student: the VLM's transformers config plus the OFT parts."""

    CONFIG_WHAT = "OFT student"

    vlm: dict[str, Any] = field(default_factory=dict)
    chunk: int = 8  # OFT's LIBERO chunk
    max_text_len: int = 24
    image_size: int | None = None  # side for vision towers without a fixed size (Qwen2.5-VL)
    head_hidden: int = 0  # 0: the VLM's width
    image_mean: list[float] | None = None  # None: the family's processor default
    image_std: list[float] | None = None



def _vlm_config(data: dict[str, Any]):
    from transformers import AutoConfig

    data = {k: v for k, v in data.items() if k != "transformers_version"}
    model_type = data.pop("model_type", None)
    if model_type not in FAMILIES:
        raise RocketError(
            f"the OFT student knows the image layout of {', '.join(FAMILIES)}, not {model_type!r}; "
            "use one of those or add a Family entry in policies/oft.py."
        )
    return AutoConfig.for_model(model_type, **data)


def _find_path(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise RocketError("the VLM's language model is not inside the student; rebuild the student.")


def _drop_lm_head(vlm: nn.Module) -> None:
    """Remove the token-logit head: OFT reads hidden states and never decodes tokens, and a head
    tied to the input embeddings would be one tensor under two names, which safetensors refuses
    to save (and an untied one is vocabulary x width of dead weight)."""
    head = vlm.get_output_embeddings()
    if head is None:
        return
    parent, _, name = _find_path(vlm, head).rpartition(".")
    setattr(vlm.get_submodule(parent), name, None)


@register_student("oft")
class OFTStudent(Student):
    """OFT-style action regression on a transformers VLM (see the module docstring)."""

    config_class = OFTStudentConfig

    def __init__(self, config: OFTStudentConfig, vlm: nn.Module | None = None) -> None:
        super().__init__()
        from transformers import AutoModelForImageTextToText

        if vlm is None:
            vlm = AutoModelForImageTextToText.from_config(_vlm_config(config.vlm))
        model_type = vlm.config.model_type
        if model_type not in FAMILIES:
            raise RocketError(
                f"the OFT student knows the image layout of {', '.join(FAMILIES)}, not "
                f"{model_type!r}; use one of those or add a Family entry in policies/oft.py."
            )
        self.family = FAMILIES[model_type]
        _drop_lm_head(vlm)
        self.vlm = vlm
        config.vlm = vlm.config.to_dict()
        self.config = config
        decoder = vlm.get_decoder()
        if not isinstance(getattr(decoder, "layers", None), nn.ModuleList):
            raise RocketError(
                f"{type(decoder).__name__} keeps no `layers` list; the OFT student cannot tap it, "
                "use a VLM whose language model has one."
            )
        lm_path = _find_path(self, decoder)
        self.blocks_path = f"{lm_path}.layers"
        self.final_path = f"{lm_path}.norm" if isinstance(getattr(decoder, "norm", None), nn.Module) else None
        text = vlm.config.text_config
        self.depth = len(decoder.layers)
        self.width = int(text.hidden_size)
        self.image_token_id = int(vlm.config.image_token_id)
        self.image_size = self._image_side(vlm.config, config)
        self.image_grid = self.family.grid(vlm.config, self.image_size)
        self.tokens_per_image = self.image_grid[0] * self.image_grid[1]
        self.wrap_ids = [int(getattr(vlm.config, name)) for name in self.family.wrap or ()]
        self.num_cameras = config.num_cameras
        self.chunk = config.chunk
        self.action_dim = config.action_dim
        self.proprio_dim = config.proprio_dim
        self.text = TextEncoder(config.tokenizer, int(text.vocab_size), frozenset({self.image_token_id}),
                                path=config.student_path)
        mean = config.image_mean or self.family.mean
        std = config.image_std or self.family.std
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)

        d = self.width
        hidden = config.head_hidden or d
        self.proprio_proj = nn.Sequential(nn.Linear(config.proprio_dim, d), nn.GELU(), nn.Linear(d, d))
        self.action_queries = nn.Parameter(torch.randn(config.chunk, d) * 0.02)
        self.action_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(),
                                         nn.Linear(hidden, config.action_dim))
        self._inject: torch.Tensor | None = None
        vlm.get_input_embeddings().register_forward_hook(self._write_tokens)

    def _image_side(self, vlm_config: Any, config: OFTStudentConfig) -> int:
        fixed = getattr(vlm_config.vision_config, "image_size", None) if self.family.fixed_size else None
        if fixed is not None:
            if config.image_size not in (None, fixed):
                raise RocketError(
                    f"this VLM's vision tower takes {fixed} px images, not image_size={config.image_size}; "
                    "drop image_size (images are resized to the tower's size)."
                )
            return int(fixed)
        if config.image_size is None:
            raise RocketError(
                f"{vlm_config.model_type} takes images of any size; set image_size (e.g. 224) in the "
                "OFT student's config."
            )
        return int(config.image_size)

    # -- building ------------------------------------------------------------------------
    @classmethod
    def build(cls, preset: str | None = None, path: str | None = None, **overrides: Any) -> OFTStudent:
        """``preset``: one of :data:`OFT_PRESETS` (default ``smolvlm-tiny``). ``path``: a local
        transformers VLM checkpoint (``from_pretrained(local_files_only=True)``) whose tokenizer
        and ``preprocessor_config.json`` normalisation are used."""
        if path is not None:
            if preset is not None:
                raise RocketError("give either an OFT preset or --student_path, not both.")
            from transformers import AutoModelForImageTextToText

            vlm = load_local_pretrained(AutoModelForImageTextToText, path, "a vision-language model",
                                        "point --student_path at a transformers checkpoint folder.",
                                        model_types=set(FAMILIES))
            processor = Path(path) / "preprocessor_config.json"
            if processor.is_file():
                stats = json.loads(processor.read_text())
                overrides.setdefault("image_mean", stats.get("image_mean"))
                overrides.setdefault("image_std", stats.get("image_std"))
            overrides.setdefault("tokenizer", "checkpoint")
            return cls(OFTStudentConfig.from_dict({**overrides, "student_path": str(path)}), vlm)
        name = preset or "smolvlm-tiny"
        if name not in OFT_PRESETS:
            raise RocketError(f"unknown OFT preset {name!r}; choose one of {', '.join(OFT_PRESETS)}.")
        if OFT_PRESETS[name]["model_type"] == "qwen2_5_vl":
            overrides.setdefault("image_size", 64)
        return cls(OFTStudentConfig.from_dict({**overrides, "vlm": OFT_PRESETS[name]}))

    def full_train(self) -> list[str]:
        """OFT's new parts: the proprio projector, the action queries and the head."""
        return ["proprio_proj.", "action_queries", "action_head."]

    # -- batches -------------------------------------------------------------------------
    @property
    def _prompt_len(self) -> int:
        per_camera = self.tokens_per_image + len(self.wrap_ids)
        return per_camera * self.num_cameras + self.config.max_text_len

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        device, dtype = self.device, next(self.vlm.parameters()).dtype
        images = batch["images"]
        if images.dim() != 5 or images.shape[1] != self.num_cameras or images.shape[2] != 3:
            raise RocketError(
                f"the OFT student expects images [B, {self.num_cameras}, 3, H, W], got "
                f"{tuple(images.shape)}; pass one RGB image per camera."
            )
        images = images.to(device=device, dtype=torch.float32)
        b, s = images.shape[:2]
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images.flatten(0, 1), size=(self.image_size, self.image_size),
                                   mode="bilinear", antialias=True, align_corners=False
                                   ).view(b, s, 3, self.image_size, self.image_size)
        pixels = ((images - self.image_mean) / self.image_std).to(dtype)
        text = instruction_rows(self.text, batch["instructions"], self.config.max_text_len)
        text_ids, text_mask = pad_rows(text, self.config.max_text_len, self.text.pad)
        run = [self.image_token_id] * self.tokens_per_image
        if self.wrap_ids:
            run = [self.wrap_ids[0], *run, self.wrap_ids[1]]
        image_ids = torch.tensor(run * s, dtype=torch.long).expand(b, -1)
        # proprio + query slots: any id (their embeddings are replaced), attended to
        slots = torch.full((b, 1 + self.chunk), self.text.pad, dtype=torch.long)
        input_ids = torch.cat([image_ids, text_ids, slots], 1)
        attention_mask = torch.cat([torch.ones_like(image_ids), text_mask, torch.ones_like(slots)], 1)
        proprio = batch["proprio"].to(device=device, dtype=torch.float32)
        if proprio.shape[-1] != self.proprio_dim:
            raise RocketError(f"the OFT student was set up for {self.proprio_dim}-dim proprio, got "
                              f"{proprio.shape[-1]}; set proprio_dim to the data's.")
        model: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                          **self.family.pixels(pixels, self.image_grid, self.vlm.config)}
        if self.family.first_position is not None:
            # padding inside the prompt does not advance positions, so it changes nothing
            model["position_ids"] = (attention_mask.cumsum(1) - 1).clamp_min(0) + self.family.first_position
        else:  # the model's own M-RoPE positions, from which tokens are image tokens
            model["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
        if self.family.prefix_lm:
            model["token_type_ids"] = torch.cat([torch.zeros_like(image_ids), torch.zeros_like(text_ids),
                                                 torch.ones_like(slots)], 1)
        inputs: dict[str, Any] = {"model": {k: v.to(device) for k, v in model.items()}, "proprio": proprio,
                                  "input_ids": model["input_ids"].to(device)}
        if "actions" in batch:
            actions = batch["actions"].to(device=device, dtype=torch.float32)
            if actions.shape[1:] != (self.chunk, self.action_dim):
                raise RocketError(
                    f"the OFT student regresses chunks of {self.chunk} x {self.action_dim} actions, got "
                    f"{tuple(actions.shape[1:])}; build the dataset with chunk={self.chunk}."
                )
            inputs["actions"] = actions
            mask = batch.get("action_mask")
            inputs["action_mask"] = (torch.ones(b, self.chunk, dtype=torch.bool) if mask is None
                                     else mask.bool()).to(device)
        return inputs

    def visual_index(self, inputs: dict[str, Any]) -> list[tuple[int, int]] | torch.Tensor:
        return image_token_index(inputs["input_ids"], [self.image_token_id],
                                 self.tokens_per_image * self.num_cameras)

    # -- forward -------------------------------------------------------------------------
    def _write_tokens(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook on the input embeddings: put the proprio token and the queries in their slots."""
        inject = self._inject
        if inject is None or output.dim() != 3 or output.shape[1] != self._prompt_len + inject.shape[1]:
            return None
        start = self._prompt_len
        return torch.cat([output[:, :start], inject.to(output.dtype)], dim=1)

    def actions_from(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The VLM pass: normalised action chunk ``[B, chunk, action_dim]``."""
        b = inputs["input_ids"].shape[0]
        own = self.action_queries.dtype  # the OFT parts' dtype (float32 unless the student was cast)
        proprio = self.proprio_proj(inputs["proprio"].to(own))[:, None]
        self._inject = torch.cat([proprio, self.action_queries.expand(b, -1, -1)], dim=1)
        try:
            out = self.vlm.model(**inputs["model"])
        finally:
            self._inject = None
        queries = out.last_hidden_state[:, -self.chunk:]
        return self.action_head(queries.to(own)).float()

    def action_loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        """OFT's L1 over valid chunk steps."""
        if "actions" not in inputs:
            raise RocketError("the OFT action loss needs `actions` in the batch; prepare a training batch.")
        return action_l1(self.actions_from(inputs), inputs["actions"], inputs["action_mask"])

    @torch.no_grad()
    def predict(self, inputs: dict[str, Any]) -> torch.Tensor:
        return self.actions_from(inputs)

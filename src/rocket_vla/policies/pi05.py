"""pi0.5 as a student: :class:`~rocket_vla.policies.pi05_model.PI05Model` behind the Student interface.

The network (PaliGemma + AdaRMS Gemma action expert, time through adaptive norms, no state
token) lives in :mod:`pi05_model`; this module turns our LIBERO batches into its inputs:

* **images**: both cameras scaled to [-1, 1] (SigLIP's mean/std 0.5) at the vision tower's
  ``image_size`` (resized here when the data's differ), one run of image tokens per camera
  at the start of the prompt.
* **prompt**: with ``discrete_state`` (pi0.5 as published, openpi's ``discrete_state_input``
  default for pi05, LeRobot's ``pi05``): ``[BOS] "Task: {instruction}, State: {s_1 ... s_n};\\n
  Action: "`` where the normalised proprio, zero-padded to ``max_state_dim``, is cut into 256
  bins over [-1, 1] (``digitize(s, linspace(-1, 1, 257)[:-1]) - 1``). Without it, the
  official ROCKET / openpi ``pi05_libero`` setting (``discrete_state_input=False``): ``[BOS]
  instruction "\\n"`` and no state at all. Right-padded to ``max_text_len`` text tokens
  (openpi's ``max_token_len`` 200 for pi05). Instructions are cleaned as openpi does
  (strip, ``_`` and newlines to spaces).
* **actions**: the 7-dim chunk zero-padded to ``max_action_dim``; the loss is reduced over
  the real dims and valid steps (LeRobot drops the padded dims the same way).
* **evaluation**: Euler sampling in ``num_inference_steps`` (10); the policy executes
  ``execute`` (5, openpi's LIBERO ``replan_steps``) actions of a chunk.
* **taps**: the PaliGemma language-model blocks over the image-token span. The official
  pi0.5 run (openpi-ROCKET's PyTorch trainer) takes its last pair *after* the final norm, so
  ``final_path`` names ``final_tap``: an identity that the final norm's output passes through
  (a forward hook), whose input the taps read. The official pairs and lambda are the
  ``paper_pi05`` config's, not the student's.
* **weights**: ``--student_path DIR`` with a ``model.safetensors`` in LeRobot's ``pi05`` layout
  (keys ``model.paligemma_with_expert.…``) or openpi's PyTorch conversion (the same keys
  without ``model.``); other layouts are refused with the keys that did not map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rocket_vla.errors import RocketError
from rocket_vla.policies.losses import masked_mean
from rocket_vla.policies.paligemma import (
    PaliGemmaStudentConfig,
    flow_targets,
    image_prompt,
    padded_state,
    paligemma_pixels,
    refuse_checkpointing,
    set_paligemma_layout,
)
from rocket_vla.policies.pi05_model import PI05Model
from rocket_vla.policies.prompt import image_token_index
from rocket_vla.policies.student import Student, register_student

#: State bins of the discretised-state prompt (openpi ``PaligemmaTokenizer``).
STATE_BINS = 256

_TINY_VOCAB = 1024
_GEMMA_2B = {"model_type": "gemma", "hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
             "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 257152,
             "hidden_activation": "gelu_pytorch_tanh"}
_GEMMA_300M = {"model_type": "gemma", "hidden_size": 1024, "num_hidden_layers": 18, "intermediate_size": 4096,
               "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
               "hidden_activation": "gelu_pytorch_tanh"}
_SIGLIP_SO400M = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                  "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14, "image_size": 224,
                  "vision_use_head": False}
_COMMON = {"max_state_dim": 32, "max_action_dim": 32, "num_inference_steps": 10,
           "min_period": 4e-3, "max_period": 4.0}

#: ``tiny``: the real layout (SigLIP -> PaliGemma, 18 Gemma blocks, an 18-block AdaRMS expert
#: reading their cache) at CPU widths. ``base``: pi0.5's sizes (PaliGemma-3B: SigLIP so400m/14
#: at 224 px + Gemma-2B; Gemma-300M expert; chunk 50), openpi's ``gemma_2b``/``gemma_300m``.
PI05_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vlm_config": {
            "model_type": "paligemma",
            "text_config": {"model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 18,
                            "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
                            "head_dim": 32, "vocab_size": _TINY_VOCAB},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 64,
                              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                              "patch_size": 16, "image_size": 64, "vision_use_head": False},
            "projection_dim": 64,
            "image_token_id": _TINY_VOCAB,
        },
        "expert_config": {"model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 18,
                          "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
                          "head_dim": 32},
        "chunk_size": 10,
        **_COMMON,
    },
    "base": {
        "vlm_config": {"model_type": "paligemma", "text_config": _GEMMA_2B, "vision_config": _SIGLIP_SO400M,
                       "projection_dim": 2048, "image_token_id": 257152},
        "expert_config": _GEMMA_300M,
        "chunk_size": 50,
        **_COMMON,
    },
}


@dataclass
class PI05StudentConfig(PaliGemmaStudentConfig):
    """What rebuilds a pi0.5 student: the network spec plus prompt/eval settings."""

    CONFIG_WHAT = "pi0.5 student"

    max_text_len: int = 200  # openpi's max_token_len for pi05
    discrete_state: bool = True


def discretize_state(state: torch.Tensor) -> list[list[int]]:
    """256 bins over [-1, 1] per dim, as openpi's tokenizer: ``digitize(s, linspace(-1, 1,
    257)[:-1]) - 1`` (values below -1 land in bin 0 and above 1 in bin 255)."""
    bins = np.linspace(-1, 1, STATE_BINS + 1)[:-1]
    return (np.digitize(state.detach().float().cpu().numpy(), bins=bins) - 1).tolist()


def clean_instruction(text: str) -> str:
    return text.strip().replace("_", " ").replace("\n", " ")


@register_student("pi05")
class PI05Student(Student):
    """pi0.5 through the Student interface; see the module docstring."""

    config_class = PI05StudentConfig
    blocks_path = "model.vlm.language_model.layers"
    #: the identity the final norm's output passes through: taps read the normed stream.
    final_path = "final_tap"

    def __init__(self, config: PI05StudentConfig, model: PI05Model | None = None) -> None:
        super().__init__()
        self.model = model if model is not None else PI05Model(config.model)
        self.final_tap = nn.Identity()
        self.model.vlm.language_model.norm.register_forward_hook(self._through_final_tap)
        self.config = config
        spec = config.model
        vlm = self.model.vlm.config
        set_paligemma_layout(self, config, name="pi0.5", vision=vlm.vision_config,
                             text=vlm.text_config, image_token_id=vlm.image_token_id,
                             max_state_dim=spec["max_state_dim"], max_action_dim=spec["max_action_dim"],
                             chunk=spec["chunk_size"])

    def _through_final_tap(self, _module: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
        """Forward hook on the final norm: its output passes through ``final_tap`` (a bound
        method, so a deep copy of the student hooks its own tap)."""
        return self.final_tap(out)

    # -- building ------------------------------------------------------------------------
    @classmethod
    def build(cls, preset: str | None = None, path: str | None = None, **overrides: Any) -> PI05Student:
        """``preset``: ``tiny`` (default without a path; CPU-sized) or ``base`` (pi0.5's sizes,
        random init; the default with a path). ``path``: a folder whose ``model.safetensors``
        holds LeRobot ``pi05`` / openpi PyTorch weights for that architecture."""
        name = preset or ("base" if path is not None else "tiny")
        if name not in PI05_PRESETS:
            raise RocketError(f"unknown pi0.5 preset {name!r}; choose one of {', '.join(PI05_PRESETS)}.")
        model = {**PI05_PRESETS[name], **overrides.pop("model", {})}
        if name == "tiny":
            overrides.setdefault("max_text_len", 48)  # a hashed LIBERO prompt with 32 state bins
        if path is not None:
            overrides.setdefault("tokenizer", "checkpoint")
            overrides["student_path"] = str(path)
        student = cls(PI05StudentConfig.from_dict({**overrides, "model": model}))
        if path is not None:
            load_pi05_weights(student, Path(path))
        return student

    # -- LoRA and memory -------------------------------------------------------------------
    def lora_targets(self) -> list[str]:
        """Linear layers of both Gemmas (openpi's LoRA variants adapt both)."""
        return self.linear_layers(self.blocks_path, "model.expert.layers")

    def full_train(self) -> list[str]:
        """pi0.5's action head: action in/out projections, the time MLP and the final AdaRMS norm
        (the per-block AdaRMS denses are linear layers of the expert blocks and get adapters)."""
        return ["model.action_in_proj.", "model.action_out_proj.", "model.time_mlp_in.",
                "model.time_mlp_out.", "model.expert.norm."]

    def enable_gradient_checkpointing(self) -> None:
        """Refused: checkpointed VLM layers drop the prefix key/value cache that the expert reads."""
        refuse_checkpointing("pi0.5")

    # -- batches -------------------------------------------------------------------------
    def _prompt_text(self, instruction: str, state: list[int] | None) -> list[int]:
        text = clean_instruction(instruction)
        if state is None:
            return self.text.bos + self.text.encode(text)[: self.config.max_text_len] + self.text.newline
        full = f"Task: {text}, State: {' '.join(map(str, state))};\nAction: "
        if self.text._hf is not None:
            return self.text.bos + self.text.encode(full)
        # hashed words drop punctuation: keep the newline id where the prompt has one
        head, _, tail = full.partition("\n")
        return self.text.bos + self.text.encode(head) + self.text.newline + self.text.encode(tail)

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        device, dtype = self.device, next(self.parameters()).dtype
        pixels = paligemma_pixels(self, batch["images"], "pi0.5")
        s = pixels.shape[1]
        spec = self.config.model
        state = padded_state(self, batch, "pi0.5", spec["max_state_dim"])
        states = discretize_state(state) if self.config.discrete_state else None
        rows = [self._prompt_text(t, None if states is None else states[i])
                for i, t in enumerate(batch["instructions"])]
        input_ids, attention_mask = image_prompt(self, rows, s)
        inputs: dict[str, Any] = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "pixel_values": pixels.to(dtype),
        }
        inputs.update(flow_targets(self, batch, "pi0.5", spec["max_action_dim"], dtype))
        return inputs

    def visual_index(self, inputs: dict[str, Any]) -> list[tuple[int, int]] | torch.Tensor:
        cameras = int(inputs["pixel_values"].shape[1])
        return image_token_index(inputs["input_ids"], [self.image_token_id], self.tokens_per_image * cameras)

    # -- loss and actions ------------------------------------------------------------------
    def action_loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        if "actions" not in inputs:
            raise RocketError("pi0.5's action loss needs `actions` in the batch; prepare a training batch.")
        return masked_mean(self.model.loss(inputs)[..., : self.action_dim], inputs["action_mask"])

    @torch.no_grad()
    def predict(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The chunk sampled by Euler integration of the flow in ``num_inference_steps``."""
        steps = self.config.num_inference_steps or int(self.config.model["num_inference_steps"])
        return self.model.sample(inputs, steps)[..., : self.action_dim].float()

    def prediction_noise(self, generator: torch.Generator) -> torch.Tensor:
        """One sample's flow-matching start noise ``[chunk, max_action_dim]`` from its own (CPU)
        generator, so an episode's actions do not depend on its batch companions."""
        return torch.randn(self.chunk, self.config.model["max_action_dim"], generator=generator)


# ----------------------------------------------------------------------------- weights
#: Published key prefixes -> ours. LeRobot's ``pi05`` policy saves ``model.`` + openpi's
#: PyTorch names; openpi's own conversion has no ``model.`` (first match wins).
_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("paligemma_with_expert.paligemma.model.", "vlm."),
    ("paligemma_with_expert.gemma_expert.model.", "expert."),
    ("action_in_proj.", "action_in_proj."),
    ("action_out_proj.", "action_out_proj."),
    ("time_mlp_in.", "time_mlp_in."),
    ("time_mlp_out.", "time_mlp_out."),
)
#: openpi/LeRobot's SigLIP sits one level deeper (``SiglipVisionModel.vision_model``) than the
#: vision tower transformers' ``PaliGemmaModel`` builds from a config here.
_VISION = ("vlm.vision_tower.vision_model.", "vlm.vision_tower.")
#: Published keys with no counterpart: the LM heads (tied to the embeddings / unused).
_DROPPED = ("paligemma_with_expert.paligemma.lm_head.", "paligemma_with_expert.gemma_expert.lm_head.")
_EMBED = "vlm.language_model.embed_tokens.weight"


def map_published_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Published pi0.5 keys -> ``PI05Model`` keys, and the keys that did not map."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    lm_head = None
    for key, value in state.items():
        bare = key.removeprefix("model.")
        if bare.startswith(_DROPPED):
            if bare.startswith(_DROPPED[0]):
                lm_head = value
            continue
        for src, dst in _KEY_MAP:
            if bare.startswith(src):
                name = dst + bare[len(src):]
                if name.startswith(_VISION[0]):
                    name = _VISION[1] + name[len(_VISION[0]):]
                out[name] = value
                break
        else:
            unknown.append(key)
    if _EMBED not in out and lm_head is not None:  # tied: LeRobot may store only the head
        out[_EMBED] = lm_head
    return out, unknown


def load_pi05_weights(student: PI05Student, folder: Path) -> None:
    """Load ``folder/model.safetensors`` (LeRobot ``pi05`` or openpi PyTorch layout) strictly."""
    from safetensors.torch import load_file

    file = folder / "model.safetensors"
    if not file.is_file():
        raise RocketError(f"no model.safetensors in {folder}; point --student_path at a LeRobot pi05 "
                          "or openpi PyTorch pi0.5 folder.")
    try:
        state = load_file(str(file))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise RocketError(
            f"{file} cannot be read ({type(err).__name__}); download the weights again.") from None
    mapped, unknown = map_published_keys(state)
    ours = student.model.state_dict()
    missing = sorted(set(ours) - set(mapped))
    if unknown or missing:
        shown = (unknown or missing)[:8]
        raise RocketError(
            f"{file} is not in a pi0.5 layout this student loads (LeRobot `pi05` keys "
            f"`model.paligemma_with_expert.…`, or openpi PyTorch keys without `model.`): "
            f"{len(unknown)} unknown keys and {len(missing)} missing, e.g. {shown}; convert the checkpoint "
            "to one of those layouts.")
    shapes = [k for k in ours if tuple(ours[k].shape) != tuple(mapped[k].shape)]
    if shapes:
        k = shapes[0]
        raise RocketError(
            f"{file} does not match the chosen preset's sizes ({len(shapes)} shapes differ, e.g. {k}: "
            f"{tuple(mapped[k].shape)} vs {tuple(ours[k].shape)}); pick the --student_preset the "
            "checkpoint was trained with.")
    student.model.load_state_dict({k: mapped[k] for k in ours}, strict=True)

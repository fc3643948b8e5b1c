"""pi0 as a student: transformers' ``PI0ForConditionalGeneration`` behind the Student interface.

Why a wrapper and not a port: the paper's pi0 results come from the real architecture
(PaliGemma prefix + Gemma action expert trained by flow matching). transformers ships it, so
the student only translates our LIBERO batches into its inputs and back:

* **images**: both cameras as ``pixel_values [B, S, 3, H, W]`` scaled to [-1, 1] (the
  processor's mean/std 0.5) with ``pixel_attention_mask`` all True; images of another size
  are resized to the vision tower's ``image_size`` here (the processor's job upstream).
* **prompt**: ``[image tokens of every camera] [BOS] instruction "\\n"``, right-padded to
  ``max_text_len`` text tokens, as ``PI0Processor`` builds it. The image-token id is the
  config's ``vlm_config.image_token_id`` and the tokens per camera are the vision tower's
  patch count. Text uses the checkpoint's tokenizer when ``student_path`` holds one
  (``tokenizer="checkpoint"``); configs built offline have no tokenizer files, so the tiny
  preset uses the deterministic hashed-word tokenizer of :mod:`prompt` (``"words"``).
* **state / actions**: the 8-dim proprio is zero-padded to ``max_state_dim`` and the 7-dim
  action chunk to ``max_action_dim``; the chunk length is the model's ``chunk_size``.
  ``action_dim``/``proprio_dim`` record which leading dims are real.
* **loss**: the library's own flow-matching loss (its time sampling, noise and MSE against
  the velocity ``noise - actions``) with ``loss_reduction="none"``, reduced by us to the mean
  over real action dims and valid chunk steps: the padded dims carry no data (LeRobot's pi0
  drops them from its loss the same way).
* **evaluation**: ``sample_actions`` (its Euler integration of the flow) returns the whole
  chunk; the policy wrapper executes the first ``execute`` actions. Default 5: the
  official openpi LIBERO client replans every 5 steps (``replan_steps = 5`` in openpi's
  ``examples/libero/main.py``).
* **taps**: the PaliGemma language-model blocks ``model.vlm.language_model.layers`` over the
  image-token span read from ``input_ids``. The paper's pairs and lambda for pi0 are the
  ``paper_pi0`` config's, not the student's.

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

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
from rocket_vla.policies.pretrained import load_local_pretrained
from rocket_vla.policies.prompt import image_token_index, instruction_rows
from rocket_vla.policies.student import Student, register_student

_TINY_VOCAB = 1024
#: ``pi0-tiny``: the real layout (SigLIP -> PaliGemma with 18 Gemma blocks, an 18-block Gemma
#: action expert reading its key/value cache) at widths a CPU trains in minutes. The expert's
#: ``head_dim`` and key/value heads equal the VLM text model's, as the shared cache requires.
PI0_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vlm_config": {
            "model_type": "paligemma",
            "text_config": {
                "model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 18,
                "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 32, "vocab_size": _TINY_VOCAB,
            },
            "vision_config": {
                "model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 16,
                "image_size": 64, "vision_use_head": False,
            },
            "projection_dim": 64,
            "image_token_id": _TINY_VOCAB,  # outside the text vocabulary, as in pi0's default
        },
        "dit_config": {
            "model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 18,
            "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 32,
        },
        "chunk_size": 10,
        "max_state_dim": 32,
        "max_action_dim": 32,
        "num_inference_steps": 10,
    },
    # transformers' defaults: the real pi0 (PaliGemma-3B + 300M expert, chunk 50), random init.
    "base": {},
}


@dataclass
class PI0StudentConfig(PaliGemmaStudentConfig):
    """What rebuilds a pi0 student: the transformers config plus our prompt/eval settings.

    ``model`` is ``PI0Config.to_dict()``; ``student_path`` records where pretrained weights
    (and the tokenizer, when ``tokenizer="checkpoint"``) came from.
    """

    CONFIG_WHAT = "pi0 student"

    max_text_len: int = 48  # openpi's max_token_len for pi0



def _pi0_config(model: dict[str, Any]):
    from transformers import PI0Config

    data = {k: v for k, v in model.items() if k not in ("model_type", "transformers_version")}
    try:
        return PI0Config(**data)
    except (TypeError, ValueError) as err:
        raise RocketError(f"the recorded pi0 config is invalid ({err}); rebuild it from a preset.") from None


@register_student("pi0")
class PI0Student(Student):
    """pi0 (transformers) through the Student interface; see the module docstring."""

    config_class = PI0StudentConfig
    blocks_path = "model.model.vlm.language_model.layers"
    final_path = "model.model.vlm.language_model.norm"

    def __init__(self, config: PI0StudentConfig, model: Any | None = None) -> None:
        super().__init__()
        from transformers import PI0ForConditionalGeneration

        if model is None:
            model = PI0ForConditionalGeneration(_pi0_config(config.model))
        # The per-element loss; action_loss reduces it over the real dims only.
        model.config.loss_reduction = "none"
        self.model = model
        config.model = model.config.to_dict()
        self.config = config
        cfg = model.config
        set_paligemma_layout(self, config, name="pi0", vision=cfg.vlm_config.vision_config,
                             text=cfg.vlm_config.text_config,
                             image_token_id=cfg.vlm_config.image_token_id,
                             max_state_dim=cfg.max_state_dim, max_action_dim=cfg.max_action_dim,
                             chunk=cfg.chunk_size)

    # -- building ------------------------------------------------------------------------
    @classmethod
    def build(cls, preset: str | None = None, path: str | None = None, **overrides: Any) -> PI0Student:
        """``preset``: ``tiny`` (default; CPU-sized) or ``base`` (real size, random init). ``path``:
        a local transformers-format pi0 checkpoint (``from_pretrained(local_files_only=True)``),
        whose tokenizer is used unless ``tokenizer="words"`` is given."""
        if path is not None:
            if preset is not None:
                raise RocketError("give either a pi0 preset or --student_path, not both.")
            from transformers import PI0ForConditionalGeneration

            model = load_local_pretrained(
                PI0ForConditionalGeneration, path, "a pi0 checkpoint",
                "point --student_path at a folder with config.json and model.safetensors.",
                model_types={"pi0"})
            overrides.setdefault("tokenizer", "checkpoint")
            config = PI0StudentConfig.from_dict({**overrides, "student_path": str(path)})
            return cls(config, model)
        name = preset or "tiny"
        if name not in PI0_PRESETS:
            raise RocketError(f"unknown pi0 preset {name!r}; choose one of {', '.join(PI0_PRESETS)}.")
        model_overrides = overrides.pop("model", {})
        if name == "tiny":
            overrides.setdefault("max_text_len", 24)  # a hashed LIBERO instruction needs <= 17
        config = PI0StudentConfig.from_dict({**overrides, "model": {**PI0_PRESETS[name], **model_overrides}})
        return cls(config)

    # -- LoRA ----------------------------------------------------------------------------
    def lora_targets(self) -> list[str]:
        """Linear layers of both transformers of pi0: the PaliGemma language model and the
        action expert (openpi's pi0 LoRA recipe adapts both Gemmas)."""
        return self.linear_layers(self.blocks_path, "model.model.dit.layers")

    def full_train(self) -> list[str]:
        """pi0's action head: the state/action/time embeddings and the velocity projection."""
        return ["model.embed_action_time.", "model.action_out_proj."]

    def enable_gradient_checkpointing(self) -> None:
        """Refused: transformers' checkpointed layers drop the key/value cache (``cache=None``) in
        training, and pi0's action expert attends to the PaliGemma prefix through that cache, so
        the first step would fail. Replaying cache writers would append the prefix twice."""
        refuse_checkpointing("transformers' pi0")

    # -- batches -------------------------------------------------------------------------
    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        device, dtype = self.device, next(self.parameters()).dtype
        pixels = paligemma_pixels(self, batch["images"], "pi0")
        b, s = pixels.shape[:2]
        rows = instruction_rows(self.text, list(batch["instructions"]), self.config.max_text_len)
        input_ids, attention_mask = image_prompt(self, rows, s)
        cfg = self.model.config
        state = padded_state(self, batch, "pi0", cfg.max_state_dim)
        inputs: dict[str, Any] = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "pixel_values": pixels.to(dtype),
            "pixel_attention_mask": torch.ones(b, s, dtype=torch.bool, device=device),
            "state": state.to(device=device, dtype=dtype),
        }
        inputs.update(flow_targets(self, batch, "pi0", cfg.max_action_dim, dtype))
        return inputs

    def visual_index(self, inputs: dict[str, Any]) -> list[tuple[int, int]] | torch.Tensor:
        cameras = int(inputs["pixel_attention_mask"].sum(1).max())
        return image_token_index(inputs["input_ids"], [self.image_token_id], self.tokens_per_image * cameras)

    # -- loss and actions ------------------------------------------------------------------
    def action_loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        if "actions" not in inputs:
            raise RocketError("pi0's action loss needs `actions` in the batch; prepare a training batch.")
        out = self.model(
            state=inputs["state"], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"], pixel_attention_mask=inputs["pixel_attention_mask"],
            actions=inputs["actions"], noise=inputs.get("noise"), timestep=inputs.get("timestep"),
        )
        per_element = out.loss[..., : self.action_dim].float()  # [B, chunk, real action dims]
        return masked_mean(per_element, inputs["action_mask"])

    @torch.no_grad()
    def predict(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The chunk from ``sample_actions`` (Euler integration of the flow)."""
        chunk = self.model.sample_actions(
            state=inputs["state"], input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
            noise=inputs.get("noise"), attention_mask=inputs["attention_mask"],
            pixel_attention_mask=inputs["pixel_attention_mask"],
            num_steps=self.config.num_inference_steps,
        )
        return chunk[..., : self.action_dim].float()

    def prediction_noise(self, generator: torch.Generator) -> torch.Tensor:
        """One sample's flow-matching start noise ``[chunk_size, max_action_dim]`` from its own
        (CPU) generator: batched evaluation stacks these into ``inputs["noise"]`` so an episode's
        actions do not depend on which episodes share its batch, nor on the device."""
        cfg = self.model.config
        return torch.randn(cfg.chunk_size, cfg.max_action_dim, generator=generator)

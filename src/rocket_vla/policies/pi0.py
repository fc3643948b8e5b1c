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
  preset uses the deterministic hashed-word tokenizer of :mod:`pi0_inputs` (``"words"``).
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
  image-token span read from ``input_ids``; ``align_layout = "pi0"`` selects the paper's
  pairs and Spatial Forcing layer, ``align_weight = 0.125`` the paper's pi0 lambda.

``forward(inputs)`` is the action loss and ``forward(inputs, sample=True)`` the sampled chunk
(what :meth:`predict` calls), so a :class:`~rocket_vla.align.LayerTaps` whose root is the
student sees every pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from rocket_vla.errors import DictConfig, RocketError
from rocket_vla.policies.pi0_inputs import (
    flow_targets,
    image_token_index,
    pad_rows,
    paligemma_pixels,
    set_paligemma_layout,
)
from rocket_vla.policies.student import Student, load_local_pretrained

#: The paper's alignment weight for pi0 (method.md: lambda 0.125 in the pi0 settings).
PI0_ALIGN_WEIGHT = 0.125
#: Actions of a chunk the official openpi LIBERO client executes before replanning.
OPENPI_LIBERO_REPLAN_STEPS = 5

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
class PI0StudentConfig(DictConfig):
    """What rebuilds a pi0 student: the transformers config plus our prompt/eval settings.

    ``model`` is ``PI0Config.to_dict()``; ``student_path`` records where pretrained weights
    (and the tokenizer, when ``tokenizer="checkpoint"``) came from.
    """

    CONFIG_WHAT = "pi0 student"

    model: dict[str, Any] = field(default_factory=dict)
    student_path: str | None = None
    tokenizer: str = "words"
    num_cameras: int = 2
    max_text_len: int = 48  # openpi's max_token_len for pi0
    execute: int = OPENPI_LIBERO_REPLAN_STEPS
    num_inference_steps: int | None = None
    action_dim: int = 7
    proprio_dim: int = 8



def _pi0_config(model: dict[str, Any]):
    from transformers import PI0Config

    data = {k: v for k, v in model.items() if k not in ("model_type", "transformers_version")}
    try:
        return PI0Config(**data)
    except (TypeError, ValueError) as err:
        raise RocketError(f"the recorded pi0 config is invalid ({err}); rebuild it from a preset.") from None


class PI0Student(Student):
    """pi0 (transformers) through the Student interface; see the module docstring."""

    kind: ClassVar[str] = "pi0"
    config_class: ClassVar[type] = PI0StudentConfig
    blocks_path = "model.model.vlm.language_model.layers"
    final_path = "model.model.vlm.language_model.norm"
    #: The paper's pi0 lambda, the default alignment weight of this student.
    align_weight: ClassVar[float] = PI0_ALIGN_WEIGHT

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

    @property
    def align_layout(self) -> str | None:
        """``"pi0"`` when the language model has pi0's 18 blocks (pi0-tiny and real pi0), else
        ``None`` (balanced pairs). The official pi0 run (openpi-ROCKET's JAX trainer) aligned
        block *outputs* "2..10, -1", i.e. our 3..11 and 18 before the final norm, and Spatial
        Forcing at our 13 (``align.config.PAPER_PAIRS`` / ``PAPER_SF_LAYER``)."""
        return "pi0" if self.depth == 18 else None

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

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PI0Student:
        return cls(PI0StudentConfig.from_dict(dict(config)))

    # -- LoRA ----------------------------------------------------------------------------
    def lora_targets(self) -> list[str]:
        """Linear layers of both transformers of pi0: the PaliGemma language model and the
        action expert (openpi's pi0 LoRA recipe adapts both Gemmas)."""
        prefixes = (self.blocks_path + ".", "model.model.dit.layers.")
        return [name for name, module in self.named_modules()
                if name.startswith(prefixes) and isinstance(module, torch.nn.Linear)]

    def full_train(self) -> list[str]:
        """pi0's action head: the state/action/time embeddings and the velocity projection."""
        return ["model.embed_action_time.", "model.action_out_proj."]

    def enable_gradient_checkpointing(self) -> None:
        """Refused: transformers' checkpointed layers drop the key/value cache (``cache=None``) in
        training, and pi0's action expert attends to the PaliGemma prefix through that cache, so
        the first step would fail. Replaying cache writers would append the prefix twice."""
        raise RocketError(
            "transformers' pi0 cannot train with gradient checkpointing (checkpointed layers drop the "
            "prefix key/value cache its action expert reads); drop --gradient_checkpointing and "
            "lower the batch size or use LoRA instead."
        )

    # -- batches -------------------------------------------------------------------------
    def _prompt(self, instructions: list[str], cameras: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = [self.image_token_id] * (self.tokens_per_image * cameras)
        rows = [(self.text.bos + self.text.encode(t))[: self.config.max_text_len - len(self.text.newline)]
                + self.text.newline for t in instructions]
        ids, mask = pad_rows(rows, self.config.max_text_len, self.text.pad)
        lead = torch.tensor(image, dtype=torch.long).expand(len(rows), -1)
        return torch.cat([lead, ids], 1), torch.cat([torch.ones_like(lead), mask], 1)

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        device, dtype = self.device, next(self.parameters()).dtype
        pixels = paligemma_pixels(self, batch["images"], "pi0")
        b, s = pixels.shape[:2]
        input_ids, attention_mask = self._prompt(list(batch["instructions"]), s)
        proprio = batch["proprio"].to(device=device, dtype=torch.float32)
        if proprio.shape[-1] != self.proprio_dim:
            raise RocketError(f"pi0 was set up for {self.proprio_dim}-dim proprio, got {proprio.shape[-1]}; "
                              "set proprio_dim to the data's.")
        cfg = self.model.config
        inputs: dict[str, Any] = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "pixel_values": pixels.to(dtype),
            "pixel_attention_mask": torch.ones(b, s, dtype=torch.bool, device=device),
            "state": F.pad(proprio, (0, cfg.max_state_dim - self.proprio_dim)).to(dtype),
        }
        inputs.update(flow_targets(self, batch, "pi0", cfg.max_action_dim, dtype))
        return inputs

    def visual_index(self, inputs: dict[str, Any]) -> list[tuple[int, int]] | torch.Tensor:
        cameras = int(inputs["pixel_attention_mask"].sum(1).max())
        return image_token_index(inputs["input_ids"], [self.image_token_id], self.tokens_per_image * cameras)

    # -- loss and actions ------------------------------------------------------------------
    def forward(self, inputs: dict[str, Any], *, sample: bool = False) -> torch.Tensor:
        """The action loss, or with ``sample`` the chunk from ``sample_actions``; both go through
        ``forward`` so taps rooted at the student see every pass (module docstring)."""
        if sample:
            chunk = self.model.sample_actions(
                state=inputs["state"], input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                noise=inputs.get("noise"), attention_mask=inputs["attention_mask"],
                pixel_attention_mask=inputs["pixel_attention_mask"],
                num_steps=self.config.num_inference_steps,
            )
            return chunk[..., : self.action_dim].float()
        if "actions" not in inputs:
            raise RocketError("pi0's action loss needs `actions` in the batch; prepare a training batch.")
        out = self.model(
            state=inputs["state"], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"], pixel_attention_mask=inputs["pixel_attention_mask"],
            actions=inputs["actions"], noise=inputs.get("noise"), timestep=inputs.get("timestep"),
        )
        per_element = out.loss[..., : self.action_dim].float()  # [B, chunk, real action dims]
        valid = inputs["action_mask"][..., None].expand_as(per_element).float()
        return (per_element * valid).sum() / valid.sum().clamp_min(1.0)

    def action_loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        return self(inputs)

    @torch.no_grad()
    def predict(self, inputs: dict[str, Any]) -> torch.Tensor:
        return self(inputs, sample=True)

    def prediction_noise(self, generator: torch.Generator) -> torch.Tensor:
        """One sample's flow-matching start noise ``[chunk_size, max_action_dim]`` from its own
        (CPU) generator: batched evaluation stacks these into ``inputs["noise"]`` so an episode's
        actions do not depend on which episodes share its batch, nor on the device."""
        cfg = self.model.config
        return torch.randn(cfg.chunk_size, cfg.max_action_dim, generator=generator)

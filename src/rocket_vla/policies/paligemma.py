"""What pi0 and pi0.5 share: both read images through a PaliGemma vision tower and pad state and
actions to fixed widths, so the layout checks, the pixel preparation and the flow-matching
targets live here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rocket_vla.errors import RocketError
from rocket_vla.policies.prompt import TextEncoder, VLMStudentConfig, pad_rows

#: Actions of a chunk the official openpi LIBERO client executes before replanning.
OPENPI_LIBERO_REPLAN_STEPS = 5


@dataclass
class PaliGemmaStudentConfig(VLMStudentConfig):
    """What pi0 and pi0.5 share beyond the prompt: the network spec (``model``), how many actions
    of a chunk evaluation executes, and the sampling steps (None: the model's own)."""

    model: dict[str, Any] = field(default_factory=dict)
    execute: int = OPENPI_LIBERO_REPLAN_STEPS
    num_inference_steps: int | None = None


def set_paligemma_layout(student: Any, config: Any, *, name: str, vision: Any, text: Any,
                         image_token_id: int, max_state_dim: int, max_action_dim: int,
                         chunk: int) -> None:
    """The checks and Student attributes that pi0 and pi0.5 share (both read images through a
    PaliGemma vision tower and pad state/actions to fixed widths): refused when the data does
    not fit the model, then image grid, depth, width, chunk and prompt encoder set on
    ``student``. ``name`` names the model in the messages."""
    if vision.image_size % vision.patch_size:
        raise RocketError(f"{name} vision image_size {vision.image_size} is not a multiple of "
                          f"patch_size {vision.patch_size}; pick sizes that divide.")
    if config.proprio_dim > max_state_dim or config.action_dim > max_action_dim:
        raise RocketError(f"{name} pads state to {max_state_dim} and actions to {max_action_dim} dims, "
                          f"fewer than the data's {config.proprio_dim}/{config.action_dim}; raise "
                          "max_state_dim/max_action_dim.")
    if config.execute < 1 or config.execute > chunk:
        raise RocketError(f"execute={config.execute} must lie in 1..{chunk} (the chunk length); "
                          "choose how many actions of a chunk to run.")
    student.image_token_id = int(image_token_id)
    student.text = TextEncoder(config.tokenizer, int(text.vocab_size), frozenset({student.image_token_id}),
                               path=config.student_path)
    student.image_size = int(vision.image_size)
    side = student.image_size // int(vision.patch_size)
    student.image_grid = (side, side)
    student.tokens_per_image = side * side
    student.depth = int(text.num_hidden_layers)
    student.width = int(text.hidden_size)
    student.num_cameras = config.num_cameras
    student.chunk = int(chunk)
    student.action_dim = config.action_dim
    student.proprio_dim = config.proprio_dim
    student.default_execute = config.execute


def paligemma_pixels(student: Any, images: torch.Tensor, name: str) -> torch.Tensor:
    """``[B, S, 3, H, W]`` frames in [0, 1] -> the ``[-1, 1]`` float32 pixels a PaliGemma tower
    reads, resized (bilinear, antialiased) to ``student.image_size`` when they differ."""
    if images.dim() != 5 or images.shape[1] != student.num_cameras or images.shape[2] != 3:
        raise RocketError(f"{name} expects images [B, {student.num_cameras}, 3, H, W], got "
                          f"{tuple(images.shape)}; pass one RGB image per camera.")
    images = images.to(device=student.device, dtype=torch.float32)
    b, s = images.shape[:2]
    side = student.image_size
    if images.shape[-2:] != (side, side):
        images = F.interpolate(images.flatten(0, 1), size=(side, side), mode="bilinear",
                               antialias=True, align_corners=False).view(b, s, 3, side, side)
    return (images - 0.5) / 0.5


def flow_targets(student: Any, batch: dict[str, Any], name: str, max_action_dim: int,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The training targets of a flow-matching student: actions padded to ``max_action_dim``
    and their mask (when the batch has actions), and optional fixed draws (``noise``,
    ``timestep``: tests, exact reproduction; time stays float32)."""
    device = student.device
    out: dict[str, torch.Tensor] = {}
    if "actions" in batch:
        actions = batch["actions"].to(device=device, dtype=torch.float32)
        if actions.shape[1:] != (student.chunk, student.action_dim):
            raise RocketError(f"{name} trains on chunks of {student.chunk} x {student.action_dim} actions, "
                              f"got {tuple(actions.shape[1:])}; build the dataset with "
                              f"chunk={student.chunk}.")
        out["actions"] = F.pad(actions, (0, max_action_dim - student.action_dim)).to(dtype)
        mask = batch.get("action_mask")
        out["action_mask"] = (torch.ones(len(actions), student.chunk, dtype=torch.bool) if mask is None
                              else mask.bool()).to(device)
    if "noise" in batch:
        out["noise"] = batch["noise"].to(device=device, dtype=dtype)
    if "timestep" in batch:
        out["timestep"] = batch["timestep"].to(device=device, dtype=torch.float32)
    return out


def image_prompt(student: Any, rows: list[list[int]], cameras: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[B, L]``: one run of image tokens per camera, then
    the text ``rows`` right-padded to ``max_text_len`` (the PaliGemma prefix layout)."""
    image = [student.image_token_id] * (student.tokens_per_image * cameras)
    ids, mask = pad_rows(rows, student.config.max_text_len, student.text.pad)
    lead = torch.tensor(image, dtype=torch.long).expand(len(rows), -1)
    return torch.cat([lead, ids], 1), torch.cat([torch.ones_like(lead), mask], 1)


def refuse_checkpointing(name: str) -> None:
    """Gradient checkpointing is refused for a PaliGemma + action-expert model: checkpointed VLM
    layers drop the prefix key/value cache (``cache=None`` in training) that the expert reads,
    and replaying the cache writers would append the prefix twice."""
    raise RocketError(
        f"{name} cannot train with gradient checkpointing (checkpointed layers drop the prefix "
        "key/value cache its action expert reads); drop --gradient_checkpointing and lower the "
        "batch size or use LoRA instead."
    )


def padded_state(student: Any, batch: dict[str, Any], name: str, max_state_dim: int) -> torch.Tensor:
    """The batch's normalised proprio ``[B, proprio_dim]`` as float32, checked against the width
    the student was set up for and zero-padded to ``max_state_dim`` (on the batch's device)."""
    proprio = batch["proprio"].to(dtype=torch.float32)
    if proprio.shape[-1] != student.proprio_dim:
        raise RocketError(f"{name} was set up for {student.proprio_dim}-dim proprio, got "
                          f"{proprio.shape[-1]}; set proprio_dim to the data's.")
    return F.pad(proprio, (0, max_state_dim - student.proprio_dim))

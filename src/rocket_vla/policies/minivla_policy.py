"""A trained MiniVLA checkpoint as an evaluation policy (``rocket eval``).

Why a separate module: evaluation must see exactly what training saw, and all of that is
in the checkpoint -- the model sizes, the q01/q99 statistics of actions and proprio, and
whether training cropped. This module rebuilds it from ``config.json`` and
``model.safetensors`` alone (no import of the training code), and applies:

* images: the full frame, or -- if training used random crops of ``crop_area`` -- the
  centre crop of that area (OpenVLA-OFT's evaluation rule), resized to ``image_size``;
* proprio: normalised with the training statistics;
* actions: the predicted chunk un-normalised with the training statistics; the gripper
  dimension was learnt in LIBERO's env convention (-1 open, +1 close), so it is returned
  negated in the runner's ``"signed"`` model convention (+1 open).

Use: ``rocket eval --policy rocket_vla.policies.minivla_policy:load_policy --checkpoint RUN``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rocket_vla.data.augment import crop_resize
from rocket_vla.data.normalize import DatasetStats
from rocket_vla.errors import RocketError
from rocket_vla.policies.minivla import MiniVLA, MiniVLAConfig

CHECKPOINT_FORMAT = "rocket-vla/minivla-checkpoint/1"


def find_checkpoint(path: str | Path) -> Path:
    """A ``step_*`` folder from itself, its ``checkpoints/`` parent or a run folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / "model.safetensors").is_file() and (candidate / "config.json").is_file():
            return candidate
        latest = candidate / "latest"
        if latest.is_file():
            target = candidate / latest.read_text().strip()
            if (target / "model.safetensors").is_file():
                return target
    raise RocketError(
        f"no MiniVLA checkpoint at {path}; pass a run folder or step_* folder from `rocket train`."
    )


def load_minivla(path: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[MiniVLA, dict[str, Any]]:
    """The policy network of a checkpoint (strict key match) and its saved config."""
    from safetensors.torch import load_file

    from rocket_vla.fingerprint import file_digest

    ckpt = find_checkpoint(path)
    try:
        config = json.loads((ckpt / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RocketError(f"{ckpt / 'config.json'} is unreadable ({type(err).__name__}); the "
                          "checkpoint is damaged -- pass another step_* folder or retrain.") from err
    if not isinstance(config, dict):
        config = {}
    if config.get("format") != CHECKPOINT_FORMAT:
        raise RocketError(
            f"{ckpt} is not a MiniVLA checkpoint (format {config.get('format')!r}); pass one "
            "written by `rocket train`."
        )
    weights = ckpt / "model.safetensors"
    expected = (config.get("digests") or {}).get("model.safetensors")
    if expected is not None and file_digest(weights) != expected:
        raise RocketError(f"{weights} is damaged (its checksum does not match the one recorded when "
                          "it was saved); pass another step_* folder or retrain.")
    model = MiniVLA(MiniVLAConfig.from_dict(config["model"]))
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # noqa: BLE001 - any parse failure means a damaged file
        raise RocketError(f"{weights} is not a readable safetensors file ({type(err).__name__}); "
                          "pass another step_* folder or retrain.") from err
    state = {k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise RocketError(
            f"{ckpt} does not match its MiniVLA config (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); the checkpoint is damaged or from another version."
        )
    model.load_state_dict(state)
    return model.to(device).eval(), config


class MiniVLAPolicy:
    """The evaluation ``Policy``: observation dict in, un-normalised action chunk out."""

    needs_images = True
    needs_state = False
    gripper = "signed"

    def __init__(self, model: MiniVLA, config: dict[str, Any], *, execute: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)
        self.stats = DatasetStats.from_dict(config["stats"])
        augment = config.get("train", {}).get("augment", {})
        area = float(augment.get("crop_area", 1.0)) if augment.get("enabled", False) else 1.0
        side = math.sqrt(area)
        offset = (1.0 - side) / 2
        self.box = torch.tensor([[offset, offset, offset + side, offset + side]])
        chunk = model.config.chunk
        self.execute = chunk if execute is None else int(execute)
        if not 1 <= self.execute <= chunk:
            raise RocketError(f"execute must be in 1..{chunk}, got {execute}.")
        self.text = model.config.tokenize([""])

    def reset(self, task: Any) -> None:
        self.text = self.model.config.tokenize([str(getattr(task, "language", task))])

    def _image(self, frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        return crop_resize(x, self.box, self.model.config.image_size)[0]

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        for key in ("agentview", "wrist", "proprio"):
            if key not in obs:
                raise RocketError(f"observation has no {key!r}; MiniVLA needs both cameras and proprio.")
        images = torch.stack([self._image(obs["agentview"]), self._image(obs["wrist"])])[None]
        proprio = torch.from_numpy(self.stats.proprio.normalize(obs["proprio"]))[None]
        pred = self.model(images.to(self.device), proprio.to(self.device), self.text.to(self.device))
        actions = self.stats.action.unnormalize(pred[0].float().cpu().numpy())
        actions[:, 6] = -actions[:, 6]  # env convention (+1 close) -> signed model (+1 open)
        return actions[: self.execute].astype(np.float32)


def load_policy(checkpoint: str, device: str = "cpu", execute: int | None = None,
                **_: Any) -> MiniVLAPolicy:
    """Factory for ``rocket eval --policy ... --checkpoint PATH``."""
    model, config = load_minivla(checkpoint, device)
    return MiniVLAPolicy(model, config, execute=execute, device=device)

"""Any trained student checkpoint as an evaluation policy (``rocket eval``).

Why one wrapper for every student: evaluation must see exactly what training saw, and all of
that is in the checkpoint -- the student's kind and config, the q01/q99 statistics of actions
and proprio, and whether training cropped. The wrapper rebuilds the student through
:func:`rocket_vla.policies.student.load_student` (no import of the training code) and runs
``observation -> prepare() -> predict() -> de-normalise -> first N actions``:

* images: the full frame, or -- if training used random crops of ``crop_area`` -- the
  centre crop of that area (OpenVLA-OFT's evaluation rule), resized to ``image_size``;
* proprio: normalised with the training statistics;
* actions: the predicted chunk un-normalised with the training statistics; the gripper
  dimension was learnt in LIBERO's env convention (-1 open, +1 close), so it is returned
  negated in the runner's ``"signed"`` model convention (+1 open);
* N (``execute``): the student's ``default_execute`` when it has one (pi0: 5, as the official
  LIBERO client), else the whole chunk; ``--policy_kwargs.execute N`` overrides it;
* ``preprocess``: a frame preset of :mod:`rocket_vla.data.preprocess` applied to each camera
  frame before the steps above (``--policy_kwargs.preprocess openvla-oft``), for a student
  fine-tuned on frames prepared the way an official client prepares them (JPEG artefacts,
  Lanczos 224, padding); ``none`` (the default) hands the rendered frame on unchanged.

Use: ``rocket eval --policy checkpoint --checkpoint RUN`` (or ``--policy <kind>``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from rocket_vla.data.augment import crop_resize
from rocket_vla.data.normalize import DatasetStats
from rocket_vla.data.preprocess import get_preset
from rocket_vla.errors import RocketError
from rocket_vla.policies.student import Student, load_student

#: Observation keys of the cameras, in the order the dataset stacks them (agentview, wrist).
CAMERA_KEYS = ("agentview", "wrist")


def eval_crop_box(train_config: dict[str, Any]) -> torch.Tensor:
    """``[1, 4]`` centre box of the training crop area (the full frame without augmentation)."""
    augment = train_config.get("augment", {})
    area = float(augment.get("crop_area", 1.0)) if augment.get("enabled", False) else 1.0
    side = math.sqrt(area)
    offset = (1.0 - side) / 2
    return torch.tensor([[offset, offset, offset + side, offset + side]])


class StudentPolicy:
    """The evaluation ``Policy``: observation dict in, un-normalised action chunk out."""

    needs_images = True
    needs_state = False
    gripper = "signed"

    def __init__(self, student: Student, config: dict[str, Any], *, execute: int | None = None,
                 preprocess: str = "none") -> None:
        self.student = student.eval()
        self._prepare_frame = get_preset(preprocess)
        self.stats = DatasetStats.from_dict(config["stats"])
        self.box = eval_crop_box(config.get("train", {}))
        chunk = int(student.chunk)
        default = getattr(student, "default_execute", None) or chunk
        self.execute = min(int(default), chunk) if execute is None else int(execute)
        if not 1 <= self.execute <= chunk:
            raise RocketError(
                f"execute must be in 1..{chunk} (the student's chunk), got {execute}; pass "
                "--policy_kwargs.execute N with N in that range."
            )
        if student.num_cameras > len(CAMERA_KEYS):
            raise RocketError(
                f"the student takes {student.num_cameras} cameras but LIBERO renders "
                f"{len(CAMERA_KEYS)}; train it with num_cameras <= {len(CAMERA_KEYS)}."
            )
        self.instruction = ""
        self.last_inputs: dict[str, Any] = {}

    @property
    def model(self) -> Student:
        """The student (kept under the old name for callers that read ``policy.model``)."""
        return self.student

    def reset(self, task: Any) -> None:
        self.instruction = str(getattr(task, "language", task))

    def _image(self, frame: np.ndarray) -> torch.Tensor:
        frame = self._prepare_frame(frame)
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        return crop_resize(x, self.box, self.student.image_size)[0]

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        keys = (*CAMERA_KEYS[: self.student.num_cameras], "proprio")
        for key in keys:
            if key not in obs:
                raise RocketError(
                    f"observation has no {key!r}; the {self.student.kind} student needs "
                    f"{', '.join(keys)}."
                )
        images = torch.stack([self._image(obs[k]) for k in CAMERA_KEYS[: self.student.num_cameras]])
        proprio = torch.from_numpy(self.stats.proprio.normalize(obs["proprio"])).float()
        batch = {"images": images[None], "proprio": proprio[None], "instructions": [self.instruction]}
        self.last_inputs = self.student.prepare(batch)  # kept for taps (visual_index) in analyses
        pred = self.student.predict(self.last_inputs)
        actions = self.stats.action.unnormalize(pred[0].float().cpu().numpy())
        actions[:, 6] = -actions[:, 6]  # env convention (+1 close) -> signed model (+1 open)
        return actions[: self.execute].astype(np.float32)


def load_policy(checkpoint: str | None = None, device: str = "cpu", execute: int | None = None,
                student: str | None = None, preprocess: str = "none") -> StudentPolicy:
    """Factory for ``rocket eval --policy <kind>|checkpoint --checkpoint PATH``; ``student``
    (set by ``--policy <kind>``) must match the checkpoint's kind; ``preprocess`` names a
    frame preset (``none``, ``openvla-oft``, ``openvla-oft-crop``, ``openpi``).

    The parameters are the whole list of ``--policy_kwargs`` a student takes: there is no
    catch-all, so a misspelt key is refused by name instead of being ignored."""
    get_preset(preprocess)  # an unknown name fails before the checkpoint is read
    if not checkpoint:
        raise RocketError("a student policy needs --checkpoint RUN (a `rocket train` run folder).")
    model, config = load_student(checkpoint, device)
    if student is not None and student != model.kind:
        raise RocketError(
            f"{checkpoint} holds a {model.kind} student, not {student}; pass --policy {model.kind} "
            "or --policy checkpoint."
        )
    return StudentPolicy(model, config, execute=execute, preprocess=preprocess)

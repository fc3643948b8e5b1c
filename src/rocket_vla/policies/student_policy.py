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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rocket_vla.data.augment import crop_resize
from rocket_vla.data.normalize import DatasetStats
from rocket_vla.data.preprocess import get_preset
from rocket_vla.errors import RocketError
from rocket_vla.policies.student import Student, load_student

#: Observation keys of LIBERO's rendered cameras, in the order the dataset stacks them: the
#: default camera list of a policy (another environment passes its own ``cameras``).
LIBERO_CAMERAS = ("agentview", "wrist")


def eval_crop_box(train_config: dict[str, Any]) -> torch.Tensor:
    """``[1, 4]`` centre box of the training crop area (the full frame without augmentation)."""
    augment = train_config.get("augment", {})
    area = float(augment.get("crop_area", 1.0)) if augment.get("enabled", False) else 1.0
    side = math.sqrt(area)
    offset = (1.0 - side) / 2
    return torch.tensor([[offset, offset, offset + side, offset + side]])


@dataclass
class EpisodeState:
    """What one episode carries between its calls: the instruction and its own random stream.

    The stream is a CPU generator seeded per episode, so anything random in prediction (pi0's
    flow-matching start noise) is the same whichever other episodes share a batch, on any device."""

    instruction: str
    generator: torch.Generator
    seed: int = 0


def episode_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (reduced to 64 bits)."""
    return torch.Generator().manual_seed(int(seed) % (2**63))


class StudentPolicy:
    """The evaluation ``Policy``: observation dicts in, un-normalised action chunks out.

    Batch-first: :meth:`act_batch` answers many episodes (different tasks and instructions)
    with one forward pass; :meth:`reset` / :meth:`act` are that call for one episode, kept for
    the in-process runner and for callers that drive a single episode."""

    needs_images = True
    needs_state = False
    gripper = "signed"

    def __init__(self, student: Student, config: dict[str, Any], *, execute: int | None = None,
                 preprocess: str = "none", cameras: Sequence[str] = LIBERO_CAMERAS) -> None:
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
        if student.num_cameras > len(cameras):
            raise RocketError(
                f"the student takes {student.num_cameras} cameras but the environment renders "
                f"{len(cameras)}; train it with num_cameras <= {len(cameras)}."
            )
        self.cameras = tuple(cameras)[: student.num_cameras]
        self._next_seed = 0
        self.episode = EpisodeState("", episode_generator(0))
        self.last_inputs: dict[str, Any] = {}

    @property
    def instruction(self) -> str:
        return self.episode.instruction

    def begin_episode(self, seed: int) -> None:
        """Seed the random stream of the episode that the next :meth:`reset` starts."""
        self._next_seed = int(seed)

    def new_episode(self, task: Any, seed: int = 0) -> EpisodeState:
        """The state of a new episode of ``task`` (a TaskInfo or an instruction string)."""
        return EpisodeState(str(getattr(task, "language", task)), episode_generator(seed), int(seed))

    def reset(self, task: Any) -> None:
        self.episode = self.new_episode(task, self._next_seed)

    def _image(self, frame: np.ndarray) -> torch.Tensor:
        frame = self._prepare_frame(frame)
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
        return crop_resize(x, self.box, self.student.image_size)[0]

    def _check_keys(self, obs: dict[str, np.ndarray]) -> None:
        keys = (*self.cameras, "proprio")
        for key in keys:
            if key not in obs:
                raise RocketError(
                    f"observation has no {key!r}; the {self.student.kind} student needs "
                    f"{', '.join(keys)}."
                )

    def batch(self, observations: list[dict[str, np.ndarray]], episodes: list[EpisodeState]
              ) -> dict[str, Any]:
        """The library batch of these observations; the student pads the instructions."""
        if len(observations) != len(episodes) or not observations:
            raise RocketError(f"act_batch needs one episode state per observation, got "
                              f"{len(observations)} observations and {len(episodes)} states.")
        for obs in observations:
            self._check_keys(obs)
        images = torch.stack([torch.stack([self._image(o[k]) for k in self.cameras]) for o in observations])
        proprio = torch.from_numpy(np.stack([self.stats.proprio.normalize(o["proprio"])
                                             for o in observations])).float()
        batch: dict[str, Any] = {"images": images, "proprio": proprio,
                                 "instructions": [e.instruction for e in episodes]}
        draw = getattr(self.student, "prediction_noise", None)
        if draw is not None:  # each episode's noise from its own stream, never the batch's
            batch["noise"] = torch.stack([draw(e.generator) for e in episodes])
        return batch

    @torch.no_grad()
    def act_batch(self, observations: list[dict[str, np.ndarray]], episodes: list[EpisodeState]
                  ) -> list[np.ndarray]:
        """One forward pass for every observation; chunk ``i`` belongs to ``episodes[i]``."""
        self.last_inputs = self.student.prepare(self.batch(observations, episodes))
        pred = self.student.predict(self.last_inputs).float().cpu().numpy()
        chunks = []
        for row in pred:
            actions = self.stats.action.unnormalize(row)
            actions[:, -1] = -actions[:, -1]  # gripper, last: env (+1 close) -> signed model (+1 open)
            chunks.append(actions[: self.execute].astype(np.float32))
        return chunks

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.act_batch([obs], [self.episode])[0]


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

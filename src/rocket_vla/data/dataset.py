"""Training samples from LIBERO-layout episodes: one sample per step that has images.

A sample is what a student's ``prepare`` needs plus what the teacher side needs to find the
same frames again:

* ``images``   uint8 ``[S, H, W, 3]`` -- agentview then wrist, full frame (augmentation
  happens batched in the training loop, so the crop box can be handed to the aligner);
* ``proprio``  float ``[8]`` normalised -- ee_pos (3), ee_ori axis-angle (3), gripper (2);
* ``actions``  float ``[chunk, 7]`` normalised -- steps t .. t+chunk-1; past the end of the
  episode the last action is repeated and ``action_mask`` is False there, so the L1 loss
  ignores it (OpenVLA-OFT trains on chunks that run off the end the same way);
* ``instruction`` the raw instruction string (each student tokenises it in ``prepare``;
  ``default_collate`` turns a batch of them into a list of strings);
* ``episode``, ``step`` -- the source frame, the key of the teacher-feature cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from rocket_vla.data.normalize import DatasetStats, NormStats
from rocket_vla.errors import RocketError

CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")
PROPRIO_KEYS = ("ee_pos", "ee_ori", "gripper_states")


class EpisodeLike(Protocol):
    """What the dataset reads from an episode (``rocket_vla.data.episodes`` provides it)."""

    actions: np.ndarray
    obs: dict[str, np.ndarray]
    language: str


def proprio_of(episode: EpisodeLike) -> np.ndarray:
    """``[T, 8]`` proprio from the episode's low-dimensional observations."""
    try:
        parts = [np.asarray(episode.obs[k], dtype=np.float32) for k in PROPRIO_KEYS]
    except KeyError as err:
        where = ":".join(str(p) for p in (getattr(episode, "source", ""), getattr(episode, "name", ""))
                         if p) or "an episode"
        raise RocketError(
            f"{where} has no {err.args[0]!r} observation; the dataset is not in the LIBERO "
            "layout (obs/ee_pos, obs/ee_ori, obs/gripper_states), convert or re-collect it."
        ) from None
    parts = [p.reshape(len(p), -1) for p in parts]
    return np.concatenate(parts, axis=1)


def image_steps(episode: EpisodeLike) -> np.ndarray:
    """Steps at which the episode has camera frames: its ``frame_index`` (collections that
    render once per action chunk store fewer frames than steps), else every step."""
    steps = getattr(episode, "frame_index", None)
    if steps is None:
        return np.arange(len(episode.actions))
    return np.asarray(steps, dtype=np.int64)


def frame_rows(episode: EpisodeLike) -> dict[int, int]:
    """step -> row of the episode's image arrays."""
    return {int(step): row for row, step in enumerate(image_steps(episode))}


def fit_stats(episodes: Sequence[EpisodeLike]) -> DatasetStats:
    """q01/q99 statistics of actions and proprio over every step of every episode."""
    actions = np.concatenate([np.asarray(e.actions, dtype=np.float64) for e in episodes])
    proprio = np.concatenate([proprio_of(e) for e in episodes])
    return DatasetStats(NormStats.fit(actions), NormStats.fit(proprio))


@dataclass
class _Prepared:
    actions: np.ndarray  # normalised [T, 7]
    proprio: np.ndarray  # normalised [T, 8]
    rows: dict[int, int]  # step -> image row


class ChunkDataset(Dataset):
    """Map-style dataset of action-chunk samples over a list of episodes."""

    def __init__(
        self,
        episodes: Sequence[EpisodeLike],
        stats: DatasetStats,
        *,
        chunk: int = 8,
    ) -> None:
        if not episodes:
            raise RocketError("the dataset has no episodes; collect demonstrations first.")
        for cam in CAMERAS:
            if cam not in episodes[0].obs:
                raise RocketError(
                    f"episodes have no {cam!r} images; the dataset is not in the LIBERO layout."
                )
        self.episodes = list(episodes)
        self.stats = stats
        self.chunk = chunk
        self.prepared = [
            _Prepared(
                stats.action.normalize(np.asarray(e.actions)),
                stats.proprio.normalize(proprio_of(e)),
                frame_rows(e),
            )
            for e in self.episodes
        ]
        self.index = np.array(
            [(i, int(t)) for i, e in enumerate(self.episodes) for t in image_steps(e)],
            dtype=np.int64,
        ).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ep_i, t = (int(v) for v in self.index[i])
        episode, prep = self.episodes[ep_i], self.prepared[ep_i]
        length = len(prep.actions)
        steps = np.arange(t, t + self.chunk)
        mask = steps < length
        actions = prep.actions[np.minimum(steps, length - 1)]
        row = prep.rows[t]
        images = np.stack([episode.obs[cam][row] for cam in CAMERAS])
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "proprio": torch.from_numpy(prep.proprio[t]),
            "actions": torch.from_numpy(actions),
            "action_mask": torch.from_numpy(mask),
            "instruction": str(episode.language),
            "episode": torch.tensor(ep_i),
            "step": torch.tensor(t),
        }


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, S, H, W, 3]`` -> float ``[B, S, 3, H, W]`` in [0, 1]."""
    return images.permute(0, 1, 4, 2, 3).float().div_(255.0)

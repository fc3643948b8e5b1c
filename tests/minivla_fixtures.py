"""Tiny in-memory LIBERO-like episodes and teachers for the MiniVLA / training tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from rocket_vla.train.config import TrainConfig


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and far faster when the 2 cores are shared
    with other jobs (intra-op threads then spin against each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class FakeEpisode:
    """Same fields the LIBERO reader gives: actions, obs (images + low-dim), language."""

    actions: np.ndarray
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    language: str = ""


def make_episodes(n: int = 4, length: int = 12, size: int = 32, seed: int = 0) -> list[FakeEpisode]:
    """A bright square moves with the end effector; the action points at a goal, so the
    policy can learn actions from both image and proprio."""
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(n):
        goal = rng.uniform(-0.3, 0.3, size=3)
        pos = rng.uniform(-0.3, 0.3, size=3)
        positions, actions = [], []
        for _ in range(length):
            act = np.concatenate([np.clip((goal - pos) * 5, -1, 1), rng.normal(0, 0.05, 3),
                                  [1.0 if e % 2 else -1.0]])
            positions.append(pos.copy())
            actions.append(act)
            pos = pos + 0.02 * act[:3]
        positions = np.array(positions)
        images = np.zeros((length, size, size, 3), dtype=np.uint8)
        wrist = np.zeros_like(images)
        for t, p in enumerate(positions):
            r, c = (np.clip((p[:2] + 0.4) / 0.8, 0, 0.99) * (size - 6)).astype(int)
            images[t, r : r + 6, c : c + 6] = (255, 200, 50)
            gr, gc = (np.clip((goal[:2] + 0.4) / 0.8, 0, 0.99) * (size - 4)).astype(int)
            wrist[t, gr : gr + 4, gc : gc + 4] = (50, 100, 255)
        obs = {
            "agentview_rgb": images,
            "eye_in_hand_rgb": wrist,
            "ee_pos": positions.astype(np.float32),
            "ee_ori": rng.normal(0, 0.1, (length, 3)).astype(np.float32),
            "gripper_states": np.full((length, 2), 0.04 * (e % 2), dtype=np.float32),
        }
        episodes.append(FakeEpisode(np.array(actions, dtype=np.float32), obs,
                                    f"put the block {e % 2} on the plate"))
    return episodes


class ConvTeacher:
    """A frozen conv stack standing in for a 3D teacher: ``depth`` layers of ``dim`` on a
    4x4 patch grid. ``calls`` counts forward passes."""

    name = "conv"

    def __init__(self, dim: int = 24, depth: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.dim, self.num_layers = dim, depth
        self.stem = torch.randn(dim, 3, 8, 8, generator=g) * 0.2
        self.mix = [torch.randn(dim, dim, generator=g) / dim**0.5 for _ in range(depth)]
        self.calls = 0

    def resolve_layers(self, layers: list[int]) -> list[int]:
        return [x + self.num_layers + 1 if x < 0 else x for x in layers]

    def features(self, frames: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        self.calls += 1
        b, s = frames.shape[:2]
        x = torch.nn.functional.interpolate(frames.reshape(b * s, 3, *frames.shape[-2:]),
                                            size=(32, 32), mode="bilinear")
        h = torch.nn.functional.conv2d(x, self.stem, stride=8).permute(0, 2, 3, 1)  # [N,4,4,C]
        outs = {0: h}
        for k, m in enumerate(self.mix, start=1):
            h = h + torch.tanh(h @ m)
            outs[k] = h
        return [outs[k].reshape(b, s, 4, 4, self.dim) for k in self.resolve_layers(layers)]


class ExplodingTeacher:
    """Raises on any use: the baseline must never touch a teacher."""

    dim = 24
    num_layers = 4

    def __getattr__(self, name: str):
        raise AssertionError(f"the baseline touched the teacher ({name})")

    def features(self, *args, **kwargs):
        raise AssertionError("the baseline called the teacher")


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / "run"), student_preset="tiny", variant="rocket", steps=6,
                batch_size=8, lr=2e-3, save_every=3, log_every=1, progress=False,
                tensorboard=False, num_pairs=3, projector_hidden=32, seed=0)
    base.update(overrides)
    return TrainConfig(**base)

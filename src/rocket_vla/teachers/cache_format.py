"""The teacher-cache format: what an entry is keyed by, where it lives, how it is checked.

A frozen teacher gives the same features for the same frame every epoch, so training reads
them from disk. What is stored is the *full frame's* patch grid (float16, the chosen layers):
the student's random crop is applied afterwards by crop-box resampling, so entries are keyed
by the source frame -- (dataset fingerprint, episode, step, camera) -- and by the teacher's
fingerprint, never by augmented pixels.

Layout of a cache directory::

    manifest.json                  the CacheSpec (teacher, layers, views, dataset, grid)
    episodes/<episode>.safetensors one file per episode; tensor "<step>/<camera>" is
                                   [L, h, w, C] float16; the header metadata holds the
                                   spec key, the episode id and a CRC32 per tensor

:mod:`~rocket_vla.teachers.cache` opens and reads a directory,
:mod:`~rocket_vla.teachers.cache_writer` writes one entry and
:mod:`~rocket_vla.teachers.fill` runs the teacher over a dataset to fill it.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import Teacher

CACHE_FORMAT = 1
STORE_DTYPE = torch.float16


@dataclass(frozen=True)
class CacheSpec:
    """Everything the cached numbers depend on; its :meth:`key` tags every entry."""

    teacher: str  # Teacher.fingerprint(): architecture, weights, input size, precision
    layers: tuple[int, ...]  # resolved teacher layer indices, in output order
    cameras: tuple[str, ...]  # the views fed together to the teacher, in this order
    dataset: str  # fingerprint of the source frames
    grid: tuple[int, int]  # patch grid (rows, cols) of each view
    dim: int  # feature width
    dtype: str = "float16"
    format: int = CACHE_FORMAT

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def to_json(self) -> dict:
        return {**asdict(self), "key": self.key()}

    @classmethod
    def from_json(cls, data: Mapping) -> CacheSpec:
        return cls(
            teacher=str(data["teacher"]),
            layers=tuple(int(v) for v in data["layers"]),
            cameras=tuple(str(v) for v in data["cameras"]),
            dataset=str(data["dataset"]),
            grid=(int(data["grid"][0]), int(data["grid"][1])),
            dim=int(data["dim"]),
            dtype=str(data.get("dtype", "float16")),
            format=int(data.get("format", CACHE_FORMAT)),
        )


def spec_for(
    teacher: Teacher,
    layers: Sequence[int],
    cameras: Sequence[str],
    dataset: str,
    frame_size: tuple[int, int],
) -> CacheSpec:
    """The spec of caching ``layers`` of ``teacher`` for frames of ``frame_size`` (H, W)."""
    if not cameras:
        raise RocketError("no cameras were given for the teacher cache; name at least one view.")
    return CacheSpec(
        teacher=teacher.fingerprint(),
        layers=tuple(teacher.resolve_layers(layers)),
        cameras=tuple(cameras),
        dataset=dataset,
        grid=teacher.patch_grid(*frame_size),
        dim=teacher.dim,
    )


def checksum(tensor: torch.Tensor) -> str:
    """CRC32 of a tensor's bytes, as 8 hex digits (fixed width: the writer patches it in place)."""
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
    return f"{zlib.crc32(memoryview(data)) & 0xFFFFFFFF:08x}"


def tensor_name(step: int, camera: str) -> str:
    """The name of one frame's tensor inside an episode file."""
    return f"{int(step)}/{camera}"


def entry_stem(episode: str) -> str:
    """A file name for an episode id: readable prefix plus a hash so ids never collide."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", episode)[:80].strip("._") or "episode"
    return f"{readable}-{hashlib.blake2b(episode.encode(), digest_size=6).hexdigest()}"


def spec_diff(a: CacheSpec, b: CacheSpec) -> str:
    """The fields in which two specs differ, for error messages."""
    diffs = [f"{k}: {v!r} vs {getattr(b, k)!r}" for k, v in asdict(a).items() if v != getattr(b, k)]
    return "; ".join(diffs) or "format"


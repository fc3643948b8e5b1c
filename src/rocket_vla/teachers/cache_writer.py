"""Write one teacher-cache entry (an episode file), streaming, then rename it into place."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.cache_files import temp_path
from rocket_vla.teachers.cache_format import STORE_DTYPE, checksum, tensor_name

if TYPE_CHECKING:
    from rocket_vla.teachers.cache import FeatureCache


class EntryWriter:
    """Writes one episode file in the safetensors format, streaming, then renames it in.

    The header (tensor table and metadata) is written first with fixed-width checksum
    placeholders; tensors follow in step order as they are computed; the placeholders
    are then overwritten with the real CRC32s (same byte length, so offsets hold) and
    the temporary file is renamed over the entry. A crash leaves only a temp file.
    """

    def __init__(self, cache: FeatureCache, episode: str, steps: Sequence[int]) -> None:
        spec = cache.spec
        self.cache, self.episode = cache, episode
        self.steps = [int(v) for v in steps]
        if len(set(self.steps)) != len(self.steps):
            raise RocketError(f"episode {episode!r} lists a step twice; step indices must be unique.")
        self.shape = (len(spec.layers), *spec.grid, spec.dim)
        nbytes = 2 * math.prod(self.shape)
        self.names = [tensor_name(t, c) for t in self.steps for c in spec.cameras]
        table: dict[str, object] = {}
        for i, name in enumerate(self.names):
            table[name] = {"dtype": "F16", "shape": list(self.shape),
                           "data_offsets": [i * nbytes, (i + 1) * nbytes]}
        self._table = table
        self._meta = {
            "spec": cache.spec.key(),
            "episode": episode,
            "steps": json.dumps(self.steps),
        }
        self.checksums = {name: "0" * 8 for name in self.names}
        self.path = cache.path(episode)
        self.tmp = temp_path(self.path)
        self._handle = self.tmp.open("wb")
        self._header_len = len(self._header())
        self._next = 0
        try:
            self._handle.write(self._header())
        except BaseException:
            self.discard()
            raise

    def _header(self) -> bytes:
        meta = {**self._meta, "checksums": json.dumps(self.checksums, sort_keys=True)}
        body = json.dumps({"__metadata__": meta, **self._table}, separators=(",", ":")).encode()
        body += b" " * (-len(body) % 8)
        return len(body).to_bytes(8, "little") + body

    def add(self, features: Sequence[torch.Tensor]) -> None:
        """Append the next steps: ``features`` per layer [n, S, h, w, C]."""
        spec = self.cache.spec
        if len(features) != len(spec.layers):
            raise RocketError(
                f"expected features for {len(spec.layers)} layers, got {len(features)}."
            )
        stacked = torch.stack([f.detach().to("cpu", STORE_DTYPE) for f in features], dim=2)
        n = stacked.shape[0]
        expected = (n, len(spec.cameras), *self.shape)
        got = (stacked.shape[0], stacked.shape[1], *stacked.shape[2:])
        if got != expected or self._next + n * len(spec.cameras) > len(self.names):
            raise RocketError(
                f"features of shape {tuple(features[0].shape)} do not match the cache spec "
                f"(grid {spec.grid}, width {spec.dim}, {len(self.steps)} steps); the teacher "
                "or frame size changed -- start a new cache."
            )
        for i in range(n):
            for j in range(len(spec.cameras)):
                tensor = stacked[i, j].contiguous()  # [L, h, w, C]
                name = self.names[self._next]
                self.checksums[name] = checksum(tensor)
                self._handle.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
                self._next += 1

    def commit(self) -> Path:
        """Finish the file and move it over the entry atomically."""
        if self._next != len(self.names):
            raise RocketError(
                f"episode {self.episode!r} got features for {self._next} of {len(self.names)} "
                "frames; feed every step before committing."
            )
        header = self._header()
        assert len(header) == self._header_len  # fixed-width checksums keep the offsets
        self._handle.seek(0)
        self._handle.write(header)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.tmp, self.path)
        self.cache.forget(self.path)
        return self.path

    def discard(self) -> None:
        """Drop an unfinished file (no-op after commit).

        On a full disk closing fails too (the buffered bytes cannot be flushed); the handle
        is closed all the same and the temp file must still go."""
        try:
            if not self._handle.closed:
                self._handle.close()
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


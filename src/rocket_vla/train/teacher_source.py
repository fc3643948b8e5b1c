"""Where the training loop gets teacher features: a live teacher or precomputed ones.

The loop asks one question per step -- "full-frame patch features of these layers for the
frames of this batch" -- and does not care whether they are computed now or read back.
Both answers are full-frame grids ``[B, S, h, w, C]``; the student's random crop is applied
afterwards by the aligner's crop-box resampling, so live and cached features are
interchangeable bit for bit (up to the cache's float16 storage). Cached features come from
a ``rocket cache-teacher`` directory (:class:`DiskCacheTeacher`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from rocket_vla.errors import RocketError


class TeacherSource(Protocol):
    """``dim``/``num_layers`` describe the features; ``features`` answers one batch."""

    dim: int
    num_layers: int

    def features(self, batch: dict[str, Any], frames: torch.Tensor,
                 layers: Sequence[int]) -> list[torch.Tensor]:
        """Per requested layer ``[B, S, h, w, C]`` for the batch's full frames ``[B, S, 3, H, W]``."""


class LiveTeacher:
    """Runs a :class:`~rocket_vla.teachers.base.Teacher` on every batch (frozen, no_grad)."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher
        self.dim = int(teacher.dim)
        self.num_layers = int(teacher.num_layers)

    def features(self, batch: dict[str, Any], frames: torch.Tensor,
                 layers: Sequence[int]) -> list[torch.Tensor]:
        return self.teacher.features(frames, list(layers))


class DiskCacheTeacher:
    """Features from a ``rocket cache-teacher`` directory (episode ids = dataset positions).

    The cache holds only the layers it was filled with, so ``layers`` exposes them: a run
    without explicit ``--teacher_layers`` aligns to (a balanced subset of) those.
    ``dataset_fingerprint`` (of the files the run trains on) must match the one the cache
    was built from: entries are keyed by episode position, so another dataset's features
    would otherwise be read for this dataset's frames without any error. A cache filled by
    other rocket-vla code is refused as `rocket cache-teacher` refuses it.
    """

    def __init__(self, root: str, cameras: Sequence[str], dataset_fingerprint: str | None = None
                 ) -> None:
        from rocket_vla.teachers.cache import FeatureCache

        self.cache = FeatureCache.open(root)
        self.cache.check_code(
            f"rerun `rocket cache-teacher --dataset DATA --out_dir {root} --overwrite` with this "
            "code, or fill a new cache folder and pass that as --teacher_cache."
        )
        spec = self.cache.spec
        if dataset_fingerprint is not None and spec.dataset != dataset_fingerprint:
            raise RocketError(
                f"the teacher cache at {root} was built from another dataset (fingerprint "
                f"{spec.dataset}, this dataset's is {dataset_fingerprint}); run `rocket "
                "cache-teacher` on this dataset into a new folder and pass that."
            )
        if tuple(spec.cameras) != tuple(cameras):
            raise RocketError(
                f"the teacher cache at {root} holds cameras {list(spec.cameras)} but training "
                f"feeds {list(cameras)}; rebuild it with --cameras {','.join(cameras)}."
            )
        self.layers = [int(x) for x in spec.layers]
        self.dim = int(spec.dim)
        self.num_layers = max(self.layers)

    def features(self, batch: dict[str, Any], frames: torch.Tensor,
                 layers: Sequence[int]) -> list[torch.Tensor]:
        missing = [x for x in layers if x not in self.layers]
        if missing:
            raise RocketError(
                f"teacher layers {missing} are not in the cache (it has {self.layers}); "
                "rerun `rocket cache-teacher` with those layers."
            )
        # Each stored tensor is checksummed the first time this process reads it.
        rows = [self.cache.read(str(int(e)), [int(s)])
                for e, s in zip(batch["episode"], batch["step"], strict=True)]
        return [torch.cat([r[self.layers.index(x)] for r in rows]).float() for x in layers]

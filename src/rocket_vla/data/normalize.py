"""q01/q99 normalisation of actions and proprio to [-1, 1] (the OpenVLA convention).

Why quantiles and not min/max: a few outlier actions in teleoperated (or scripted) data
would otherwise squash the bulk of the range into a sliver of [-1, 1]. The statistics are
part of the trained model -- a checkpoint stores them and the evaluation policy
un-normalises with exactly the numbers training used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rocket_vla.errors import RocketError

#: Below this range a dimension is treated as constant (mapped to 0, restored as q01).
MIN_RANGE = 1e-8


@dataclass
class NormStats:
    """Per-dimension low/high quantiles. ``normalize`` maps [low, high] onto [-1, 1] and clips."""

    low: np.ndarray
    high: np.ndarray

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        if self.low.shape != self.high.shape:
            raise RocketError(
                f"normalisation bounds have shapes {self.low.shape} and {self.high.shape}; "
                "recompute the statistics."
            )
        if np.any(self.high < self.low) or not np.all(np.isfinite(self.low + self.high)):
            raise RocketError("normalisation bounds are not finite or high < low; recompute them.")

    @classmethod
    def fit(cls, values: np.ndarray, q_low: float = 0.01, q_high: float = 0.99) -> NormStats:
        """Quantiles over all rows of ``values`` ``[N, D]``."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise RocketError(
                f"need a non-empty [N, D] array to fit normalisation, got shape {arr.shape}."
            )
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:  # quantiles would hide an inf (later clipped to the bound) or turn NaN
            row, col = (int(v) for v in bad[0])
            raise RocketError(
                f"the data to fit normalisation holds {arr[row, col]} at row {row}, dim {col}; "
                "actions and proprio must be finite, fix or drop that episode."
            )
        return cls(np.quantile(arr, q_low, axis=0), np.quantile(arr, q_high, axis=0))

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    def _scale(self) -> tuple[np.ndarray, np.ndarray]:
        span = self.high - self.low
        constant = span < MIN_RANGE
        return np.where(constant, 1.0, span), constant

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``2 (x - low) / (high - low) - 1`` clipped to [-1, 1]; constant dims become 0."""
        x = np.asarray(x, dtype=np.float64)
        self._check(x)
        span, constant = self._scale()
        y = np.clip(2.0 * (x - self.low) / span - 1.0, -1.0, 1.0)
        return np.where(constant, 0.0, y).astype(np.float32)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize` on [-1, 1] (values outside are clipped first)."""
        y = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
        self._check(y)
        span, constant = self._scale()
        x = (y + 1.0) * 0.5 * span + self.low
        return np.where(constant, self.low, x)

    def _check(self, x: np.ndarray) -> None:
        if x.shape[-1] != self.dim:
            raise RocketError(
                f"normalisation statistics have {self.dim} dims but the data has "
                f"{x.shape[-1]}; the checkpoint was trained on other data."
            )

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormStats:
        try:
            return cls(np.asarray(data["low"]), np.asarray(data["high"]))
        except (KeyError, TypeError) as err:
            raise RocketError(
                f"normalisation statistics are malformed ({err}); the checkpoint is damaged."
            ) from err


@dataclass
class DatasetStats:
    """The statistics a policy is trained with: one :class:`NormStats` per stream."""

    action: NormStats
    proprio: NormStats

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.to_dict(), "proprio": self.proprio.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetStats:
        return cls(NormStats.from_dict(data["action"]), NormStats.from_dict(data["proprio"]))

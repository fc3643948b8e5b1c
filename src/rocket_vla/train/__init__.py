"""Training: the loop (Accelerate), its config, atomic checkpoints and teacher sources."""

from rocket_vla.train.config import TrainConfig
from rocket_vla.train.loop import Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train"]

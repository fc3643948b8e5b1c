"""Reading tensors back: safetensors files and strict state-dict loads, each failure one sentence.

Why a module of its own: checkpoints are read by the trainer (``train/``, to resume) and by
evaluation (``policies/``, to act), which must not import each other; both need the same
damaged-file and mismatched-key messages.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rocket_vla.errors import RocketError


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a file that does not parse is one clear error."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any parse failure means a damaged file
        raise RocketError(
            f"{path} is not a readable safetensors file ({type(err).__name__}); it is truncated or "
            "damaged -- pass another checkpoint (step_*) or retrain."
        ) from err


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str, fix: str) -> None:
    """``module.load_state_dict(state)`` that names missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise RocketError(
            f"{where} does not match (missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]}, shape mismatches {shapes[:5]}); {fix}"
        )
    module.load_state_dict(state)

"""Stopping training before a non-finite loss reaches the weights, on every rank at once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rocket_vla.errors import RocketError
from rocket_vla.train import checkpoint as ckpt_io


def any_rank(acc: Any, bad: bool) -> bool:
    """True when ``bad`` holds on any rank: every rank takes the same decision (one
    all-reduce), so no process is left waiting for the others."""
    flag = torch.tensor([1.0 if bad else 0.0], device=acc.device)
    if acc.num_processes > 1:
        flag = acc.reduce(flag, reduction="sum")
    return float(flag.sum()) > 0


def stop_if_not_finite(acc: Any, step: int, totals: dict[str, float], out_dir: Path) -> None:
    """Stop before a non-finite loss reaches the weights (no optimizer step, no checkpoint).

    A NaN loss makes every later step NaN, so training on would only overwrite good
    checkpoints with garbage. The checkpoint pending from the step before is dropped too:
    its weights are the ones that gave this loss.
    """
    if not any_rank(acc, not math.isfinite(totals["total"])):
        return
    raise RocketError(
        f"the training loss became non-finite at step {step + 1} (action {totals['action']}, total "
        f"{totals['total']}); {ckpt_io.after_bad_step(out_dir)}"
    )


def refuse_non_finite_last(acc: Any, step: int, loss: float, out_dir: Path) -> None:
    """Refuse to save the run's last weights when the loss at them is not finite (any rank)."""
    if any_rank(acc, not math.isfinite(loss)):
        raise RocketError(
            f"the loss at the weights of step {step} is not finite ({loss}), so they were not "
            f"saved; {ckpt_io.after_bad_step(out_dir)}"
        )

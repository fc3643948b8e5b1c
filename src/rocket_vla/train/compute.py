"""The compute a training run spent, cumulative across resumes, and its FLOPs estimate.

Success is compared against compute, not against steps: two runs with different batch
sizes, process counts or students take steps of different cost. So every run records
what it spent -- samples seen, wall seconds, CPU seconds -- in each ``metrics.jsonl`` row,
in each checkpoint (``trainer_state.pt`` holds the totals a resume continues from;
``config.json`` repeats them with the parameter counts) and in the ``TrainResult``.

* ``samples_seen``: training samples consumed by optimizer steps, over all processes
  (``batch_size x grad_accum x processes`` per step); it is the data stream's position,
  so a resumed run counts exactly as an uninterrupted one.
* ``train_wall_s``: seconds inside the training loop (steps, logging, checkpoint writes),
  the slowest process's when there are several; building the trainer is not counted.
* ``train_cpu_s``: ``time.process_time()`` of the training processes over the same span,
  summed over processes (each rank's own CPU time, data loading and the teacher included;
  GPU time is not CPU time, so a GPU run shows little here).

Wall and CPU seconds are measurements and differ between identical runs; the samples
and parameter counts do not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

#: Keys of a run's compute record that a resume continues from (``trainer_state.pt``).
TOTALS = ("samples_seen", "train_wall_s", "train_cpu_s")


class ComputeClock:
    """Wall and CPU seconds of training, continuing the totals a checkpoint saved."""

    def __init__(self, saved: Mapping[str, Any] | None = None) -> None:
        saved = saved or {}
        self.wall_s = float(saved.get("train_wall_s", 0.0))
        self.cpu_s = float(saved.get("train_cpu_s", 0.0))
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def start(self) -> None:
        """Count from now on (the totals so far stay)."""
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def totals(self, acc: Any, samples_seen: int) -> dict[str, float | int]:
        """The run's totals now: saved totals plus this session's time on every process.

        With several processes every rank must call it at the same point (one all-reduce
        each for the slowest wall time and the summed CPU time); the saved totals are added
        after the reduction, so a resume does not count them once per rank.
        """
        wall = torch.tensor([time.perf_counter() - self._wall0], dtype=torch.float64,
                            device=acc.device)
        cpu = torch.tensor([time.process_time() - self._cpu0], dtype=torch.float64,
                           device=acc.device)
        if acc.num_processes > 1:
            wall = acc.reduce(wall, reduction="max")
            cpu = acc.reduce(cpu, reduction="sum")
        return {"samples_seen": int(samples_seen),
                "train_wall_s": round(self.wall_s + float(wall.item()), 3),
                "train_cpu_s": round(self.cpu_s + float(cpu.item()), 3)}


def model_size(policy: Any, aligner: Any) -> dict[str, int | None]:
    """Parameter counts a FLOPs estimate needs, and the student's tokens per sample.

    ``tokens_per_sample`` is the length of the sequence the student's blocks run per
    training sample, read from a ``tokens_per_sample`` attribute when the student exposes
    one (None otherwise: the FLOPs estimate then needs it from the user).
    """
    tokens = getattr(policy, "tokens_per_sample", None)
    return {
        "params_total": int(policy.num_parameters()),
        "params_trainable": int(policy.num_parameters(trainable=True)),
        "aligner_params": int(sum(p.numel() for p in aligner.parameters())),
        "tokens_per_sample": int(tokens) if isinstance(tokens, int) else None,
    }


def training_flops(params_total: int, params_trainable: int, tokens_per_sample: int,
                   samples: int) -> float:
    """Student training FLOPs by the standard ``6 x params x tokens`` rule.

    A transformer's forward pass costs about 2 FLOPs per parameter per token (one
    multiply-add per weight); the backward pass about twice that: 2 for the gradients of
    the activations and 2 for the gradients of the weights. So a training sample of ``T``
    tokens costs ``6 N T`` with every weight trained. Weights that are frozen (LoRA's base)
    skip their weight gradients but still pass activation gradients down, so they cost 4
    instead of 6: ``(4 N_total + 2 N_trainable) T`` per sample, which is ``6 N T`` when all
    are trained.

    Limits: attention's sequence-length-squared term, embeddings (counted as if they were
    matrix multiplies), normalisation and the optimizer update are left out, so the
    estimate is low for long sequences and small widths; activation recomputation under
    gradient checkpointing adds another forward (``2 N T``) that is not counted. The
    aligner's projector is tiny next to the student and is not included here.
    """
    per_token = 4 * params_total + 2 * params_trainable
    return float(per_token) * tokens_per_sample * samples


def teacher_flops(params: int, tokens_per_frame: int, frames: int) -> float:
    """Teacher FLOPs: forward only (the teacher is frozen), ``2 x params x tokens`` a frame.

    What ``frames`` is depends on where the features come from: a live teacher runs on
    every sample the student sees (``samples_seen x cameras`` frames: the cost grows with
    training), a teacher cache is filled once (every frame of the dataset, once per camera)
    and reading it costs no teacher FLOPs however long training runs.
    """
    return 2.0 * params * tokens_per_frame * frames

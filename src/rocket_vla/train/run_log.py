"""A run's logs: metrics.jsonl rows, TensorBoard scalars, the progress bar, the data order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def describe_run(cfg: Any, policy: Any, align: Any, samples: int, acc: Any) -> str:
    """The line a run prints when it starts: variant, student and its size, data, processes
    and the alignment pairs, so a log says what it trained without the config at hand."""
    pairs = (f"student {align.student_layers} <-> teacher {align.teacher_layers} "
             f"(index k = stream after block k), projector={align.projector}, "
             f"matryoshka={align.matryoshka}, weight={align.weight}" if align.enabled
             else "no alignment (no teacher)")
    preset = f"-{cfg.student_preset}" if cfg.student_preset else ""
    lora = f", LoRA r={cfg.lora_rank}" if cfg.lora_rank else ""
    return (f"variant={cfg.variant} | {policy.kind}{preset} "
            f"{policy.num_parameters() / 1e6:.2f}M params "
            f"({policy.num_parameters(trainable=True) / 1e6:.2f}M trained{lora}) | "
            f"{samples} samples | {acc.num_processes} process(es) "
            f"({acc.distributed_type.value}) | {pairs}")


def trim_metrics(path: Path, step: int) -> None:
    """Keep only the metrics rows up to ``step`` (rewritten atomically)."""
    if not path.is_file():
        return
    from rocket_vla import records

    kept = [r for r in records.read(path) if int(r.get("step", 0)) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is in the [train] extra
        print("[rocket train] tensorboard is not installed; logging to metrics.jsonl only")
        return None
    return SummaryWriter(str(path))


def progress_bar(total: int, initial: int, enabled: bool) -> Iterator[Any] | Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


class RunLog:
    """One ``fit``'s outputs: ``metrics.jsonl`` rows, TensorBoard scalars, the progress bar.

    Only the main process writes (``main``); the others get a log that writes nothing, so
    the loop calls it the same way on every rank. Rows past ``step`` (the resumed step, or
    all of them for a fresh run) belong to no checkpoint and are dropped when it opens.
    """

    def __init__(self, out_dir: Path, steps: int, step: int, *, main: bool, tensorboard_on: bool,
                 progress: bool) -> None:
        self.writer = tensorboard(out_dir / "tb") if (main and tensorboard_on) else None
        self.bar = progress_bar(steps, step, main and progress)
        if main:
            trim_metrics(out_dir / "metrics.jsonl", step)
        self.metrics = (out_dir / "metrics.jsonl").open("a") if main else None

    def row(self, row: dict[str, Any]) -> None:
        """Write one metrics row (and show its losses on the bar)."""
        if self.metrics is None:
            return
        log_row(self.writer, self.metrics, row)
        if self.bar is not None:
            pairs = row["pairs"]
            self.bar.set_postfix(action=f"{row['action']:.4f}",
                                 align=f"{sum(pairs) / max(1, len(pairs)):.4f}")

    def advance(self) -> None:
        """One step done."""
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        for handle in (self.bar, self.writer, self.metrics):
            if handle is not None:
                handle.close()


def log_samples(folder: Path, step: int, micro: int, start: int, order: np.ndarray,
                rank: int, processes: int) -> None:
    """Append this rank's dataset indices to ``folder/rank<k>.jsonl``, so the data order of a
    run (and of its resumes, with any number of processes) can be audited afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    row = {"step": step, "micro": micro, "start": start, "processes": processes,
           "indices": [int(i) for i in order]}
    with (folder / f"rank{rank}.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def log_row(writer: Any, metrics_file: Any, row: dict[str, Any]) -> None:
    step = row["step"]
    if writer is not None:
        writer.add_scalar("loss/total", row["total"], step)
        writer.add_scalar("loss/action_l1", row["action"], step)
        for i, v in enumerate(row["pairs"]):
            writer.add_scalar(f"align/pair_{i}", v, step)
        if row["pairs"]:
            writer.add_scalar("loss/align", sum(row["pairs"]) / len(row["pairs"]), step)
        writer.add_scalar("opt/lr", row["lr"], step)
        writer.add_scalar("opt/grad_norm", row["grad_norm"], step)
        writer.add_scalar("perf/samples_per_s", row["samples_per_s"], step)
        writer.add_scalar("compute/samples_seen", row["samples_seen"], step)
        writer.add_scalar("compute/train_wall_s", row["train_wall_s"], step)
        writer.add_scalar("compute/train_cpu_s", row["train_cpu_s"], step)
    if metrics_file is not None:
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()

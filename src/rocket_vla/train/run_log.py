"""A run's logs: metrics.jsonl rows, TensorBoard scalars, the progress bar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
    if metrics_file is not None:
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()

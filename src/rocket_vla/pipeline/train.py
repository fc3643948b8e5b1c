"""One training run of the demo or the study, resumed from its last checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rocket_vla.train.config import TrainConfig


def train_run(tcfg: TrainConfig) -> dict[str, Any]:
    """One ``rocket train`` run, resumed from its last checkpoint if one is there; returns
    its summary with the metrics history."""
    from rocket_vla import records
    from rocket_vla.train.loop import train

    out = Path(tcfg.out_dir)
    resume = str(out) if (out / "checkpoints" / "latest").is_file() else None
    start = time.perf_counter()
    result = train(tcfg, resume=resume)
    return {"variant": tcfg.variant, "seed": tcfg.seed, "checkpoint": str(result.checkpoint),
            "steps": result.step, "train_seconds": round(time.perf_counter() - start, 1),
            "samples_per_s": round(result.samples_per_s, 1),
            "history": records.read(out / "metrics.jsonl")}

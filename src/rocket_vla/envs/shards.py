"""Evaluation across machines: deterministic shards of the (task, trial) list, and their merge.

A cluster job array runs ``rocket eval --shard K/N --out_dir run_K`` on N machines; every shard
lists the same (suite, task, trial) items in the same order and keeps the K-th contiguous
block of them, so the N folders together hold each episode exactly once whatever finished
first. Contiguous blocks (not round-robin) keep a shard's trials of one task together: one
environment per task, and under the official seeding a shard replays the fixture stream
only up to its first trial of each task.

``rocket eval --merge DIR... --out_dir OUT`` then combines the folders: it refuses folders whose
recorded protocol settings differ (an episode measured at 128 px does not average with one
at 256 px) and episodes that appear twice, and writes one ``episodes.jsonl`` plus the usual
summary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from rocket_vla.errors import RocketError

T = TypeVar("T")


def check_shard(k: int, n: int) -> tuple[int, int]:
    """Validate a 0-based shard index ``k`` of ``n`` shards."""
    if not (isinstance(k, int) and isinstance(n, int)) or n < 1 or not 0 <= k < n:
        raise RocketError(f"shard {k}/{n} is out of range; use --shard K/N with 0 <= K < N.")
    return k, n


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/8"`` -> ``(2, 8)`` (0-based: the shards of 8 are 0/8 .. 7/8)."""
    if text is None:
        return None
    k, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        index, count = int(k), int(n)
    except ValueError:
        raise RocketError(f"--shard {text!r} is not K/N; write e.g. --shard 0/4 (K from 0 to N-1).") from None
    return check_shard(index, count)


def shard_slice(items: Sequence[T], k: int, n: int) -> list[T]:
    """The k-th of n contiguous blocks of ``items``; block sizes differ by at most one."""
    k, n = check_shard(k, n)
    total = len(items)
    return list(items[k * total // n:(k + 1) * total // n])


def merge_runs(dirs: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Combine evaluation folders into ``out`` and return the summary written there.

    Every folder must hold a ``run_config.json`` (written by ``rocket eval``) with the same
    protocol settings; an episode (suite, task, trial) may appear in only one folder.
    """
    from rocket_vla.envs.runner import PROTOCOL_FIELDS, RESULTS_FILE, read_results, write_summary
    from rocket_vla.envs.simstack import check_same_stack

    if not dirs:
        raise RocketError("--merge needs at least one evaluation folder.")
    out = Path(out)
    reference: dict[str, Any] | None = None
    ref_dir: Path | None = None
    config: dict[str, Any] = {}
    stack: dict[str, Any] | None = None
    seen: dict[tuple[str, int, int], Path] = {}
    records: list[dict[str, Any]] = []
    for d in map(Path, dirs):
        cfg_path = d / "run_config.json"
        if not cfg_path.is_file():
            raise RocketError(f"{d} has no run_config.json; pass folders written by `rocket eval`.")
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
        protocol = {k: saved.get("protocol", {}).get(k) for k in PROTOCOL_FIELDS}
        if reference is None:
            reference, ref_dir, config = protocol, d, saved.get("config", {})
            stack = saved.get("simulator")
            if not stack:
                raise RocketError(f"{d} records no simulator stack (made by an older version); re-run it "
                                  "before merging.")
        else:
            check_same_stack(saved.get("simulator"), stack or {}, str(d),
                             f"merge only folders evaluated on the same simulator stack as {ref_dir}.")
            diff = [k for k in PROTOCOL_FIELDS if protocol[k] != reference[k]]
            if diff:
                raise RocketError(
                    f"{d} was evaluated with different {', '.join(diff)} than {ref_dir}; merge only "
                    "folders run with the same settings."
                )
        for rec in read_results(d / RESULTS_FILE):
            key = (rec["suite"], int(rec["task_id"]), int(rec["trial"]))
            if key in seen:
                raise RocketError(
                    f"{key[0]} task {key[1]} trial {key[2]} is in both {seen[key]} and {d}; merge "
                    "folders of disjoint shards."
                )
            seen[key] = d
            records.append(rec)
    if out.resolve() in {Path(d).resolve() for d in dirs}:
        raise RocketError(f"--out_dir {out} is one of the merged folders; write the merge to a new folder.")
    if (out / RESULTS_FILE).exists():
        raise RocketError(f"{out} already holds results; write the merge to a new --out_dir folder.")
    out.mkdir(parents=True, exist_ok=True)
    records.sort(key=lambda r: (r["suite"], int(r["task_id"]), int(r["trial"])))
    tmp = out / (RESULTS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out / RESULTS_FILE)
    config = {**config, "out_dir": str(out), "shard": None}
    (out / "run_config.json").write_text(
        json.dumps({"protocol": reference, "config": config, "simulator": stack,
                    "merged_from": [str(d) for d in dirs]}, indent=2), encoding="utf-8")
    return write_summary(out)

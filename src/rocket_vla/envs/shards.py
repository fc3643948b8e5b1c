"""Evaluation across machines: deterministic shards of the (task, trial) list, and their merge.

A cluster job array runs ``rocket eval --shard K/N --out_dir run_K`` on N machines; every shard
lists the same (suite, task, trial) items in the same order and keeps the K-th contiguous
block of them, so the N folders together hold each episode exactly once whatever finished
first. Contiguous blocks (not round-robin) keep a shard's trials of one task together: one
environment per task, and under the official seeding a shard replays the fixture stream
only up to its first trial of each task.

``rocket eval --merge DIR... --out_dir OUT`` then combines the folders: it refuses folders whose
recorded protocol settings, simulator stack or code differ (an episode measured at 128 px does
not average with one at 256 px), a shard still running (its folder lock is held) or stopped
before it finished (fewer episodes than its run planned), and episodes that appear twice, and
writes one ``episodes.jsonl`` plus the usual summary.
"""

from __future__ import annotations

import contextlib
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
    protocol settings, simulator stack and code version, must be finished (no `rocket eval`
    holds its lock, and it holds every episode its run planned), and an episode (suite, task,
    trial) may appear in only one folder. The shards' locks are held while they are read, so
    none can be resumed halfway through the merge.
    """
    from rocket_vla.envs.runner import RESULTS_FILE, RUN_CONFIG, read_results, write_summary
    from rocket_vla.records import FolderLock, write_json_atomic

    if not dirs:
        raise RocketError("--merge needs at least one evaluation folder.")
    out = Path(out)
    folders = [Path(d) for d in dirs]
    for d in folders:
        if not (d / RUN_CONFIG).is_file():
            raise RocketError(f"{d} has no {RUN_CONFIG}; pass folders written by `rocket eval`.")
    if out.resolve() in {d.resolve() for d in folders}:
        raise RocketError(f"--out_dir {out} is one of the merged folders; write the merge to a new folder.")
    if (out / RESULTS_FILE).exists():
        raise RocketError(f"{out} already holds results; write the merge to a new --out_dir folder.")
    with contextlib.ExitStack() as locks:
        for d in folders:
            locks.enter_context(FolderLock(d, "rocket eval", "wait for it to finish, then merge.",
                                           shared=True))
        shards = [_read_shard(d, RUN_CONFIG) for d in folders]
        ref = shards[0]
        for shard in shards[1:]:
            _check_mergeable(shard, ref)
        seen: dict[tuple[str, int, int], Path] = {}
        records: list[dict[str, Any]] = []
        planned = 0
        for shard in shards:
            records += _shard_records(shard, read_results(shard["dir"] / RESULTS_FILE), seen)
            planned += shard["planned_episodes"]
    out.mkdir(parents=True, exist_ok=True)
    records.sort(key=lambda r: (r["suite"], int(r["task_id"]), int(r["trial"])))
    tmp = out / (RESULTS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out / RESULTS_FILE)
    config = {**ref["config"], "out_dir": str(out), "shard": None}
    write_json_atomic(out / RUN_CONFIG, {
        "protocol": ref["protocol"], "config": config, "simulator": ref["simulator"],
        "code_version": ref["code_version"], "checkpoint": ref["checkpoint"],
        "planned_episodes": planned, "merged_from": [str(d) for d in folders]})
    return write_summary(out)


def _read_shard(d: Path, name: str) -> dict[str, Any]:
    """One folder's run_config.json, refused when it lacks what a merge must compare."""
    from rocket_vla.envs.runner import PROTOCOL_KEYS

    try:
        saved = json.loads((d / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RocketError(f"{d / name} is unreadable ({type(err).__name__}); re-run that shard into a new "
                          "folder before merging.") from None
    if not isinstance(saved, dict):
        saved = {}
    for key, what in (("simulator", "simulator stack"), ("code_version", "code version")):
        if not saved.get(key):
            raise RocketError(f"{d} records no {what} (made by an older version); re-run it before merging.")
    planned = saved.get("planned_episodes")
    if not isinstance(planned, int):
        raise RocketError(f"{d} does not record how many episodes its run planned (it stopped before "
                          "planning, or an older version made it); resume it with its `rocket eval` "
                          "command, then merge.")
    return {"dir": d, "protocol": {k: (saved.get("protocol") or {}).get(k) for k in PROTOCOL_KEYS},
            "config": saved.get("config") or {}, "simulator": saved["simulator"],
            "code_version": saved["code_version"], "checkpoint": saved.get("checkpoint"),
            "planned_episodes": planned}


def _check_mergeable(shard: dict[str, Any], ref: dict[str, Any]) -> None:
    """Refuse a folder evaluated on another stack, by other code, or with other settings."""
    from rocket_vla.envs.simstack import check_same_stack
    from rocket_vla.fingerprint import COMPARED

    d, ref_dir = shard["dir"], ref["dir"]
    check_same_stack(shard["simulator"], ref["simulator"], str(d),
                     f"merge only folders evaluated on the same simulator stack as {ref_dir}.")
    code = [f"{k} {shard['code_version'].get(k)!r} vs {ref['code_version'].get(k)!r}" for k in COMPARED
            if shard["code_version"].get(k) != ref["code_version"].get(k)]
    if code:
        raise RocketError(f"{d} was evaluated by other rocket-vla code than {ref_dir} ({'; '.join(code)}); "
                          "merge only folders evaluated by the same code (re-run the odd ones).")
    diff = [k for k in ref["protocol"] if shard["protocol"][k] != ref["protocol"][k]]
    if diff:
        raise RocketError(
            f"{d} was evaluated with different {', '.join(diff)} than {ref_dir}; merge only "
            "folders run with the same settings."
        )


def _shard_records(shard: dict[str, Any], recs: list[dict[str, Any]],
                   seen: dict[tuple[str, int, int], Path]) -> list[dict[str, Any]]:
    """A finished shard's episodes, each once; refused when another folder has one of them or
    when fewer episodes than planned were recorded (the shard was killed before it finished)."""
    d = shard["dir"]
    own: dict[tuple[str, int, int], dict[str, Any]] = {}
    for rec in recs:
        key = (rec["suite"], int(rec["task_id"]), int(rec["trial"]))
        if key in seen:
            raise RocketError(
                f"{key[0]} task {key[1]} trial {key[2]} is in both {seen[key]} and {d}; merge "
                "folders of disjoint shards."
            )
        own.setdefault(key, rec)  # a record written twice counts once
    missing = shard["planned_episodes"] - len(own)
    if missing > 0:
        raise RocketError(
            f"{d} is missing {missing} of its {shard['planned_episodes']} planned episodes (it was "
            "stopped before it finished); resume that shard with its `rocket eval` command and the "
            "same --out_dir, then merge."
        )
    seen.update(dict.fromkeys(own, d))
    return list(own.values())

"""Run-folder records that survive kills and refuse concurrent writers.

``rocket eval`` and ``rocket collect`` append one JSON line per finished episode and a
rerun skips what is recorded. Three faults break that contract, and this module owns the
fix for each:

* two processes writing into the same folder would both run (and record) every episode:
  :class:`FolderLock` takes an exclusive ``flock`` on ``<folder>/.lock`` for the whole run,
  and the second process is refused with one sentence (the lock dies with its process, so
  a kill -9 never leaves a stale lock behind);
* a kill mid-write leaves a torn last line, and the next record appended would be glued
  onto it and lost: :func:`open_for_append` cuts the torn tail before appending;
* records written twice (a hand-merged folder, say) must not count twice:
  :func:`unique` keeps the first record of each key.

Settings and code version of a run folder are compared by :func:`check_settings`, which also
refuses a folder holding records whose settings file is gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import IO, Any

from rocket_vla.errors import RocketError

LOCK_FILE = ".lock"


class FolderLock:
    """An advisory lock on a run folder: exclusive while a run writes into it, shared while
    another command (``rocket eval --merge``) only reads it.

    Readers share: two merges may read one shard at once, but neither while a run holds it,
    and no run starts in it while they read."""

    def __init__(self, folder: str | Path, command: str,
                 fix: str = "wait for it to finish or pass another output folder.", *,
                 shared: bool = False) -> None:
        self.folder = Path(folder)
        self.command = command  # the command that writes into such folders
        self.fix = fix  # what the refusal tells this process to do
        self.shared = shared
        self._fh: IO[str] | None = None

    def __enter__(self) -> FolderLock:
        import fcntl

        fh = self._open()
        if fh is None:  # a read-only folder without a lock file: nothing can be writing into it
            return self
        try:
            fcntl.flock(fh.fileno(), (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RocketError(
                f"{self.folder} is in use by a running `{self.command}` ({holder}); {self.fix}"
            ) from None
        if not self.shared:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
        self._fh = fh
        return self

    def _open(self) -> IO[str] | None:
        """The lock file, created if need be; a reader of a read-only folder opens it read-only."""
        path = self.folder / LOCK_FILE
        if not self.shared:
            self.folder.mkdir(parents=True, exist_ok=True)
            return path.open("a+", encoding="utf-8")
        try:
            return path.open("a+", encoding="utf-8")
        except OSError:  # no write permission, or a read-only file system
            return path.open("r", encoding="utf-8") if path.is_file() else None

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the lock
            self._fh = None


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write killed midway); returns bytes removed.

    The torn record is an episode that was in flight, so the rerun repeats it; leaving the
    fragment would glue the next record onto it and lose that one too.
    """
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        keep, pos = 0, size
        block = 1 << 16
        while pos > 0:  # find the last newline, reading backwards
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep


def open_for_append(path: Path) -> IO[str]:
    """Open a JSONL record file for appending after repairing a torn tail."""
    repair_torn_tail(path)
    return path.open("a", encoding="utf-8")


def append(fh: IO[str], record: dict[str, Any]) -> None:
    """Write one record as one line and make it durable before the caller moves on."""
    fh.write(json.dumps(record) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete record; unparseable lines (a torn tail) are skipped, later ones kept."""
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                records.append(value)
    return records


def unique(records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable]
           ) -> list[dict[str, Any]]:
    """The first record of each ``key``, in file order."""
    seen: set[Hashable] = set()
    out = []
    for r in records:
        k = key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace a JSON settings file in one step: a kill mid-write leaves the old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def held_records(folder: Path) -> list[str]:
    """The record files of a run folder that hold anything (its non-empty ``*.jsonl`` files)."""
    return sorted(p.name for p in folder.glob("*.jsonl") if p.is_file() and p.stat().st_size > 0)


def check_settings(path: Path, current: dict[str, Any], fields: Iterable[str], *,
                   what: str, fix: str, section: str | None = None) -> None:
    """Refuse to resume a run folder whose recorded settings or code version differ.

    ``path`` is the folder's JSON settings file; ``section`` names the dict in it that holds
    ``fields`` (top level when None). The recorded ``code_version`` is compared as well.
    Without the file the folder is fresh only if it holds no records either: records whose
    settings file was deleted say nothing about the settings, code or simulator behind them,
    and must not be extended as if they matched.
    """
    from rocket_vla.fingerprint import check_same_code

    if not path.is_file():
        held = held_records(path.parent)
        if held:
            raise RocketError(
                f"{what} holds episode records ({', '.join(held)}) but no {path.name}, so nothing says "
                f"which settings, code and simulator made them; restore {path.name} or pass a new "
                "--out_dir folder."
            )
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RocketError(f"{path} is unreadable; pass a new output folder.") from None
    previous = saved.get(section, {}) if section else saved
    current = json.loads(json.dumps(current))  # compare as recorded (tuples become lists)
    diff = [k for k in fields if previous.get(k) != current.get(k)]
    if diff:
        raise RocketError(f"{what} holds a run with different {', '.join(diff)}; {fix}")
    check_same_code(saved.get("code_version"), what, fix)

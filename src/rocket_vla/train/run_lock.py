"""The run-folder lock of `rocket train`: one training process per ``--out_dir`` at a time.

Why: two runs started into one folder would both write checkpoints there, and the metrics
of one would be replaced by the other's (``metrics.jsonl`` is trimmed and rewritten when a
run starts). The lock is :class:`rocket_vla.records.FolderLock` (an exclusive ``flock``
on ``<out_dir>/.lock``, as `rocket eval` and `rocket collect` take it), held from the
trainer's construction -- before an ``--overwrite`` deletes anything -- to the end of its
``fit``. It dies with its process, so a kill never leaves a stale lock.

Within one process the lock is shared: several :class:`~rocket_vla.train.Trainer` objects
of one folder (a probe built next to the real run, a ``fit`` called again) are the
caller's own sequence of work, not a second writer. The folder is released when the last
lease on it ends.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rocket_vla.records import FolderLock
from rocket_vla.train.checkpoint import storage_error

COMMAND = "rocket train"
_GUARD = threading.Lock()
#: folder (resolved) -> (its lock, the number of live leases on it)
_HELD: dict[Path, tuple[FolderLock, int]] = {}


def _take(key: Path, folder: Path) -> None:
    with _GUARD:
        lock, count = _HELD.get(key, (None, 0))
        if lock is None:
            try:  # refuses a folder another process holds
                lock = FolderLock(folder, COMMAND).__enter__()
            except OSError as err:  # the folder cannot be made, or its lock file not written
                raise storage_error(err, folder, "the run folder's lock file") from err
        _HELD[key] = (lock, count + 1)


def _give(key: Path) -> None:
    with _GUARD:
        lock, count = _HELD[key]
        if count > 1:
            _HELD[key] = (lock, count - 1)
            return
        del _HELD[key]
        lock.__exit__(None, None, None)


class RunLease:
    """This process's hold on a run folder; :meth:`release` may be called any number of times."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._key = self.folder.resolve()
        self._held = False

    def acquire(self) -> RunLease:
        """Take the folder (again, after a release); a folder another process trains into is
        refused with one sentence."""
        if not self._held:
            _take(self._key, self.folder)
            self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            _give(self._key)

    @property
    def held(self) -> bool:
        return self._held

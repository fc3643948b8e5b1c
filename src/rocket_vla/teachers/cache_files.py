"""Crash-safe files for the teacher cache: atomic writes, dead temp files, a full disk.

Every file of a cache is written to a temporary name and renamed into place, so an
interrupted fill leaves either the old file or the new one. The temporary names carry
the writer's pid, which lets the next fill tell a dead writer's leftovers from a live
shard's work in progress.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rocket_vla.errors import RocketError


def temp_path(path: Path) -> Path:
    """The temporary name a writer in this process and thread uses for ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


_TEMP_PID = re.compile(r"^\..+\.(\d+)\.\d+\.tmp$")


def remove_dead_temp_files(root: str | Path) -> list[Path]:
    """Delete temporary files left by fills that were killed; returns what was removed.

    Temp names carry the writer's pid (``.<name>.<pid>.<thread>.tmp``); a file whose
    process no longer exists can never be committed. Files of live processes (another
    shard filling the same directory) are left alone.
    """
    removed = []
    root = Path(root)
    for folder in (root, root / "episodes"):
        for path in folder.glob(".*.tmp"):
            match = _TEMP_PID.match(path.name)
            if match is None or _pid_alive(int(match.group(1))):
                continue
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temp file renamed into place; a failed write (a full disk) removes
    its partial temp file instead of leaving it to the next fill."""
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: errno values of a full disk or an exhausted quota.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def disk_full_is_one_sentence(root: Path) -> Iterator[None]:
    """Report a full disk while writing the cache at ``root`` as a RocketError naming it.

    Entries are renamed into place only when complete, so whatever was finished before the
    disk filled up stays valid and a rerun continues from it."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise RocketError(
            f"the disk holding the teacher cache {root} is full; free space on it (finished "
            "episodes are kept) and rerun `rocket cache-teacher` to continue, or pass another "
            "--out_dir."
        ) from err

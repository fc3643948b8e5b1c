"""Which code made a result: the package version, a hash of its source, and the git commit.

Every resumable run folder (train, eval, collect, teacher cache, demo) records
:func:`code_version` and compares it on resume, so a stage finished by other code is never
silently reused next to one made by this code. The source hash is computed from the
installed package's own ``.py`` files, so it works from a wheel as well as from a
checkout; the git commit is added when the package sits in a git work tree (a bonus for
reading records, never compared: an uncommitted edit changes the hash, not the commit).
The CPU kernel path (:func:`rocket_vla.kernels.cpu_kernels`) is compared with the code: the
same code on other kernels computes other numbers, so it counts as other code.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError

PACKAGE_ROOT = Path(__file__).resolve().parent
#: Keys of :func:`code_version` that decide whether two runs used the same code.
COMPARED = ("version", "source", "kernels")


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """blake2b of every ``.py`` file of the package (relative path and bytes), sorted.

    Only Python sources: bundled assets (teacher weights) have their own fingerprints,
    and byte-compiled caches differ between machines without the code differing.
    """
    digest = hashlib.blake2b(digest_size=12)
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        rel = path.relative_to(PACKAGE_ROOT).as_posix()
        if "__pycache__" in rel:
            continue
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the work tree holding the package, or None (installed copy, no git)."""
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes (checkpoints record it per file and check it on load)."""
    digest = hashlib.blake2b(digest_size=16)
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def code_version() -> dict[str, Any]:
    """``{"version", "source", "git", "kernels"}`` of the running rocket-vla."""
    from rocket_vla import __version__
    from rocket_vla.kernels import cpu_kernels

    return {"version": __version__, "source": source_hash(), "git": git_commit(), "kernels": cpu_kernels()}


def compared_code_version() -> dict[str, Any]:
    """The part of :func:`code_version` that :func:`code_changes` compares."""
    current = code_version()
    return {k: current[k] for k in COMPARED}


def code_changes(recorded: dict[str, Any] | None) -> list[str]:
    """Which compared keys differ between a recorded code version and this one.

    A record without a code version (written before versions were recorded) counts as
    other code: nothing says what made it.
    """
    current = code_version()
    if not isinstance(recorded, dict):
        return ["code version (not recorded)"]
    return [f"{k} {recorded.get(k)!r} -> {current[k]!r}" for k in COMPARED
            if recorded.get(k) != current[k]]


def check_same_code(recorded: dict[str, Any] | None, what: str, fix: str) -> None:
    """Refuse to continue ``what`` (e.g. "the run folder runs/x") made by other code."""
    changes = code_changes(recorded)
    if changes and all(c.startswith("kernels ") for c in changes):
        from rocket_vla.kernels import PIN_FIX

        raise RocketError(f"{what} was computed on other CPU kernels ({changes[0]}); to continue it, "
                          f"{PIN_FIX}; else {fix}")
    if changes:
        raise RocketError(f"{what} was made by other rocket-vla code ({'; '.join(changes)}); {fix}")

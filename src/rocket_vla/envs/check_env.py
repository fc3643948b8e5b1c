"""``rocket check-env``: prove that the installed simulator reproduces the official one.

A LIBERO result is only comparable with the papers' if the simulator matches the one the
benchmark's data and evaluations came from, and nothing in an evaluation tells you when it
does not (a darker floor or a bowl that slid off its ramekin still gives a number). The
package ships a reference made with the pinned stack (``assets/libero_reference.json``):
for every task of libero_spatial, libero_object, libero_goal and libero_10 and a few init
states, the state after the official start (hard reset, ``env.seed(0)``, init state k as the
k-th reset, 10 no-op steps) as

* the pose of every object (position, quaternion),
* a fingerprint of each camera image: per-channel means and an 8x8 thumbnail (block means),
* the task's ``:init`` relations that do not hold (:mod:`rocket_vla.envs.premise`).

:func:`run_check` rebuilds the same measurements here and compares them with tolerances
that separate real drift from rendering noise across machines: a different MuJoCo shows as
centimetres and tens of grey levels (darker floors: 36 levels; a bowl sliding 4.7 cm), while
the same stack on another CPU or GL driver stays within fractions of a millimetre and a grey
level or two.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rocket_vla.errors import RocketError

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "assets" / "libero_reference.json"
REFERENCE_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
#: The --quick subset: the two tasks where newer MuJoCo drifts (task 5's bowl, the object
#: suite's floor) and the drawer scene, whose fixture draws the official start depends on.
QUICK_TASKS: tuple[tuple[str, int], ...] = (
    ("libero_spatial", 5), ("libero_object", 0), ("libero_spatial", 4))
THUMB = 8  # thumbnail side


@dataclass(frozen=True)
class Tolerances:
    """What counts as the same simulator (see the module docstring for the scales)."""

    position_mm: float = 2.0
    """largest object displacement allowed (millimetres)"""
    angle_deg: float = 1.0
    """largest object rotation allowed (degrees)"""
    channel_mean: float = 2.0
    """largest per-channel image mean difference allowed (grey levels, 0-255)"""
    thumbnail: float = 4.0
    """largest mean absolute thumbnail difference allowed (grey levels)"""


@dataclass
class CheckEnvConfig:
    """What ``rocket check-env`` measures; its flags are generated from these fields."""

    suites: list[str] = field(default_factory=lambda: list(REFERENCE_SUITES))
    """suites to check (every task of each)"""
    init_states: list[int] = field(default_factory=lambda: [0, 1])
    """init states measured per task (a reference holds these)"""
    quick: bool = False
    """check only libero_spatial 5 and 4 and libero_object 0, init state 0 (a fast smoke check)"""
    image_size: int = 128
    """camera resolution of the fingerprints"""
    num_wait: int = 10
    """no-op steps after set_init_state (the official clients' 10)"""
    workers: int = 2
    """parallel simulator processes"""
    reference: str | None = None
    """reference file (default: the one shipped with the package)"""
    write_reference: str | None = None
    """measure and write a new reference file here instead of checking"""
    premises: bool = False
    """also evaluate the :init relations of ALL init states of every task (no cameras; the
    longest part, timed in docs/benchmarks.md) and write the premise table to --out_dir"""
    out_dir: str | None = None
    """write check_env.json (and premises.{json,md}) here"""
    tolerances: Tolerances = field(default_factory=Tolerances)

    def __post_init__(self) -> None:
        from rocket_vla.envs.suites import normalize_suite

        self.suites = [normalize_suite(s) for s in self.suites]
        if not self.init_states or min(self.init_states) < 0:
            raise RocketError("--init_states must list init-state indices >= 0, e.g. [0,1].")
        if self.workers < 1:
            raise RocketError(f"--workers must be >= 1, got {self.workers}.")
        if self.num_wait < 0 or not 16 <= self.image_size <= 512:
            raise RocketError("--num_wait must be >= 0 and --image_size within 16..512.")
        if self.premises and not self.out_dir:
            raise RocketError("--premises writes a table; pass --out_dir DIR for it.")


@dataclass(frozen=True)
class CheckJob:
    """One task's measurements in one worker (one env)."""

    suite: str
    task_id: int
    items: tuple[int, ...]  # init states
    kind: str = "fingerprint"  # or "premise"


# -- measuring ------------------------------------------------------------------------------
def thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """Block means of an (H, W, 3) image on a side x side grid (H, W multiples of side)."""
    h, w, c = image.shape
    if h % side or w % side:
        raise RocketError(f"image of {h}x{w} pixels does not split into a {side}x{side} thumbnail; "
                          f"use an image size that is a multiple of {side}.")
    return image.reshape(side, h // side, side, w // side, c).astype(np.float64).mean(axis=(1, 3))


def fingerprint(image: np.ndarray) -> dict[str, Any]:
    """Per-channel means and an 8x8 thumbnail, rounded for a compact, diffable file."""
    return {"mean": [round(float(v), 3) for v in image.reshape(-1, 3).astype(np.float64).mean(0)],
            "thumb": np.round(thumbnail(image), 1).tolist()}


def object_poses(env: Any) -> dict[str, list[float]]:
    """Position (3) and quaternion (4, x y z w) of every object the env reports."""
    raw = env.raw_obs()
    names = sorted(k[:-4] for k in raw if k.endswith("_pos") and not k.startswith("robot0_")
                   and "_to_robot0_" not in k and f"{k[:-4]}_quat" in raw)
    return {n: [round(float(v), 6) for v in (*raw[f"{n}_pos"], *raw[f"{n}_quat"])] for n in names}


def run_check_jobs(cfg: CheckEnvConfig, jobs: Iterable[CheckJob], emit: Any) -> None:
    """Measure the jobs' init states in this process; ``emit`` one record per init state."""
    from rocket_vla.envs.episode import NOOP_ACTION
    from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv
    from rocket_vla.envs.premise import Premise
    from rocket_vla.envs.suites import get_init_state, get_task

    for job in jobs:
        spec = get_task(job.suite, job.task_id)
        cameras = job.kind == "fingerprint"
        with LiberoEnv(spec, EnvConfig(image_size=cfg.image_size, cameras=cameras)) as env:
            premise = Premise(env)
            env.seed(0)  # the official clients' env.seed(0): trial k = the k-th reset
            for k in job.items:
                start = time.perf_counter()
                env.advance_to(k)
                env.reset(get_init_state(spec, k), render=cameras and cfg.num_wait == 0)
                for i in range(cfg.num_wait):
                    env.step(NOOP_ACTION, render=cameras and i == cfg.num_wait - 1)
                rec: dict[str, Any] = {"suite": spec.suite, "task_id": spec.task_id, "init": k,
                                       "kind": job.kind}
                if cameras:
                    obs = env.observation(images=True)
                    rec["poses"] = object_poses(env)
                    rec["cameras"] = {cam: fingerprint(obs[cam]) for cam in ("agentview", "wrist")}
                    rec["premise_failed"] = premise.check()
                else:
                    rec["predicates"] = [[str(p), p.relation, ok] for p, ok in premise.evaluate()]
                rec["wall_s"] = round(time.perf_counter() - start, 3)
                emit(rec)


def plan(cfg: CheckEnvConfig, inits: Iterable[int] | None = None,
         kind: str = "fingerprint") -> list[CheckJob]:
    """One job per task of the configured suites (or the --quick subset)."""
    from rocket_vla.envs.suites import list_tasks

    if kind == "fingerprint" and cfg.quick:
        return [CheckJob(s, t, (0,)) for s, t in QUICK_TASKS]
    items = tuple(sorted(set(cfg.init_states if inits is None else inits)))
    return [CheckJob(t.suite, t.task_id, items, kind) for s in cfg.suites for t in list_tasks(s)]


def measure(cfg: CheckEnvConfig, jobs: list[CheckJob], progress: bool = True) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``cfg.workers`` processes and return their records in job order."""
    from tqdm import tqdm

    from rocket_vla.envs.parallel import run_parallel

    records: list[dict[str, Any]] = []
    bar = tqdm(total=sum(len(j.items) for j in jobs), desc="check-env", unit="state", disable=not progress)

    def emit(rec: dict[str, Any]) -> None:
        records.append(rec)
        bar.update(1)

    run_parallel(run_check_jobs, cfg, jobs, cfg.workers, emit)
    bar.close()
    return sorted(records, key=lambda r: (r["suite"], r["task_id"], r["init"]))


# -- comparing ------------------------------------------------------------------------------
def quat_angle_deg(q1: np.ndarray, q2: np.ndarray) -> float:
    """Rotation angle between two unit quaternions (degrees; q and -q are the same rotation)."""
    dot = abs(float(np.dot(q1 / np.linalg.norm(q1), q2 / np.linalg.norm(q2))))
    return float(np.degrees(2 * np.arccos(min(1.0, dot))))


def compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Largest differences between one reference record and one measurement."""
    pos = ang = 0.0
    missing = sorted(set(ref["poses"]) ^ set(got["poses"]))
    for name in set(ref["poses"]) & set(got["poses"]):
        a, b = np.asarray(ref["poses"][name]), np.asarray(got["poses"][name])
        pos = max(pos, 1000 * float(np.linalg.norm(a[:3] - b[:3])))
        ang = max(ang, quat_angle_deg(a[3:], b[3:]))
    mean = thumb = 0.0
    for cam, fp in ref["cameras"].items():
        other = got["cameras"][cam]
        mean = max(mean, float(np.abs(np.subtract(fp["mean"], other["mean"])).max()))
        thumb = max(thumb, float(np.abs(np.subtract(fp["thumb"], other["thumb"])).mean()))
    return {"position_mm": pos, "angle_deg": ang, "channel_mean": mean, "thumbnail": thumb,
            "missing_objects": missing,
            "premise": sorted(set(got.get("premise_failed", [])) - set(ref.get("premise_failed", [])))}


def verdict(diff: dict[str, Any], tol: Tolerances) -> list[str]:
    """What is out of tolerance (empty: this init state matches the reference)."""
    bad = [f"{k} {diff[k]:.3g} > {getattr(tol, k)}" for k in ("position_mm", "angle_deg", "channel_mean",
                                                                "thumbnail") if diff[k] > getattr(tol, k)]
    if diff["missing_objects"]:
        bad.append(f"objects differ: {', '.join(diff['missing_objects'])}")
    if diff["premise"]:
        bad.append(f"start relations broken: {'; '.join(diff['premise'])}")
    return bad


def load_reference(path: str | Path | None) -> dict[str, Any]:
    path = Path(path) if path else REFERENCE_FILE
    if not path.is_file():
        raise RocketError(f"no reference file at {path}; pass --reference FILE or reinstall rocket-vla.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        _ = data["records"], data["settings"]
    except (ValueError, KeyError, TypeError):
        raise RocketError(f"{path} is not a check-env reference; pass a file written by "
                          "`rocket check-env --write_reference`.") from None
    return data


def reference_settings(cfg: CheckEnvConfig) -> dict[str, Any]:
    return {"image_size": cfg.image_size, "num_wait": cfg.num_wait, "start": "official", "env_seed": 0}


def write_reference(cfg: CheckEnvConfig, progress: bool = True) -> Path:
    """Measure every configured task and write the reference file (made on the pinned stack)."""
    from rocket_vla.envs.simstack import require_pinned
    from rocket_vla.fingerprint import code_version

    stack = require_pinned(False, "rocket check-env --write_reference")
    start = time.perf_counter()
    records = measure(cfg, plan(cfg), progress)
    for r in records:
        r.pop("wall_s", None)
        r.pop("kind", None)
    data = {"settings": reference_settings(cfg), "stack": stack, "code_version": code_version(),
            "made": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - start, 1),
            "records": records}
    path = Path(cfg.write_reference or REFERENCE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)
    return path


@dataclass
class CheckResult:
    rows: list[dict[str, Any]]
    stack: dict[str, Any]
    reference_stack: dict[str, Any]
    wall_s: float

    @property
    def passed(self) -> bool:
        return all(not r["problems"] for r in self.rows)


def run_check(cfg: CheckEnvConfig, progress: bool = True) -> CheckResult:
    """Measure the configured tasks here and compare them with the reference."""
    from rocket_vla.envs.simstack import simulator_stack

    start = time.perf_counter()
    ref = load_reference(cfg.reference)
    if ref["settings"] != reference_settings(cfg):
        raise RocketError(f"the reference was made with {ref['settings']}, this check uses "
                          f"{reference_settings(cfg)}; use the reference's --image_size and --num_wait.")
    by_key = {(r["suite"], r["task_id"], r["init"]): r for r in ref["records"]}
    jobs = plan(cfg)
    wanted = [(j.suite, j.task_id, k) for j in jobs for k in j.items]
    absent = [w for w in wanted if w not in by_key]
    if absent:
        s, t, k = absent[0]
        raise RocketError(f"the reference holds no {s} task {t} init state {k}; check the init states "
                          "it holds (--init_states) or write a reference for them.")
    rows = []
    for got in measure(cfg, jobs, progress):
        key = (got["suite"], got["task_id"], got["init"])
        diff = compare(by_key[key], got)
        rows.append({"suite": key[0], "task_id": key[1], "init": key[2], **diff,
                     "problems": verdict(diff, cfg.tolerances)})
    return CheckResult(rows, simulator_stack(), ref.get("stack", {}), time.perf_counter() - start)


def report(result: CheckResult, tol: Tolerances) -> str:
    """The table a user reads, ending with the verdict and the likely cause of a failure."""
    from rocket_vla.envs.simstack import PACKAGES, stack_line

    lines = ["| suite | task | init | position (mm) | rotation (deg) | channel mean | thumbnail | result |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        lines.append(f"| {r['suite']} | {r['task_id']} | {r['init']} | {r['position_mm']:.3f} | "
                     f"{r['angle_deg']:.3f} | {r['channel_mean']:.2f} | {r['thumbnail']:.2f} | "
                     f"{'ok' if not r['problems'] else 'DIFFERS: ' + '; '.join(r['problems'])} |")
    bad = [r for r in result.rows if r["problems"]]
    lines += ["", f"tolerances: position {tol.position_mm} mm, rotation {tol.angle_deg} deg, channel mean "
              f"{tol.channel_mean}, thumbnail {tol.thumbnail} grey levels",
              f"this machine: {stack_line(result.stack)}",
              f"reference:    {stack_line(result.reference_stack)}" if result.reference_stack else "",
              f"checked {len(result.rows)} init states in {result.wall_s:.0f} s: "
              + ("all match the reference." if not bad else f"{len(bad)} differ from the reference.")]
    if bad:
        changed = [f"{d} {result.stack.get(d)} (reference {result.reference_stack.get(d)})" for d in PACKAGES
                   if result.stack.get(d) != result.reference_stack.get(d)]
        if changed:
            lines.append("likely cause: the simulator stack differs from the reference's: "
                         + ", ".join(changed) + "; install the pinned stack with "
                         "pip install -c constraints.txt 'rocket-vla[libero]'.")
        else:
            lines.append("likely cause: same package versions, so the rendering or physics build differs "
                         f"(GL backend here: {result.stack.get('gl')}; reference: "
                         f"{result.reference_stack.get('gl')}); try MUJOCO_GL=egl.")
    return "\n".join(line for line in lines if line != "") + "\n"


# -- the premise table ------------------------------------------------------------------------
def premise_table(cfg: CheckEnvConfig, progress: bool = True) -> dict[str, Any]:
    """Evaluate every task's ``:init`` predicates at ALL its init states after the wait."""
    from rocket_vla.envs.simstack import simulator_stack
    from rocket_vla.envs.suites import list_tasks, num_init_states

    start = time.perf_counter()
    jobs = [CheckJob(t.suite, t.task_id, tuple(range(num_init_states(t))), "premise")
            for s in cfg.suites for t in list_tasks(s)]
    records = measure(cfg, jobs, progress)
    tasks: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        row = tasks.setdefault((r["suite"], r["task_id"]), {
            "suite": r["suite"], "task_id": r["task_id"], "init_states": 0, "broken": {}, "placements": {}})
        row["init_states"] += 1
        for text, relation, ok in r["predicates"]:
            if not ok:
                row["broken" if relation else "placements"].setdefault(text, []).append(r["init"])
    return {"stack": simulator_stack(), "num_wait": cfg.num_wait, "start": "official", "env_seed": 0,
            "wall_s": round(time.perf_counter() - start, 1), "tasks": list(tasks.values())}


def premise_markdown(table: dict[str, Any]) -> str:
    from rocket_vla.envs.simstack import stack_line

    lines = [f"Stack: {stack_line(table['stack'])}; official start, {table['num_wait']} no-op steps.", "",
             "| suite | task | init states | broken start relations (init states) | off their table region |",
             "|---|---|---|---|---|"]
    for t in table["tasks"]:
        broken = "; ".join(f"({p}): {_ranges(v)}" for p, v in t["broken"].items()) or "-"
        placed = "; ".join(f"({p}): {len(v)}" for p, v in t["placements"].items()) or "-"
        lines.append(f"| {t['suite']} | {t['task_id']} | {t['init_states']} | {broken} | {placed} |")
    return "\n".join(lines) + "\n"


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    values = sorted(values)
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)

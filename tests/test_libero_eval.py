"""`rocket eval` and `rocket collect` end to end on the real simulator (one task, few episodes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("libero.libero")

from rocket_vla.cli import main  # noqa: E402
from rocket_vla.data.episodes import read_episodes  # noqa: E402
from rocket_vla.envs.policy import register_policy  # noqa: E402
from rocket_vla.envs.runner import EvalConfig, read_results, run_evaluation  # noqa: E402
from rocket_vla.errors import RocketError  # noqa: E402

pytestmark = pytest.mark.libero


class HoldPolicy:
    """Reads both images and holds still in chunks of 8 (a stand-in for a learned model)."""

    def __init__(self, **_: object) -> None:
        self.shapes: list[tuple] = []

    def reset(self, task) -> None:
        self.task = task

    def act(self, obs):
        self.shapes.append((obs["agentview"].shape, obs["wrist"].shape, obs["proprio"].shape))
        chunk = np.zeros((8, 7))
        chunk[:, 6] = 1.0
        return chunk


def make_hold(**kwargs) -> HoldPolicy:
    return HoldPolicy(**kwargs)


def test_eval_writes_results_and_resumes(tmp_path: Path) -> None:
    cfg = EvalConfig(out_dir=str(tmp_path), suites=["libero_spatial"], tasks=["8"], trials=1,
                     policy="expert", image_size=64)
    summary = run_evaluation(cfg, progress=False)
    (rec,) = read_results(tmp_path / "episodes.jsonl")
    assert rec["success"] and rec["trial"] == 0 and rec["task_id"] == 8 and rec["steps"] <= 220
    assert summary["suites"][0]["success_rate"] == 1.0
    assert "| libero_spatial | 8:" in (tmp_path / "summary.md").read_text()
    run_evaluation(cfg, progress=False)  # resume: nothing left to do
    assert len(read_results(tmp_path / "episodes.jsonl")) == 1
    with pytest.raises(RocketError, match="different image_size"):
        run_evaluation(EvalConfig(**{**cfg.__dict__, "image_size": 96}), progress=False)


def test_eval_runs_a_chunked_image_policy_with_video(tmp_path: Path) -> None:
    register_policy("hold-test", make_hold)
    cfg = EvalConfig(out_dir=str(tmp_path), suites=["libero_object"], tasks=["0"], trials=1,
                     policy="hold-test", image_size=64, max_steps=24, video="all",
                     video_format="gif")
    run_evaluation(cfg, progress=False)
    (rec,) = read_results(tmp_path / "episodes.jsonl")
    assert not rec["success"] and rec["steps"] == 24 and rec["policy_calls"] == 3  # 3 chunks of 8
    assert (tmp_path / rec["video"]).stat().st_size > 0


def test_eval_cli_rejects_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--suites", "libero_moon", "--out_dir", str(tmp_path / "a")]) == 2
    assert "unknown LIBERO suite" in capsys.readouterr().err
    assert main(["eval", "--suites", "spatial", "--tasks", "11", "--out_dir", str(tmp_path / "b")]) == 2
    assert "use a task id in 0..9" in capsys.readouterr().err
    assert main(["eval", "--suites", "spatial", "--tasks", "0", "--first_trial", "45",
                 "--trials", "10", "--out_dir", str(tmp_path / "c")]) == 2
    assert "--first_trial + --trials <= 50" in capsys.readouterr().err
    assert main(["eval", "--suites", "spatial", "--policy", "nope", "--workers", "2",
                 "--out_dir", str(tmp_path / "d")]) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_collect_round_trip_and_crash_safety(tmp_path: Path) -> None:
    """Kill `rocket collect` after its first demo: every finished file reads back in full."""
    out = tmp_path / "demos"
    cmd = [sys.executable, "-m", "rocket_vla.cli", "collect", "--suites", "libero_object",
           "--tasks", "0", "--init_states", "3", "--frame_stride", "10", "--image_size", "64",
           "--out_dir", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env={**os.environ, "MUJOCO_GL": "egl"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.rglob("*.hdf5")) and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = list(out.rglob("*.hdf5"))
    assert files, "no demonstration was written before the deadline"
    episodes = read_episodes(out)
    assert len(episodes) == len(files)
    ep = episodes[0]
    assert ep.language == "pick up the alphabet soup and place it in the basket"
    t, n = len(ep), len(ep.frame_index)
    np.testing.assert_array_equal(ep.frame_index, np.arange(0, t, 10))
    assert ep.obs["agentview_rgb"].shape == (n, 64, 64, 3)
    assert ep.obs["eye_in_hand_depth"].shape == (n, 64, 64)
    assert ep.obs["agentview_extrinsics"].shape == (n, 4, 4)
    assert ep.obs["ee_pos"].shape == (t, 3) and ep.obs["joint_states"].shape == (t, 7)
    assert ep.attrs["agentview_intrinsics"].shape == (3, 3) and ep.attrs["frame_stride"] == 10
    assert set(np.unique(ep.actions[:, 6])) <= {-1.0, 1.0}  # LIBERO env convention
    # 16 steps after the solve are kept (default --after_success), ending with an open hand
    assert t == int(ep.attrs["solved_at_step"]) + 16 and ep.actions[-1, 6] == -1.0
    assert 0.3 < float(np.median(ep.obs["agentview_depth"])) < 3.0  # metres
    log = [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]
    assert sum(r["success"] for r in log) == len(files)


@pytest.mark.fault("refused")
def test_collect_beyond_the_init_states_is_refused_before_any_episode(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demos"
    assert main(["collect", "--suites", "spatial", "--tasks", "0", "--first_init", "45",
                 "--init_states", "10", "--out_dir", str(out)]) == 2
    assert ("demonstration 54 needs init state 54, but libero_spatial task 0 has 50; use --first_init "
            "+ --init_states <= 50.") in capsys.readouterr().err
    assert not list(out.rglob("*.hdf5"))

"""The simulator stack is part of a result's identity: recorded, compared, refused when off the pin.

An unpinned stack is simulated by reporting another installed version (installing a second
MuJoCo is not possible inside one environment); everything else runs the real code paths
(`rocket eval` on the real simulator, its run folder, `--merge`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rocket_vla.envs import simstack
from rocket_vla.errors import RocketError


def fake_versions(monkeypatch, **versions: str) -> None:
    real = simstack.installed_version
    names = {k.replace("_", "-"): v for k, v in versions.items()}
    monkeypatch.setattr(simstack, "installed_version", lambda d: names.get(d, real(d)))


def test_the_pin_is_the_official_clients_mujoco() -> None:
    assert simstack.PINNED["mujoco"] == "3.2.3"
    text = (Path(__file__).resolve().parents[1] / "constraints.txt").read_text()
    for dist, version in simstack.PINNED.items():
        assert f"{dist}=={version}" in text  # ./run.sh installs exactly the pin


def test_unpinned_stack_is_refused_with_the_versions_and_the_fix(monkeypatch) -> None:
    fake_versions(monkeypatch, mujoco="3.17.0")
    with pytest.raises(RocketError) as err:
        simstack.require_pinned(False)
    msg = str(err.value)
    assert "mujoco 3.17.0 (pinned 3.2.3)" in msg and "constraints.txt" in msg
    assert "--allow_unpinned_sim" in msg
    assert msg.count(". ") == 0 and msg.endswith(".")  # one sentence
    stack = simstack.require_pinned(True)
    assert stack["mujoco"] == "3.17.0" and stack["pinned"] is False
    assert "NOT the pinned stack" in simstack.stack_line(stack)


def test_stack_changes() -> None:
    here = simstack.simulator_stack()
    assert simstack.stack_changes(here, here) == []
    assert simstack.stack_changes(None, here) == ["no simulator stack recorded (made by an older version)"]
    assert simstack.stack_changes({**here, "gl": "osmesa"}, {**here, "gl": "egl"}) == ["gl osmesa -> egl"]


# -- eval run folders on the real simulator --------------------------------------------------------
class Still:
    """Holds still; reads no image, so its env has no cameras (cheap hard resets)."""

    needs_images = False

    def __init__(self, **_: object) -> None:
        pass

    def reset(self, task) -> None:
        pass

    def act(self, obs):
        chunk = np.zeros((4, 7))
        chunk[:, 6] = 1.0
        return chunk


def make_still(**kwargs) -> Still:
    return Still(**kwargs)


def eval_args(out: Path, trials: int = 1, *extra: str) -> list[str]:
    return ["eval", "--suites", "libero_spatial", "--tasks", "0", "--trials", str(trials), "--policy",
            f"{__name__}:make_still", "--max_steps", "4", "--quiet", "--out_dir", str(out), *extra]


@pytest.mark.libero
def test_eval_records_the_stack_and_refuses_another(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("libero.libero")
    from rocket_vla.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "run"
    assert main(eval_args(out)) == 0
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["simulator"] == {**simstack.simulator_stack()}
    assert saved["simulator"]["mujoco"] == "3.2.3" and saved["protocol"]["start"] == "official"
    assert "simulator: mujoco 3.2.3" in (out / "summary.md").read_text()
    rec = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert rec["start"] == "official" and rec["premise_failed"] == [] and "unpinned_sim" not in rec
    # a folder made on another stack is not extended
    saved["simulator"]["mujoco"] = "3.17.0"
    (out / "run_config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(eval_args(out, 2)) == 2
    assert "another simulator stack (mujoco 3.17.0 -> 3.2.3)" in capsys.readouterr().err
    # episodes without settings: an older or tampered folder, refused as well
    (out / "run_config.json").unlink()
    assert main(eval_args(out, 2)) == 2
    assert "holds episode records (episodes.jsonl) but no run_config.json" in capsys.readouterr().err
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 1  # nothing was added


@pytest.mark.libero
def test_unpinned_eval_needs_the_flag_and_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("libero.libero")
    from rocket_vla.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    fake_versions(monkeypatch, mujoco="3.17.0")
    assert main(eval_args(tmp_path / "a")) == 2
    assert "unpinned simulator stack (mujoco 3.17.0 (pinned 3.2.3))" in capsys.readouterr().err
    assert not (tmp_path / "a" / "episodes.jsonl").exists()
    assert main(eval_args(tmp_path / "b", 1, "--allow_unpinned_sim", "true")) == 0
    rec = json.loads((tmp_path / "b" / "episodes.jsonl").read_text().splitlines()[0])
    assert rec["unpinned_sim"] is True
    summary = (tmp_path / "b" / "summary.md").read_text()
    assert "NOT the pinned stack" in summary and "1 episodes ran on an unpinned simulator stack" in summary


@pytest.mark.libero
def test_merge_refuses_shards_of_another_stack(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("libero.libero")
    from rocket_vla.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    shards = [tmp_path / f"s{k}" for k in range(2)]
    for k, d in enumerate(shards):
        assert main(eval_args(d, 2, "--shard", f"{k}/2")) == 0
    other = json.loads((shards[1] / "run_config.json").read_text())
    other["simulator"]["gl"] = "osmesa"
    (shards[1] / "run_config.json").write_text(json.dumps(other))
    capsys.readouterr()
    assert main(["eval", "--merge", *map(str, shards), "--out_dir", str(tmp_path / "m")]) == 2
    assert "another simulator stack (gl osmesa -> egl)" in capsys.readouterr().err
    other["simulator"]["gl"] = "egl"
    (shards[1] / "run_config.json").write_text(json.dumps(other))
    assert main(["eval", "--merge", *map(str, shards), "--out_dir", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "run_config.json").read_text())["simulator"]["mujoco"] == "3.2.3"


def test_simulator_start_up_notices_are_not_printed() -> None:
    """robosuite's macro-file warning and gym-wrapper notice, once per process otherwise."""
    import subprocess
    import sys

    pytest.importorskip("libero.libero")
    code = ("from rocket_vla.envs.suites import get_task, setup_headless_gl\n"
            "setup_headless_gl()\n"
            "from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv\n"
            "from rocket_vla.envs.processing import quat_to_axis_angle\n"
            "import robosuite.wrappers\n"
            "with LiberoEnv(get_task('libero_spatial', 0), EnvConfig(cameras=False)) as env:\n"
            "    print('built', quat_to_axis_angle([0, 0, 0, 1.0]).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=True)
    text = out.stdout + out.stderr
    assert "built (3,)" in out.stdout
    assert "private macro" not in text and "make sure gym is installed" not in text, text

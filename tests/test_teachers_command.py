"""`rocket cache-teacher`: the iterable-based core and the CLI wiring."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from rocket_vla.cli import main
from rocket_vla.teachers.base import TeacherInput
from rocket_vla.teachers.cache import FeatureCache
from rocket_vla.teachers.fill import cache_episodes, episode_items, frames_to_views
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")


@dataclass
class FakeEpisode:
    actions: np.ndarray
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    language: str = "put the bowl on the plate"
    frame_index: np.ndarray | None = None


def _episodes(n: int = 2, steps: int = 3) -> list[FakeEpisode]:
    rng = np.random.default_rng(0)
    return [
        FakeEpisode(
            actions=np.zeros((steps, 7), np.float32),
            obs={c: rng.integers(0, 256, (steps, 32, 32, 3), dtype=np.uint8) for c in CAMERAS},
        )
        for _ in range(n)
    ]


def test_core_fills_from_plain_tensors(tmp_path: Path) -> None:
    teacher = VGGTTeacher(VGGTConfig.tiny(depth=2), TeacherInput(size=(28, 28)), seed=0)
    episodes = _episodes()
    cache, report = cache_episodes(
        teacher, episode_items(episodes, CAMERAS), tmp_path, layers=[-1], cameras=CAMERAS,
        dataset_fingerprint="fake", frame_size=(32, 32), progress=False,
    )
    assert report.written == ["0", "1"]
    frames = {c: torch.from_numpy(episodes[1].obs[c]) for c in CAMERAS}
    live = teacher.features(frames_to_views(frames, CAMERAS), [2])[0]
    assert torch.equal(cache.read("1", [0, 1, 2])[0], live.half())


def test_cli_fills_resumes_and_checks(tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "demos.hdf5"
    with h5py.File(data, "w") as f:  # its content keys the cache; the episodes come from _episodes()
        f.create_dataset("data/demo_0/actions", data=np.zeros((2, 7)))
    fake = types.ModuleType("rocket_vla.data.episodes")
    fake.iter_episodes = lambda path: iter(_episodes())  # type: ignore[attr-defined]
    fake.list_episode_files = lambda path: [Path(path)]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rocket_vla.data.episodes", fake)
    out = tmp_path / "cache"
    args = ["cache-teacher", "--dataset", str(data), "--out_dir", str(out), "--teacher.kind", "vggt-random",
            "--teacher.vggt_size", "tiny", "--layers", "1,-1", "--teacher.input_size", "28"]
    assert main(args) == 0
    assert "wrote 2 episodes" in capsys.readouterr().out
    assert main(args) == 0
    assert "skipped 2 already cached" in capsys.readouterr().out
    assert main(["cache-teacher", "--out_dir", str(out), "--check"]) == 0
    path = FeatureCache.open(out).path("0")
    path.write_bytes(path.read_bytes()[:-7])
    assert main(["cache-teacher", "--out_dir", str(out), "--check"]) == 1
    assert main(args) == 0
    assert "recomputed episode 0" in capsys.readouterr().out


def test_cli_user_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["cache-teacher", "--out_dir", str(tmp_path), "--check"]) == 2
    assert "not a teacher cache" in capsys.readouterr().err
    assert main(["cache-teacher", "--dataset", str(tmp_path / "x"), "--out_dir", str(tmp_path),
                 "--teacher.kind", "vggt", "--layers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rocket cache-teacher: error:")


@pytest.mark.parametrize("bad", ["1,a", "3/"])
def test_cli_rejects_malformed_options(tmp_path: Path, bad: str, capsys) -> None:
    opt = "--layers" if "," in bad else "--shard"
    assert main(["cache-teacher", "--out_dir", str(tmp_path), opt, bad, "--check"]) == 2
    err = capsys.readouterr().err  # refused while parsing, before the (empty) folder is read
    assert err.startswith("rocket cache-teacher: error:") and err.count("\n") == 1
    assert ('key "layers"' if opt == "--layers" else "'3/' is not INDEX/COUNT") in err, err


def test_build_teacher_and_sizes(tmp_path: Path) -> None:
    from rocket_vla.errors import RocketError
    from rocket_vla.teachers.build import TeacherConfig, build_teacher, parse_size

    assert parse_size("518") == (518, 518) and parse_size("224x308") == (224, 308)
    assert parse_size("") is None
    with pytest.raises(RocketError, match="HxW"):
        parse_size("big")
    random_tiny = build_teacher(TeacherConfig(kind="vggt-random", vggt_size="tiny"))
    path = tmp_path / "tiny.safetensors"
    random_tiny.save(path)  # type: ignore[attr-defined]
    loaded = build_teacher(TeacherConfig(kind="vggt", path=str(path), vggt_size="tiny"))
    assert loaded.fingerprint() == random_tiny.fingerprint()
    with pytest.raises(RocketError, match="--teacher.path"):
        build_teacher(TeacherConfig(kind="hf"))
    with pytest.raises(RocketError, match="unknown"):
        build_teacher(TeacherConfig(kind="clip"))


def test_cli_on_real_episode_files(tmp_path: Path, capsys) -> None:
    """End to end through rocket_vla.data.episodes: frames kept every 2nd step."""
    episodes_mod = pytest.importorskip("rocket_vla.data.episodes")
    pytest.importorskip("h5py")
    writer = episodes_mod.EpisodeWriter(tmp_path / "data")
    rng = np.random.default_rng(0)
    for k in range(2):
        obs = {c: rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for c in CAMERAS}
        obs.update(ee_pos=np.zeros((6, 3), np.float32), ee_ori=np.zeros((6, 3), np.float32),
                   gripper_states=np.zeros((6, 2), np.float32))
        ep = episodes_mod.Episode(np.zeros((6, 7), np.float32), obs, "pick", np.arange(0, 6, 2))
        writer.write(f"demo_{k}", ep)
    out = tmp_path / "cache"
    assert main(["cache-teacher", "--dataset", str(tmp_path / "data"), "--out_dir", str(out),
                 "--teacher.kind", "vggt-random", "--teacher.vggt_size", "tiny", "--layers", "-1",
                 "--teacher.input_size", "28"]) == 0
    assert "wrote 2 episodes (6 steps" in capsys.readouterr().out
    cache = FeatureCache.open(out)
    assert cache.read("1", [4])[0].shape == (1, 2, 2, 2, 128)
    with pytest.raises(Exception, match="missing step 1"):
        cache.read("1", [1])

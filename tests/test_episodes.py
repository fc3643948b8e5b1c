"""Episode files: the official LIBERO layout reads unchanged, ours round-trips, bad input is clear."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from rocket_vla.data.episodes import (  # noqa: E402
    Episode,
    EpisodeWriter,
    gripper_env_to_model,
    iter_episodes,
    read_episodes,
    rotate_intrinsics_180,
)
from rocket_vla.errors import RocketError  # noqa: E402


def write_official(path: Path, demos: int = 2, steps: int = 5, size: int = 8) -> list[np.ndarray]:
    """A file laid out exactly like LIBERO's released datasets (no depth, no extras)."""
    rng = np.random.default_rng(0)
    raws = []
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps(
            {"problem_name": "libero_tabletop_manipulation",
             "domain_name": "robosuite", "language_instruction": "put the bowl on the plate"})
        data.attrs["env_args"] = json.dumps({"type": 1})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["num_demos"] = demos
        for k in range(demos):
            g = data.create_group(f"demo_{k}")
            g.attrs["num_samples"] = steps
            g.create_dataset("actions", data=rng.uniform(-1, 1, (steps, 7)))
            g.create_dataset("states", data=rng.normal(size=(steps, 20)))
            g.create_dataset("rewards", data=np.zeros(steps))
            g.create_dataset("dones", data=np.zeros(steps))
            o = g.create_group("obs")
            raw = rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8)
            raws.append(raw)
            o.create_dataset("agentview_rgb", data=raw)
            o.create_dataset("eye_in_hand_rgb", data=raw[:, ::-1])
            o.create_dataset("ee_pos", data=rng.normal(size=(steps, 3)))
            o.create_dataset("ee_ori", data=rng.normal(size=(steps, 3)))
            o.create_dataset("gripper_states", data=rng.normal(size=(steps, 2)))
            o.create_dataset("joint_states", data=rng.normal(size=(steps, 7)))
    return raws


def test_official_layout_reads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "put_the_bowl_on_the_plate_demo.hdf5"
    raws = write_official(path, demos=11)
    eps = read_episodes(path)
    assert [e.name for e in eps][:3] == ["demo_0", "demo_1", "demo_2"]  # numeric order
    assert eps[10].name == "demo_10"
    e = eps[0]
    assert e.language == "put the bowl on the plate"
    assert e.actions.shape == (5, 7) and e.actions.dtype == np.float32
    np.testing.assert_array_equal(e.frame_index, np.arange(5))
    # returned in the policy orientation: raw frames rotated by 180 degrees
    np.testing.assert_array_equal(e.obs["agentview_rgb"][2], np.rot90(raws[0][2], 2))
    assert "agentview_depth" not in e.obs and e.obs["joint_states"].shape == (5, 7)


def test_language_falls_back_to_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5"
    write_official(path, demos=1)
    with h5py.File(path, "a") as f:
        del f["data"].attrs["problem_info"]
    assert read_episodes(path)[0].language == "turn on the stove"


def _episode(steps: int = 6, stride: int = 2, size: int = 8) -> Episode:
    rng = np.random.default_rng(1)
    n = len(range(0, steps, stride))
    obs = {
        "agentview_rgb": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "eye_in_hand_rgb": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "agentview_depth": rng.uniform(0.5, 2, (n, size, size)).astype(np.float32),
        "eye_in_hand_depth": rng.uniform(0.5, 2, (n, size, size)).astype(np.float32),
        "agentview_extrinsics": np.tile(np.eye(4), (n, 1, 1)),
        "ee_pos": rng.normal(size=(steps, 3)), "gripper_states": rng.normal(size=(steps, 2)),
    }
    k = np.array([[-50.0, 0, 3.5], [0, 50.0, 4.0], [0, 0, 1]])
    return Episode(rng.uniform(-1, 1, (steps, 7)).astype(np.float32), obs, "pick it up",
                   np.arange(0, steps, stride), {"agentview_intrinsics": k, "seed": 3})


def test_writer_round_trip(tmp_path: Path) -> None:
    ep = _episode()
    writer = EpisodeWriter(tmp_path / "ds", file_attrs={"frame_stride": 2, "suite": "libero_spatial"})
    path = writer.write("libero_spatial/task/init00_var00", ep)
    assert path.is_file() and writer.exists("libero_spatial/task/init00_var00")
    with h5py.File(path) as f:  # stored like the official files: raw orientation
        np.testing.assert_array_equal(f["data/demo_0/obs/agentview_rgb"][1],
                                      np.rot90(ep.obs["agentview_rgb"][1], 2))
        assert json.loads(f["data"].attrs["problem_info"])["language_instruction"] == "pick it up"
    (back,) = read_episodes(tmp_path / "ds")
    np.testing.assert_array_equal(back.actions, ep.actions)
    np.testing.assert_array_equal(back.frame_index, [0, 2, 4])
    for key, value in ep.obs.items():
        np.testing.assert_allclose(back.obs[key], value)
    np.testing.assert_allclose(back.attrs["agentview_intrinsics"], ep.attrs["agentview_intrinsics"])
    assert back.attrs["frame_stride"] == 2 and back.language == "pick it up"
    lean = next(iter_episodes(tmp_path / "ds", images=False))
    assert "agentview_rgb" not in lean.obs and "ee_pos" in lean.obs


def test_crash_mid_write_keeps_finished_episodes(tmp_path: Path) -> None:
    writer = EpisodeWriter(tmp_path)
    writer.write("ep0", _episode())
    bad = _episode()
    bad.obs["broken"] = np.array([object(), object()])  # h5py cannot store this mid-write
    with pytest.raises(TypeError):
        writer.write("ep1", bad)
    assert not writer.exists("ep1")
    assert len(read_episodes(tmp_path)) == 1  # the .tmp leftover is never read


def test_gripper_conversion_inverts_the_runner_mapping() -> None:
    from rocket_vla.envs.processing import model_to_env_actions

    env = np.zeros((4, 7))
    env[:, 6] = [-1, 1, -1, 1]
    model = gripper_env_to_model(env)
    np.testing.assert_array_equal(model[:, 6], [1, 0, 1, 0])  # 1 = open
    np.testing.assert_array_equal(model_to_env_actions(model)[:, 6], env[:, 6])
    np.testing.assert_array_equal(model_to_env_actions(gripper_env_to_model(env, "signed"),
                                                       "signed")[:, 6], env[:, 6])


def test_rotate_intrinsics_is_an_involution() -> None:
    k = np.array([[100.0, 0, 60], [0, 90.0, 70], [0, 0, 1]])
    np.testing.assert_allclose(rotate_intrinsics_180(rotate_intrinsics_180(k, 128, 128), 128, 128), k)


def test_bad_inputs_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RocketError, match="does not exist"):
        read_episodes(tmp_path / "missing.hdf5")
    with pytest.raises(RocketError, match="no .hdf5 files"):
        read_episodes(tmp_path)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(RocketError, match="not a readable HDF5"):
        read_episodes(junk)
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(RocketError, match="no data/demo_"):
        read_episodes(empty)
    wrong = tmp_path / "wrong.hdf5"
    with h5py.File(wrong, "w") as f:
        g = f.create_group("data/demo_0")
        g.create_dataset("actions", data=np.zeros((4, 3)))
        g.create_group("obs")
    with pytest.raises(RocketError, match=r"expected \[T, 7\]"):
        read_episodes(wrong)
    short = tmp_path / "short.hdf5"
    with h5py.File(short, "w") as f:
        g = f.create_group("data/demo_0")
        g.create_dataset("actions", data=np.zeros((4, 7)))
        g.create_dataset("obs/ee_pos", data=np.zeros((3, 3)))
    with pytest.raises(RocketError, match="truncated"):
        read_episodes(short)

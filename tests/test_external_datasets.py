"""Datasets users already have, written here from their published layouts (not by our writer).

Sources of the layouts:
* original LIBERO release: LIBERO's ``scripts/create_dataset.py`` (Lifelong-Robot-Learning/LIBERO):
  ``data`` attrs env_name, problem_info (JSON), macros_image_convention, bddl_file_name,
  bddl_file_content, env_args (JSON), num_demos, total; ``demo_i`` attrs num_samples,
  model_file, init_state; datasets actions, states, robot_states, rewards, dones (uint8) and
  obs/{gripper_states, joint_states, ee_states, ee_pos, ee_ori, agentview_rgb,
  eye_in_hand_rgb} with raw (upside-down) 128 px frames; ee_ori = robosuite quat2axisangle.
* OpenVLA-OFT "no-noops": ``experiments/robot/libero/regenerate_libero_dataset.py``
  (moojink/openvla-oft): the same obs keys at 256 px, no attributes at all, only successful
  demos kept (``demo_i`` numbers have gaps), file name ``{task.name}_demo.hdf5``.
* LeRobot v2.1 / v3.0: huggingface/lerobot's ``LeRobotDataset`` (meta/info.json, parquet
  frames, MP4 videos; v3.0 multi-episode files with per-episode from/to timestamps), features
  as in the LIBERO conversion (``observation.images.image``, ``observation.images.wrist_image``,
  ``observation.state`` [8], ``action`` [7]).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from minivla_fixtures import single_thread

from rocket_vla.cli import main
from rocket_vla.data.dataset import proprio_of
from rocket_vla.data.episodes import read_episodes
from rocket_vla.errors import RocketError

RNG = np.random.default_rng(0)


def _obs_arrays(t: int, size: int) -> dict[str, np.ndarray]:
    ee = RNG.normal(size=(t, 6))
    return {"gripper_states": RNG.uniform(-0.04, 0.04, (t, 2)), "joint_states": RNG.normal(size=(t, 7)),
            "ee_states": ee, "ee_pos": ee[:, :3], "ee_ori": ee[:, 3:],
            "agentview_rgb": RNG.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
            "eye_in_hand_rgb": RNG.integers(0, 256, (t, size, size, 3), dtype=np.uint8)}


def _actions(t: int) -> np.ndarray:
    a = RNG.uniform(-1, 1, (t, 7))
    a[:, 6] = np.where(np.arange(t) < t // 2, -1.0, 1.0)  # env convention: open, then close
    return a


def write_libero_original(path: Path, demos: int = 2, t: int = 6, size: int = 128) -> list[dict]:
    written = []
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                 "domain_name": "robosuite",
                                                 "language_instruction": "put the bowl on the plate"})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = "libero/bddl_files/libero_spatial/put_the_bowl.bddl"
        data.attrs["bddl_file_content"] = "(define (problem LIBERO_Tabletop_Manipulation))"
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Tabletop_Manipulation",
                                             "env_kwargs": {"camera_heights": size}})
        data.attrs["num_demos"] = demos
        data.attrs["total"] = demos * t
        for i in range(demos):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = t
            g.attrs["model_file"] = "<mujoco/>"
            g.attrs["init_state"] = RNG.normal(size=9)
            obs, actions = _obs_arrays(t, size), _actions(t)
            g.create_dataset("actions", data=actions)
            g.create_dataset("states", data=RNG.normal(size=(t, 9)))
            g.create_dataset("robot_states", data=RNG.normal(size=(t, 9)))
            g.create_dataset("rewards", data=np.eye(t, dtype=np.uint8)[-1])
            g.create_dataset("dones", data=np.eye(t, dtype=np.uint8)[-1])
            o = g.create_group("obs")
            for k, v in obs.items():
                o.create_dataset(k, data=v)
            written.append({"obs": obs, "actions": actions})
    return written


def write_no_noops(folder: Path, t: int = 5, size: int = 256) -> tuple[Path, list[dict]]:
    path = folder / "pick_up_the_black_bowl_next_to_the_ramekin_and_place_it_on_the_plate_demo.hdf5"
    written = []
    with h5py.File(path, "w") as f:
        data = f.create_group("data")  # no attributes in the regenerated files
        for i in (0, 2):  # demo_1 failed on replay and was dropped
            g = data.create_group(f"demo_{i}")
            obs, actions = _obs_arrays(t, size), _actions(t)
            o = g.create_group("obs")
            for k in ("gripper_states", "joint_states", "ee_states", "ee_pos", "ee_ori",
                      "agentview_rgb", "eye_in_hand_rgb"):
                o.create_dataset(k, data=obs[k])
            g.create_dataset("actions", data=actions)
            g.create_dataset("states", data=RNG.normal(size=(t, 9)))
            g.create_dataset("robot_states", data=RNG.normal(size=(t, 9)))
            g.create_dataset("rewards", data=np.eye(t, dtype=np.uint8)[-1])
            g.create_dataset("dones", data=np.eye(t, dtype=np.uint8)[-1])
            written.append({"obs": obs, "actions": actions})
    return path, written


def test_original_libero_release_reads_with_rotated_images(tmp_path: Path) -> None:
    path = tmp_path / "put_the_bowl_on_the_plate_demo.hdf5"
    written = write_libero_original(path)
    eps = read_episodes(path)
    assert len(eps) == 2 and eps[0].language == "put the bowl on the plate"
    for ep, w in zip(eps, written, strict=True):
        np.testing.assert_array_equal(ep.obs["agentview_rgb"], w["obs"]["agentview_rgb"][:, ::-1, ::-1])
        np.testing.assert_array_equal(ep.obs["eye_in_hand_rgb"][3],
                                      np.rot90(w["obs"]["eye_in_hand_rgb"][3], 2))
        np.testing.assert_allclose(ep.actions, w["actions"].astype(np.float32))
        proprio = np.concatenate([w["obs"]["ee_pos"], w["obs"]["ee_ori"], w["obs"]["gripper_states"]], 1)
        np.testing.assert_allclose(proprio_of(ep), proprio.astype(np.float32))


def test_openvla_oft_no_noops_files_read(tmp_path: Path) -> None:
    path, written = write_no_noops(tmp_path)
    eps = read_episodes(tmp_path)
    assert [e.name for e in eps] == ["demo_0", "demo_2"]
    assert eps[0].language == "pick up the black bowl next to the ramekin and place it on the plate"
    assert eps[1].obs["agentview_rgb"].shape == (5, 256, 256, 3)
    np.testing.assert_array_equal(eps[1].obs["agentview_rgb"],
                                  written[1]["obs"]["agentview_rgb"][:, ::-1, ::-1])


# -- LeRobot --------------------------------------------------------------------------------
FPS = 10
LEROBOT_FEATURES = {
    "observation.images.image": {"dtype": "video", "shape": [32, 32, 3],
                                 "names": ["height", "width", "channel"]},
    "observation.images.wrist_image": {"dtype": "video", "shape": [32, 32, 3],
                                       "names": ["height", "width", "channel"]},
    "observation.state": {"dtype": "float32", "shape": [8], "names": ["state"]},
    "action": {"dtype": "float32", "shape": [7], "names": ["actions"]},
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
TASKS = ["put the bowl on the plate", "pick up the ketchup and place it in the basket"]


def _frames(n: int, seed: int) -> np.ndarray:
    """Flat colours far apart per frame plus a white top-left block: order and orientation are
    recoverable after lossy H.264."""
    rng = np.random.default_rng(seed)
    out = np.repeat(rng.integers(30, 200, (n, 1, 1, 3), dtype=np.uint8), 32, 1).repeat(32, 2)
    out[:, :8, :8] = 255
    return out


def _write_mp4(path: Path, frames: np.ndarray) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"crf": "10"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _episode_table(ep: int, n: int, start: int, task: int) -> tuple[dict, np.ndarray, np.ndarray]:
    state = RNG.normal(size=(n, 8)).astype(np.float32)
    action = _actions(n).astype(np.float32)
    cols = {"observation.state": state.tolist(), "action": action.tolist(),
            "timestamp": (np.arange(n) / FPS).astype(np.float32), "frame_index": np.arange(n),
            "episode_index": np.full(n, ep), "index": start + np.arange(n), "task_index": np.full(n, task)}
    return cols, state, action


def _info(version: str, episodes: int, frames: int, data_path: str, video_path: str) -> dict:
    return {"codebase_version": version, "robot_type": "panda", "total_episodes": episodes,
            "total_frames": frames, "total_tasks": len(TASKS), "chunks_size": 1000, "fps": FPS,
            "splits": {"train": f"0:{episodes}"}, "data_path": data_path, "video_path": video_path,
            "features": LEROBOT_FEATURES}


def write_lerobot_v21(root: Path, lengths=(6, 4)) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_path = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    video_path = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(_info("v2.1", len(lengths), sum(lengths),
                                                              data_path, video_path)))
    (root / "meta" / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS)))
    written, start, eps = [], 0, []
    for ep, n in enumerate(lengths):
        cols, state, action = _episode_table(ep, n, start, ep % 2)
        f = root / data_path.format(episode_chunk=0, episode_index=ep)
        f.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), f)
        frames = {k: _frames(n, 10 * ep + j) for j, k in enumerate(("observation.images.image",
                                                                       "observation.images.wrist_image"))}
        for key, fr in frames.items():
            _write_mp4(root / video_path.format(episode_chunk=0, video_key=key, episode_index=ep), fr)
        eps.append({"episode_index": ep, "tasks": [TASKS[ep % 2]], "length": n})
        written.append({"state": state, "action": action, "frames": frames, "task": TASKS[ep % 2]})
        start += n
    (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in eps))
    return written


def write_lerobot_v30(root: Path, lengths=(5, 7)) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_path = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    video_path = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(_info("v3.0", len(lengths), sum(lengths),
                                                              data_path, video_path)))
    # LeRobot saves a pandas frame indexed by the (unnamed) task string; without pandas here,
    # the same parquet columns are written directly.
    pq.write_table(pa.table({"task_index": list(range(len(TASKS))), "__index_level_0__": TASKS}),
                   root / "meta" / "tasks.parquet")
    written, start, tables, meta = [], 0, [], []
    videos = {"observation.images.image": [], "observation.images.wrist_image": []}
    for ep, n in enumerate(lengths):
        cols, state, action = _episode_table(ep, n, start, (ep + 1) % 2)
        tables.append(pa.table(cols))
        frames = {k: _frames(n, 100 + 10 * ep + j) for j, k in enumerate(videos)}
        row = {"episode_index": ep, "tasks": [TASKS[(ep + 1) % 2]], "length": n,
               "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": start, "dataset_to_index": start + n,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for key, fr in frames.items():
            row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start / FPS,
                    f"videos/{key}/to_timestamp": (start + n) / FPS}
            videos[key].append(fr)
        meta.append(row)
        written.append({"state": state, "action": action, "frames": frames, "task": TASKS[(ep + 1) % 2]})
        start += n
    f = root / data_path.format(chunk_index=0, file_index=0)
    f.parent.mkdir(parents=True)
    pq.write_table(pa.concat_tables(tables), f)
    pq.write_table(pa.Table.from_pylist(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    for key, parts in videos.items():
        _write_mp4(root / video_path.format(video_key=key, chunk_index=0, file_index=0),
                   np.concatenate(parts))
    return written


@pytest.mark.parametrize("writer", [write_lerobot_v21, write_lerobot_v30], ids=["v2.1", "v3.0"])
def test_lerobot_datasets_read_frame_for_frame(tmp_path: Path, writer) -> None:
    written = writer(tmp_path / "ds")
    eps = read_episodes(tmp_path / "ds")
    assert len(eps) == len(written)
    for ep, w in zip(eps, written, strict=True):
        assert ep.language == w["task"] and len(ep) == len(w["action"])
        np.testing.assert_allclose(ep.actions, w["action"])
        np.testing.assert_allclose(proprio_of(ep), w["state"], rtol=1e-6)
        for ours, theirs in (("agentview_rgb", "observation.images.image"),
                             ("eye_in_hand_rgb", "observation.images.wrist_image")):
            got, ref = ep.obs[ours].astype(int), w["frames"][theirs].astype(int)
            assert got.shape == ref.shape
            assert np.abs(got - ref).mean() < 4  # lossy H.264, but the right frames in order
            assert (got[:, 2, 2] > 240).all() and (got[:, 28, 28] < 210).all()  # not flipped


def test_lerobot_errors_are_clear(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_lerobot_v21(root, lengths=(3,))
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps(info | {"codebase_version": "v1.6"}))
    with pytest.raises(RocketError, match="LeRobot format v1.6"):
        read_episodes(root)
    feats = dict(info["features"])
    feats.pop("observation.images.wrist_image")
    (root / "meta" / "info.json").write_text(json.dumps(info | {"features": feats}))
    with pytest.raises(RocketError, match="no wrist image feature"):
        read_episodes(root)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    next(root.rglob("*.mp4")).unlink()
    with pytest.raises(RocketError, match="is missing"):
        read_episodes(root)


@pytest.mark.parametrize("kind", ["no_noops", "lerobot_v30"])  # the HDF5 path and the LeRobot path
def test_rocket_train_reads_each_format(tmp_path: Path, kind: str, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if kind == "libero":
        write_libero_original(data / "put_the_bowl_on_the_plate_demo.hdf5", t=10, size=32)
    elif kind == "no_noops":
        write_no_noops(data, t=10, size=32)
    else:
        (write_lerobot_v21 if kind == "lerobot_v21" else write_lerobot_v30)(data / "ds")
        data = data / "ds"
    with single_thread():
        assert main(["train", "--dataset", str(data), "--out_dir", str(tmp_path / "run"),
                     "--student_preset", "tiny", "--variant", "baseline", "--batch_size", "4",
                     "--steps", "1", "--progress", "false", "--tensorboard", "false"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 1 and summary["checkpoint"]

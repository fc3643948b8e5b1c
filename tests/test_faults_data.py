"""Fault injection into datasets: malformed HDF5 and LeRobot files are refused where they enter.

Each test writes a real malformed file (h5py, pyarrow parquet, PyAV mp4) and runs the entry
point training uses, ``rocket train`` through :func:`rocket_vla.cli.main`: it must exit 2
with one sentence naming the file, the episode, what is wrong and the fix, and write
nothing into the run folder. Before these checks some of the faults trained silently on a
wrong result (an inf action clipped to the bound, float images divided by 255 again,
images paired with the wrong actions, a truncated parquet) and the others stopped with a
traceback, some only in collate after training had started.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from minivla_fixtures import make_episodes
from test_external_datasets import write_lerobot_v21, write_lerobot_v30
from test_faults import _one_thread, _write_dataset  # noqa: F401  (autouse fixture)

from rocket_vla import records
from rocket_vla.cli import main
from rocket_vla.data.dataset import fit_stats
from rocket_vla.errors import RocketError

T = 6  # steps per episode of the HDF5 datasets below


def _train_refused(tmp_path: Path, data: Path, capsys) -> str:
    """Run `rocket train` on ``data``; assert exit 2, a one-line error and nothing in the run
    folder but the run lock (taken before the dataset is read; it dies with the process)."""
    run = tmp_path / "run"
    rc = main(["train", "--dataset", str(data), "--out_dir", str(run), "--student_preset", "tiny",
               "--variant", "baseline", "--batch_size", "4", "--steps", "1", "--progress", "false",
               "--tensorboard", "false"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("rocket train: error:") and err.count("\n") == 1, err
    assert not run.exists() or [p.name for p in run.iterdir()] == [records.LOCK_FILE]
    return err


# -- HDF5 (LIBERO layout) ---------------------------------------------------------------------
def _replace(group: h5py.Group, key: str, data: np.ndarray) -> None:
    del group[key]
    group.create_dataset(key, data=data)


def _inf_action(demo: h5py.Group) -> None:
    demo["actions"][2, 3] = np.inf


def _nan_action(demo: h5py.Group) -> None:
    demo["actions"][1, 0] = np.nan


def _float_images(demo: h5py.Group) -> None:
    _replace(demo["obs"], "agentview_rgb", demo["obs/agentview_rgb"][()].astype(np.float32) / 255.0)


def _frame_index(steps: list[int]) -> Callable[[h5py.Group], None]:
    return lambda demo: _replace(demo, "frame_index", np.asarray(steps, dtype=np.int64))


def _gripper_width_1(demo: h5py.Group) -> None:
    _replace(demo["obs"], "gripper_states", demo["obs/gripper_states"][:, :1])


def _rgba(demo: h5py.Group) -> None:
    rgb = demo["obs/agentview_rgb"][()]
    _replace(demo["obs"], "agentview_rgb", np.concatenate([rgb, rgb[..., :1]], axis=-1))


def _grayscale(demo: h5py.Group) -> None:
    _replace(demo["obs"], "eye_in_hand_rgb", demo["obs/eye_in_hand_rgb"][..., 0])


def _empty(demo: h5py.Group) -> None:
    for key in ("actions", "frame_index", "rewards", "dones"):
        _replace(demo, key, demo[key][:0])
    for key in list(demo["obs"]):
        _replace(demo["obs"], key, demo["obs"][key][:0])


HDF5_FAULTS = {  # fault -> (edit of data/demo_0, distinctive part of the refusal)
    # 2 x 60 steps: with over 101 rows the q99 quantile no longer reaches the inf, which was
    # then clipped to the bound and trained on silently
    "inf_action": (_inf_action, r"actions holds inf at step 2 \(dim 3\); actions must be finite"),
    "nan_action": (_nan_action, r"actions holds nan at step 1 \(dim 0\)"),
    "float_images": (_float_images, "obs/agentview_rgb stores float32 images; store uint8 0-255"),
    "negative_frame_index": (_frame_index([-1, 1, 2, 3, 4, 5]),
                             "frame_index has step -1 outside the demo's 6 steps"),
    "duplicated_frame_index": (_frame_index([0, 1, 1, 3, 4, 5]),
                               "frame_index lists step 1 2 times; each image row needs its own"),
    "frame_index_out_of_range": (_frame_index([0, 1, 2, 3, 4, 6]),
                                 r"frame_index has step 6 outside the demo's 6 steps \(0..5\)"),
    "gripper_width_1": (_gripper_width_1, r"obs/gripper_states has shape \(6, 1\); expected \[T, 2\]"),
    "rgba_images": (_rgba, r"obs/agentview_rgb has shape \(6, 32, 32, 4\); expected RGB frames"),
    "grayscale_images": (_grayscale, r"obs/eye_in_hand_rgb has shape \(6, 32, 32\); expected RGB"),
    "zero_length_demo": (_empty, r"data/demo_0 has no steps \(actions of shape \(0, 7\)\); remove"),
}


@pytest.mark.fault("refused")
@pytest.mark.parametrize("fault", list(HDF5_FAULTS))
def test_malformed_hdf5_demo_is_refused_before_training(tmp_path: Path, capsys, fault: str) -> None:
    """One malformed demo in a two-file dataset: refused naming the file and demo."""
    edit, match = HDF5_FAULTS[fault]
    length = 60 if fault == "inf_action" else T
    data = _write_dataset(tmp_path / "data", make_episodes(n=2, length=length, size=32))
    with h5py.File(data / "ep01.hdf5", "a") as f:
        edit(f["data/demo_0"])
    err = _train_refused(tmp_path, data, capsys)
    assert f"{data / 'ep01.hdf5'}:data/demo_0" in err
    assert re.search(match, err), err


def _smaller_images(demo: h5py.Group) -> None:
    for key in ("agentview_rgb", "eye_in_hand_rgb"):
        _replace(demo["obs"], key, demo["obs"][key][:, :16, :16])


@pytest.mark.fault("refused")
@pytest.mark.parametrize("fault,match", [
    (_smaller_images, "has agentview_rgb of 16x16 px but .*ep00.hdf5:data/demo_0 has 32x32; every "
                      "episode of a dataset must have one image size"),
    (lambda demo: demo["obs"].__delitem__("eye_in_hand_rgb"),
     "has no eye_in_hand_rgb images although .*ep00.hdf5:data/demo_0 has them; every episode needs "
     "the same cameras"),
], ids=["mixed_image_sizes", "camera_missing_in_a_later_episode"])
def test_later_episode_unlike_the_first_is_refused(tmp_path: Path, capsys, fault, match: str) -> None:
    """Each file is fine on its own; the second differs from the first (today: a crash in
    collate after training started, or a KeyError for the missing camera)."""
    data = _write_dataset(tmp_path / "data", make_episodes(n=2, length=T))
    with h5py.File(data / "ep01.hdf5", "a") as f:
        fault(f["data/demo_0"])
    err = _train_refused(tmp_path, data, capsys)
    assert f"{data / 'ep01.hdf5'}:data/demo_0" in err
    assert re.search(match, err), err


@pytest.mark.fault("refused")
def test_in_memory_inf_action_is_refused_by_the_statistics() -> None:
    """Episodes handed to the Trainer directly skip the readers: fitting the statistics
    refuses the inf the quantiles would otherwise hide."""
    episodes = make_episodes(n=2, length=T)
    episodes[1].actions[3, 2] = np.inf
    with pytest.raises(RocketError, match="holds inf at row 9, dim 2"):
        fit_stats(episodes)


# -- LeRobot ----------------------------------------------------------------------------------
def _parquet(path: Path, edit: Callable) -> None:
    import pyarrow.parquet as pq

    pq.write_table(edit(pq.read_table(path)), path)


def _info(root: Path, **changes) -> None:
    path = root / "meta" / "info.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _column(table, key: str, rows: list) -> object:
    import pyarrow as pa

    return table.set_column(table.column_names.index(key), key, pa.array(rows))


def _mp4(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    """Frames [N, H, W, 3] as an H.264 MP4 of their own size."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


V21_EP0 = "data/chunk-000/episode_000000.parquet"
V21_WRIST0 = "videos/chunk-000/observation.images.wrist_image/episode_000000.mp4"


def _v30_fewer_rows(root: Path) -> None:
    _parquet(root / "data/chunk-000/file-000.parquet", lambda t: t.slice(0, t.num_rows - 1))


def _v21_no_episodes_jsonl(root: Path) -> None:
    (root / "meta" / "episodes.jsonl").unlink()


def _v21_invalid_info(root: Path) -> None:
    (root / "meta" / "info.json").write_text('{"codebase_version": "v2.1", "features": {')


def _v21_action_rows_6d(root: Path) -> None:
    _parquet(root / V21_EP0, lambda t: _column(t, "action", [r[:6] for r in t.column("action").to_pylist()]))


def _v21_state_rows_9d(root: Path) -> None:
    key = "observation.state"
    _parquet(root / V21_EP0, lambda t: _column(t, key, [[*r, 0.0] for r in t.column(key).to_pylist()]))


def _v21_state_metadata_9d(root: Path) -> None:
    features = json.loads((root / "meta" / "info.json").read_text())["features"]
    features["observation.state"]["shape"] = [9]
    _info(root, features=features)


def _v21_empty_episode(root: Path) -> None:
    _parquet(root / "data/chunk-000/episode_000001.parquet", lambda t: t.slice(0, 0))
    path = root / "meta" / "episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["length"] = 0
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _v21_truncated_parquet(root: Path) -> None:
    _truncate(root / V21_EP0)


def _v21_truncated_mp4(root: Path) -> None:
    _truncate(root / V21_WRIST0)


def _v30_labelled_v20(root: Path) -> None:
    _info(root, codebase_version="v2.0")


def _v21_wrist_video_16px(root: Path) -> None:
    _mp4(root / V21_WRIST0, np.full((3, 16, 16, 3), 128, dtype=np.uint8))


LEROBOT_FAULTS = {  # fault -> (writer, edit, distinctive part of the refusal)
    "v30_parquet_fewer_rows_than_metadata": (
        write_lerobot_v30, _v30_fewer_rows,
        r"file-000.parquet \(episode 1\) holds 6 rows but the metadata says the episode has 7"),
    "v21_no_episodes_jsonl": (
        write_lerobot_v21, _v21_no_episodes_jsonl,
        "meta/episodes.jsonl is missing; the LeRobot v2.1 dataset is incomplete, download it again"),
    "v21_invalid_info_json": (
        write_lerobot_v21, _v21_invalid_info,
        "meta/info.json is not valid JSON .*; the metadata is damaged, download the dataset again"),
    "v21_6d_action_rows": (
        write_lerobot_v21, _v21_action_rows_6d,
        r"episode_000000.parquet \(episode 0\): action rows have 6 values but meta/info.json says 7"),
    "v21_9d_state_rows": (
        write_lerobot_v21, _v21_state_rows_9d,
        r"\(episode 0\): observation.state rows have 9 values but meta/info.json says 8"),
    "v21_9d_state_metadata": (
        write_lerobot_v21, _v21_state_metadata_9d,
        r"meta/info.json gives observation.state shape \[9\] but LIBERO data needs \[8\]"),
    "v21_empty_episode": (
        write_lerobot_v21, _v21_empty_episode,
        r"episode_000001.parquet \(episode 1\) has no frames \(length 0 in the metadata\)"),
    "v21_truncated_parquet": (
        write_lerobot_v21, _v21_truncated_parquet,
        "episode_000000.parquet cannot be read .*; the file is truncated or damaged"),
    "v21_truncated_mp4": (
        write_lerobot_v21, _v21_truncated_mp4,
        "episode_000000.mp4 cannot be decoded .*; the file is truncated or damaged"),
    "v30_layout_labelled_v20": (
        write_lerobot_v30, _v30_labelled_v20,
        r"says codebase_version v2.0 but the folder has the v3.0 layout .*set codebase_version to "
        r"\"v3.0\""),
    "v21_wrist_video_of_another_size": (
        write_lerobot_v21, _v21_wrist_video_16px,
        "wrist_image/episode_000000.mp4 is 16x16 px but meta/info.json says "
        "observation.images.wrist_image is 32x32"),
}


@pytest.mark.fault("refused")
@pytest.mark.parametrize("fault", list(LEROBOT_FAULTS))
def test_malformed_lerobot_dataset_is_refused_before_training(tmp_path: Path, capsys,
                                                              fault: str) -> None:
    writer, edit, match = LEROBOT_FAULTS[fault]
    root = tmp_path / "ds"
    writer(root, lengths=(3, 7) if writer is write_lerobot_v30 else (3, 3))
    edit(root)
    err = _train_refused(tmp_path, root, capsys)
    assert str(root) in err
    assert re.search(match, err), err

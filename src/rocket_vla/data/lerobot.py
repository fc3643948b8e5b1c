"""Read a LeRobot-format dataset (v2.1 or v3.0) from a local folder as :class:`Episode` objects.

The LIBERO data pi0 users fine-tune on is published in this form. Layout (from LeRobot's
``LeRobotDataset`` code and its v3.0 announcement, huggingface/lerobot and
huggingface/blog ``lerobot-datasets-v3.md``)::

    meta/info.json     codebase_version ("v2.1" | "v3.0"), fps, chunks_size,
                       data_path / video_path templates, features {name: {dtype, shape, names}}
    v2.1: data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet  (one episode)
          videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4
          meta/episodes.jsonl {"episode_index", "tasks": [...], "length"}
          meta/tasks.jsonl    {"task_index", "task"}
    v3.0: data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet          (many episodes)
          videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4 (many episodes)
          meta/episodes/chunk-*/file-*.parquet: episode_index, tasks, length,
              dataset_from_index, dataset_to_index, data/chunk_index, data/file_index,
              videos/{key}/chunk_index, videos/{key}/file_index,
              videos/{key}/from_timestamp, videos/{key}/to_timestamp
          meta/tasks.parquet  task_index per task (the task string is the pandas index)

Frame rows carry the feature columns plus ``timestamp``, ``frame_index``, ``episode_index``,
``index`` and ``task_index``. Features of dtype ``video`` are decoded from the MP4 files
with PyAV; dtype ``image`` is a struct of encoded ``bytes`` in the parquet file (PIL).

Mapping to our episode (:class:`LeRobotKeys`, defaults for the LIBERO conversions, whose
images come from the OpenVLA RLDS release and are already rotated by 180 degrees, i.e. in
the policy orientation; whose 8-dim state is eef position (3), eef axis-angle (3), gripper
fingers (2); and whose actions are LIBERO env actions, gripper -1 open / +1 close).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rocket_vla.data.episodes import Episode
from rocket_vla.errors import RocketError

SUPPORTED = ("v2.0", "v2.1", "v3.0")


@dataclass(frozen=True)
class LeRobotKeys:
    """Which LeRobot features become which of our episode arrays (first present name wins)."""

    agentview: tuple[str, ...] = ("observation.images.image", "image", "observation.images.agentview",
                                  "observation.images.front")
    wrist: tuple[str, ...] = ("observation.images.wrist_image", "wrist_image", "observation.images.image2",
                              "observation.images.wrist")
    state: tuple[str, ...] = ("observation.state", "state")
    action: tuple[str, ...] = ("action", "actions")
    #: "policy" = already rotated by 180 degrees (LIBERO conversions); "opengl" = raw renderer
    image_orientation: str = "policy"


def is_lerobot_dataset(path: str | Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


def _pick(features: dict[str, Any], names: tuple[str, ...], what: str, root: Path) -> str:
    for name in names:
        if name in features:
            return name
    raise RocketError(
        f"{root} has no {what} feature (looked for {', '.join(names)}; it has {', '.join(features)}); "
        "pass LeRobotKeys naming the right feature."
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _table(path: Path) -> Any:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise RocketError(f"{path} is missing; the LeRobot dataset is incomplete, download it again.")
    return pq.read_table(path)


def _decode_video(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames of an MP4 as uint8 [N, H, W, 3] and their timestamps in seconds."""
    import av

    if not path.is_file():
        raise RocketError(f"video {path} is missing; the LeRobot dataset is incomplete, download it again.")
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base) if frame.pts is not None else len(times))
    if not frames:
        raise RocketError(f"video {path} has no frames; the LeRobot dataset is corrupt.")
    return np.stack(frames), np.asarray(times)


def _decode_images(column: list[Any]) -> np.ndarray:
    import io

    from PIL import Image

    out = []
    for cell in column:
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(out)


class _Videos:
    """Decoded MP4 files, kept until the next file is needed (v3 files hold many episodes)."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def frames(self, path: Path, start: float, length: int, fps: float) -> np.ndarray:
        if path not in self._cache:
            self._cache = {path: _decode_video(path)}  # one file at a time bounds memory
        frames, times = self._cache[path]
        want = start + np.arange(length) / fps
        idx = np.searchsorted(times, want - 0.5 / fps)  # nearest frame at or after t - half a frame
        if idx.size and (idx[-1] >= len(times) or np.abs(times[idx] - want).max() > 0.5 / fps):
            raise RocketError(
                f"video {path} lacks frames for t = {want[0]:.3f}..{want[-1]:.3f} s; the dataset's "
                "videos and parquet files disagree, download it again."
            )
        return frames[idx]


def iter_lerobot_episodes(root: str | Path, *, images: bool = True,
                          keys: LeRobotKeys | None = None) -> Iterator[Episode]:
    """Yield the episodes of a local LeRobot dataset (v2.1 or v3.0) in episode order."""
    root = Path(root)
    keys = keys or LeRobotKeys()
    info = json.loads((root / "meta" / "info.json").read_text(encoding="utf-8"))
    version = str(info.get("codebase_version", ""))
    if version not in SUPPORTED:
        raise RocketError(
            f"{root} is LeRobot format {version or 'unknown'}; rocket-vla reads {', '.join(SUPPORTED)} "
            "(convert it with LeRobot's conversion script)."
        )
    features = info.get("features", {})
    cams = {"agentview_rgb": _pick(features, keys.agentview, "agentview image", root),
            "eye_in_hand_rgb": _pick(features, keys.wrist, "wrist image", root)}
    state_key = _pick(features, keys.state, "state", root)
    action_key = _pick(features, keys.action, "action", root)
    shapes = [list(features[k].get("shape", [])) for k in (state_key, action_key)]
    if shapes != [[8], [7]]:
        raise RocketError(
            f"{root} has {state_key} of shape {features[state_key].get('shape')} and {action_key} of "
            f"shape {features[action_key].get('shape')}; LIBERO data needs an 8-dim state (eef pos, "
            "axis-angle, 2 gripper joints) and 7-dim actions."
        )
    fps = float(info.get("fps", 10))
    videos = _Videos()
    for ep in _episode_rows(root, info, version):
        table = ep["table"]
        n = ep["length"]
        state = np.asarray(table.column(state_key).to_pylist(), dtype=np.float64).reshape(n, 8)
        actions = np.asarray(table.column(action_key).to_pylist(), dtype=np.float32).reshape(n, 7)
        obs: dict[str, np.ndarray] = {"ee_pos": state[:, :3], "ee_ori": state[:, 3:6],
                                      "gripper_states": state[:, 6:8],
                                      "ee_states": state[:, :6]}
        if images:
            for ours, theirs in cams.items():
                if features[theirs].get("dtype") == "video":
                    path = root / info["video_path"].format(video_key=theirs, **ep["video_fmt"](theirs))
                    arr = videos.frames(path, ep["video_start"](theirs), n, fps)
                else:
                    arr = _decode_images(table.column(theirs).to_pylist())
                if keys.image_orientation == "opengl":
                    arr = np.ascontiguousarray(arr[:, ::-1, ::-1])
                obs[ours] = arr
        yield Episode(actions, obs, ep["task"], np.arange(n, dtype=np.int64),
                      {"lerobot_version": version, "fps": fps, "episode_index": ep["index"]},
                      name=f"episode_{ep['index']:06d}", source=str(root))


def _episode_rows(root: Path, info: dict[str, Any], version: str) -> Iterator[dict[str, Any]]:
    """Per episode: its frame table, task string, and how to find its video frames."""
    import pyarrow.compute as pc

    if version == "v3.0":
        # LeRobot writes a pandas frame indexed by the task string: the strings land in a
        # column named after the index ("task") or "__index_level_0__" when it is unnamed.
        tasks_table = _table(root / "meta" / "tasks.parquet")
        names = [c for c in ("task", "__index_level_0__") if c in tasks_table.column_names]
        if not names or "task_index" not in tasks_table.column_names:
            raise RocketError(f"{root}/meta/tasks.parquet has no task strings; the dataset is incomplete.")
        tasks = dict(zip(tasks_table.column("task_index").to_pylist(),
                         tasks_table.column(names[0]).to_pylist(), strict=True))
        meta_files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
        if not meta_files:
            raise RocketError(f"{root}/meta/episodes has no parquet files; the dataset is incomplete.")
        rows = [r for f in meta_files for r in _table(f).to_pylist()]
        data_cache: dict[Path, Any] = {}
        for r in sorted(rows, key=lambda r: r["episode_index"]):
            data_path = root / info["data_path"].format(chunk_index=r["data/chunk_index"],
                                                        file_index=r["data/file_index"])
            if data_path not in data_cache:
                data_cache = {data_path: _table(data_path)}
            full = data_cache[data_path]
            table = full.filter(pc.equal(full.column("episode_index"), r["episode_index"]))
            task_index = table.column("task_index")[0].as_py() if table.num_rows else None
            yield {"index": int(r["episode_index"]), "length": table.num_rows, "table": table,
                   "task": str(tasks.get(task_index, (r.get("tasks") or [""])[0])),
                   "video_fmt": lambda key, r=r: {"chunk_index": r[f"videos/{key}/chunk_index"],
                                                  "file_index": r[f"videos/{key}/file_index"]},
                   "video_start": lambda key, r=r: float(r[f"videos/{key}/from_timestamp"])}
    else:
        tasks = {t["task_index"]: t["task"] for t in _read_jsonl(root / "meta" / "tasks.jsonl")}
        chunks = int(info.get("chunks_size", 1000))
        for r in sorted(_read_jsonl(root / "meta" / "episodes.jsonl"), key=lambda r: r["episode_index"]):
            idx = int(r["episode_index"])
            fmt = {"episode_chunk": idx // chunks, "episode_index": idx}
            table = _table(root / info["data_path"].format(**fmt))
            task_index = table.column("task_index")[0].as_py() if table.num_rows else None
            yield {"index": idx, "length": table.num_rows, "table": table,
                   "task": str(tasks.get(task_index, (r.get("tasks") or [""])[0])),
                   "video_fmt": lambda key, fmt=fmt: fmt, "video_start": lambda key: 0.0}

"""Read a LeRobot-format dataset (v2.x or v3.0) from a local folder as :class:`Episode` objects.

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

from rocket_vla.data import validate
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
    """The records of a JSON-lines metadata file; a missing file or a damaged line is one
    sentence naming the file and line."""
    if not path.is_file():
        raise RocketError(f"{path} is missing; the LeRobot dataset is incomplete, download it again.")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise RocketError(f"{path} line {number} is not a JSON object; the metadata is damaged, "
                              "download the dataset again.")
        out.append(record)
    return out


def _reason(err: BaseException, path: Path) -> str:
    """A library's error, short and without the path (the message names the file already)."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    text = str(text).splitlines()[0].replace(f"'{path}'", "").replace(str(path), "")
    first = text.replace(" :", ":").split(". ")[0].strip(" :.")  # one clause, not a paragraph
    return first[:100] or type(err).__name__


def _table(path: Path) -> Any:
    """A parquet file as a pyarrow table; a truncated or damaged file is one sentence."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise RocketError(f"{path} is missing; the LeRobot dataset is incomplete, download it again.")
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise RocketError(
            f"{path} cannot be read ({_reason(err, path)}); the file is truncated or damaged, download the "
            "dataset again."
        ) from None


def _decode_video(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames of an MP4 as uint8 [N, H, W, 3] and their timestamps in seconds."""
    import av

    if not path.is_file():
        raise RocketError(f"video {path} is missing; the LeRobot dataset is incomplete, download it again.")
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.pts * stream.time_base) if frame.pts is not None else len(times))
    except (av.FFmpegError, OSError, IndexError) as err:
        raise RocketError(
            f"video {path} cannot be decoded ({_reason(err, path)}); the file is truncated or damaged, "
            "download the dataset again."
        ) from None
    if not frames:
        raise RocketError(f"video {path} has no frames; the LeRobot dataset is corrupt, download it again.")
    return np.stack(frames), np.asarray(times)


def _decode_images(column: list[Any], where: str) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError

    out = []
    for row, cell in enumerate(column):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        try:
            out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        except (OSError, TypeError, UnidentifiedImageError):
            raise RocketError(f"{where} frame {row} is not a readable image; the file is damaged, "
                              "download the dataset again.") from None
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


def _fill(template: str, root: Path, **fields: Any) -> Path:
    """A path from one of info.json's templates; a template that does not fit the layout
    (a field this version does not have) is one sentence."""
    try:
        return root / template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise RocketError(
            f"{root}/meta/info.json has the path template {template!r}, which needs a field this "
            f"layout lacks ({err!r}); fix info.json or download the dataset again."
        ) from None


def iter_lerobot_episodes(root: str | Path, *, images: bool = True,
                          keys: LeRobotKeys | None = None) -> Iterator[Episode]:
    """Yield the episodes of a local LeRobot dataset (v2.x or v3.0) in episode order.

    The metadata is checked first (:func:`rocket_vla.data.validate.load_lerobot_info`, the
    layout against the version, the mapped features' shapes); then each episode's rows,
    vector widths, finiteness and frame sizes against it, before the episode is yielded.
    """
    root = Path(root)
    keys = keys or LeRobotKeys()
    info = validate.load_lerobot_info(root, SUPPORTED)
    version = str(info["codebase_version"])
    validate.check_lerobot_layout(root, version)
    features = info["features"]
    cams = {"agentview_rgb": _pick(features, keys.agentview, "agentview image", root),
            "eye_in_hand_rgb": _pick(features, keys.wrist, "wrist image", root)}
    state_key = _pick(features, keys.state, "state", root)
    action_key = _pick(features, keys.action, "action", root)
    widths = {state_key: 8, action_key: validate.ACTION_DIM}
    sizes = validate.check_lerobot_features(info, root, cams, widths)
    in_table = [*widths, *(t for t in cams.values() if features[t].get("dtype") != "video")]
    fps = float(info.get("fps", 10))
    videos = _Videos()
    for ep in _episode_rows(root, info, version):
        table, file, index = ep["table"], ep["file"], ep["index"]
        n = validate.check_episode_table(table, file, index, ep["length"], in_table)
        state = validate.vectors(table, state_key, 8, file, index)
        actions = validate.vectors(table, action_key, validate.ACTION_DIM, file, index).astype(np.float32)
        obs: dict[str, np.ndarray] = {"ee_pos": state[:, :3], "ee_ori": state[:, 3:6],
                                      "gripper_states": state[:, 6:8],
                                      "ee_states": state[:, :6]}
        if images:
            for ours, theirs in cams.items():
                if features[theirs].get("dtype") == "video":
                    path = _fill(info["video_path"], root, video_key=theirs, **ep["video_fmt"](theirs))
                    arr = videos.frames(path, ep["video_start"](theirs), n, fps)
                    source = f"video {path}"
                else:
                    source = f"{file} (episode {index}) {theirs}"
                    arr = _decode_images(table.column(theirs).to_pylist(), source)
                validate.check_frames(arr, sizes[ours], source, theirs)
                if keys.image_orientation == "opengl":
                    arr = np.ascontiguousarray(arr[:, ::-1, ::-1])
                obs[ours] = arr
        yield Episode(actions, obs, ep["task"], np.arange(n, dtype=np.int64),
                      {"lerobot_version": version, "fps": fps, "episode_index": index},
                      name=f"episode_{index:06d}", source=str(root))


#: Columns every v3.0 ``meta/episodes`` row needs (per video feature also its chunk, file
#: and start time).
V3_EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index")


def _episode_rows(root: Path, info: dict[str, Any], version: str) -> Iterator[dict[str, Any]]:
    """Per episode: its frame table and file, the metadata's length, task string, and how
    to find its video frames."""
    if version == "v3.0":
        yield from _v3_rows(root, info)
    else:
        yield from _v2_rows(root, info)


def _v3_rows(root: Path, info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    import pyarrow.compute as pc

    # LeRobot writes a pandas frame indexed by the task string: the strings land in a
    # column named after the index ("task") or "__index_level_0__" when it is unnamed.
    tasks_table = _table(root / "meta" / "tasks.parquet")
    names = [c for c in ("task", "__index_level_0__") if c in tasks_table.column_names]
    if not names or "task_index" not in tasks_table.column_names:
        raise RocketError(f"{root}/meta/tasks.parquet has no task strings; the dataset is incomplete.")
    tasks = dict(zip(tasks_table.column("task_index").to_pylist(),
                     tasks_table.column(names[0]).to_pylist(), strict=True))
    videos = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    need = [*V3_EPISODE_COLUMNS, *(f"videos/{k}/{c}" for k in videos
                                   for c in ("chunk_index", "file_index", "from_timestamp"))]
    rows = []
    for f in sorted((root / "meta" / "episodes").rglob("*.parquet")):
        table = _table(f)
        missing = [c for c in need if c not in table.column_names]
        if missing:
            raise RocketError(f"{f} lacks the column(s) {', '.join(missing)}; the episode metadata "
                              "is incomplete, download the dataset again.")
        rows.extend(table.to_pylist())
    data_cache: dict[Path, Any] = {}
    for r in sorted(rows, key=lambda r: r["episode_index"]):
        data_path = _fill(info["data_path"], root, chunk_index=r["data/chunk_index"],
                          file_index=r["data/file_index"])
        if data_path not in data_cache:
            data_cache = {data_path: _table(data_path)}
        full = data_cache[data_path]
        if "episode_index" not in full.column_names:
            raise RocketError(f"{data_path} has no episode_index column; download the dataset again.")
        table = full.filter(pc.equal(full.column("episode_index"), r["episode_index"]))
        yield {"index": int(r["episode_index"]), "length": r["length"], "table": table,
               "file": data_path, "task": _task(tasks, table, r),
               "video_fmt": lambda key, r=r: {"chunk_index": r[f"videos/{key}/chunk_index"],
                                              "file_index": r[f"videos/{key}/file_index"]},
               "video_start": lambda key, r=r: float(r[f"videos/{key}/from_timestamp"])}


def _v2_rows(root: Path, info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    tasks = {t.get("task_index"): t.get("task") for t in _read_jsonl(root / "meta" / "tasks.jsonl")}
    chunks = int(info.get("chunks_size", 1000))
    episodes = _read_jsonl(root / "meta" / "episodes.jsonl")
    for number, r in enumerate(episodes, start=1):
        if not isinstance(r.get("episode_index"), int) or "length" not in r:
            raise RocketError(f"{root}/meta/episodes.jsonl line {number} lacks episode_index or "
                              "length; the metadata is damaged, download the dataset again.")
    for r in sorted(episodes, key=lambda r: r["episode_index"]):
        idx = int(r["episode_index"])
        fmt = {"episode_chunk": idx // chunks, "episode_index": idx}
        data_path = _fill(info["data_path"], root, **fmt)
        table = _table(data_path)
        yield {"index": idx, "length": r["length"], "table": table, "file": data_path,
               "task": _task(tasks, table, r),
               "video_fmt": lambda key, fmt=fmt: fmt, "video_start": lambda key: 0.0}


def _task(tasks: dict[Any, Any], table: Any, meta: dict[str, Any]) -> str:
    """The episode's instruction: its first row's task_index, else the metadata's tasks."""
    task_index = (table.column("task_index")[0].as_py()
                  if table.num_rows and "task_index" in table.column_names else None)
    return str(tasks.get(task_index, (meta.get("tasks") or [""])[0]))

"""Checks of dataset input at the point it enters: shapes, dtypes, ranges and indices.

The readers (:mod:`rocket_vla.data.episodes` for HDF5, :mod:`rocket_vla.data.lerobot`)
call these on every episode before any training work, so a malformed file is refused with
one sentence naming the file, the episode, what is wrong and the fix -- instead of being
trained on silently (an ``inf`` action clipped to the normalisation bound, float images
divided by 255 a second time, image rows paired with the wrong actions) or failing with a
traceback in collate after training started.

Layout checks read only HDF5 metadata (shapes, dtypes) and the small index arrays, so they
cost nothing on large image datasets; value checks run on the arrays the reader has loaded
anyway.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rocket_vla.errors import RocketError

#: The camera arrays training reads from each episode, agentview first.
CAMERA_ARRAYS = ("agentview_rgb", "eye_in_hand_rgb")
#: Low-dimensional observations training reads (the 8-dim proprio) and their widths.
PROPRIO_WIDTHS = {"ee_pos": 3, "ee_ori": 3, "gripper_states": 2}
ACTION_DIM = 7


# -- shared -------------------------------------------------------------------------------
def check_finite(values: np.ndarray, where: str, what: str) -> None:
    """Refuse NaN or inf in a [T, D] array: normalisation would clip inf to the bound and
    propagate NaN into the loss, so neither may reach training."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    flat = arr.reshape(len(arr), -1)
    bad = ~np.isfinite(flat)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise RocketError(
            f"{where} holds {flat[row, col]} at step {row} (dim {col}); {what} must be finite "
            "numbers, re-collect or remove this episode."
        )


def check_images(shape: tuple[int, ...], dtype: np.dtype, where: str) -> tuple[int, int]:
    """Camera frames must be uint8 ``[N, H, W, 3]``: training divides by 255, so floats in
    [0, 1] would become black frames and other channel counts cannot be stacked."""
    if len(shape) != 4 or shape[-1] != 3:
        raise RocketError(
            f"{where} has shape {tuple(shape)}; expected RGB frames [N, H, W, 3] -- convert "
            "grayscale or RGBA frames to RGB and write the file again."
        )
    if np.dtype(dtype) != np.uint8:
        raise RocketError(
            f"{where} stores {np.dtype(dtype)} images; store uint8 0-255 images (for floats in "
            "[0, 1]: (images * 255).round().astype('uint8')) and write the file again."
        )
    return int(shape[1]), int(shape[2])


def check_camera_sizes(sizes: Mapping[str, tuple[int, int]], where: str) -> None:
    """Both cameras of an episode are stacked into one tensor, so they need one size."""
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        spelled = " but ".join(f"{key} is {h}x{w} px" for key, (h, w) in sizes.items())
        raise RocketError(
            f"{where}: {spelled}; both cameras must have one image size, resize them to match."
        )


class SameLayout:
    """Every episode of a dataset must have the cameras and image size of the first one:
    samples of different episodes are batched together, so a mismatch would otherwise fail
    in collate after training started."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[int, int]] | None = None
        self.first_where = ""

    def check(self, sizes: Mapping[str, tuple[int, int]], where: str) -> None:
        """``sizes``: camera array -> (height, width) of this episode."""
        if self.first is None:
            self.first, self.first_where = dict(sizes), where
            return
        for key in self.first.keys() - sizes.keys():
            raise RocketError(
                f"{where} has no {key} images although {self.first_where} has them; every "
                "episode needs the same cameras, re-collect or remove this episode."
            )
        for key in sizes.keys() - self.first.keys():
            raise RocketError(
                f"{where} has {key} images although {self.first_where} has none; every episode "
                "needs the same cameras, re-collect or remove the odd episodes."
            )
        for key, size in sizes.items():
            if size != self.first[key]:
                raise RocketError(
                    f"{where} has {key} of {size[0]}x{size[1]} px but {self.first_where} has "
                    f"{self.first[key][0]}x{self.first[key][1]}; every episode of a dataset must "
                    "have one image size, resize or re-collect the odd episodes."
                )


# -- HDF5 (LIBERO / robomimic layout) -----------------------------------------------------
def check_demo_layout(group: Any, where: str) -> tuple[int, np.ndarray, dict[str, tuple[int, int]]]:
    """Check a ``data/demo_k`` group from its metadata before its arrays are read.

    Returns the number of steps T, the validated ``frame_index`` and the camera sizes.
    """
    if "actions" not in group or "obs" not in group:
        raise RocketError(f"{where} lacks 'actions' or 'obs'; expected the LIBERO/robomimic layout.")
    shape = tuple(group["actions"].shape)
    if len(shape) != 2 or shape[1] != ACTION_DIM:
        raise RocketError(
            f"{where}/actions has shape {shape}; expected [T, 7] LIBERO delta actions."
        )
    t = shape[0]
    if t == 0:
        raise RocketError(
            f"{where} has no steps (actions of shape {shape}); remove this empty demo from the "
            "file or re-collect it."
        )
    frame_index = _frame_index(group, t, where)
    obs = group["obs"]
    for key, ds in obs.items():
        if not hasattr(ds, "shape"):
            raise RocketError(f"{where}/obs/{key} is a group, not an array; expected the LIBERO "
                              "layout, re-collect or convert the file.")
        is_frame = key.endswith(("_rgb", "_depth", "_extrinsics"))
        rows = len(frame_index) if is_frame else t
        if not ds.shape or ds.shape[0] != rows:
            got = ds.shape[0] if ds.shape else "no"
            raise RocketError(
                f"{where}/obs/{key} has {got} rows but {rows} were expected; the file is "
                "truncated or not in the LIBERO layout, re-collect it."
            )
    for key, width in PROPRIO_WIDTHS.items():
        if key in obs and (len(obs[key].shape) != 2 or obs[key].shape[1] != width):
            raise RocketError(
                f"{where}/obs/{key} has shape {tuple(obs[key].shape)}; expected [T, {width}] as in "
                "the LIBERO layout, re-collect or convert the file."
            )
    sizes = {key: check_images(tuple(obs[key].shape), obs[key].dtype, f"{where}/obs/{key}")
             for key in CAMERA_ARRAYS if key in obs}
    check_camera_sizes(sizes, where)
    return t, frame_index, sizes


def _frame_index(group: Any, t: int, where: str) -> np.ndarray:
    """The step of each image row: integers in [0, T), each step at most once (a negative,
    repeated or too large step pairs images with the wrong actions)."""
    if "frame_index" not in group:
        return np.arange(t, dtype=np.int64)
    ds = group["frame_index"]
    if len(ds.shape) != 1 or ds.dtype.kind not in "iu":
        raise RocketError(
            f"{where}/frame_index is {ds.dtype} of shape {tuple(ds.shape)}; expected [N] integer "
            "steps, re-collect this demo."
        )
    index = np.asarray(ds[()], dtype=np.int64)
    outside = index[(index < 0) | (index >= t)]
    if outside.size:
        raise RocketError(
            f"{where}/frame_index has step {int(outside[0])} outside the demo's {t} steps "
            f"(0..{t - 1}); the file is corrupt, re-collect this demo."
        )
    steps, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        raise RocketError(
            f"{where}/frame_index lists step {int(steps[counts > 1][0])} "
            f"{int(counts.max())} times; each image row needs its own step, re-collect this demo."
        )
    return index


def check_demo_values(actions: np.ndarray, obs: Mapping[str, np.ndarray], where: str) -> None:
    """Actions and the proprio observations training reads must be finite."""
    check_finite(actions, f"{where}/actions", "actions")
    for key in PROPRIO_WIDTHS:
        if key in obs:
            check_finite(obs[key], f"{where}/obs/{key}", "observations")


# -- LeRobot (v2.x / v3.0) ----------------------------------------------------------------
def load_lerobot_info(root: Path, supported: Iterable[str]) -> dict[str, Any]:
    """``meta/info.json``, checked for what the reader uses: the version, the features (each
    with a shape), the data path template, a positive fps and chunk size."""
    path = root / "meta" / "info.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RocketError(
            f"{path} is not valid JSON ({str(err).splitlines()[0][:80]}); the metadata is "
            "damaged, download the dataset again."
        ) from None
    if not isinstance(info, dict):
        raise RocketError(f"{path} holds no JSON object; download the dataset again.")
    version = str(info.get("codebase_version", ""))
    supported = tuple(supported)
    if version not in supported:
        raise RocketError(
            f"{root} is LeRobot format {version or 'unknown'}; rocket-vla reads {', '.join(supported)} "
            "(convert it with LeRobot's conversion script)."
        )
    features = info.get("features")
    if not isinstance(features, dict) or not all(
            isinstance(f, dict) and isinstance(f.get("shape"), list) for f in features.values()):
        raise RocketError(
            f"{path} has no 'features' mapping with a shape per feature; the metadata is damaged, "
            "download the dataset again."
        )
    if not isinstance(info.get("data_path"), str):
        raise RocketError(f"{path} has no 'data_path' template; download the dataset again.")
    fps = info.get("fps", 10)
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise RocketError(f"{path} has fps {fps!r}; it must be a positive number, fix info.json.")
    chunks = info.get("chunks_size", 1000)
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks <= 0:
        raise RocketError(f"{path} has chunks_size {chunks!r}; it must be a positive integer, fix "
                          "info.json.")
    return info


def check_lerobot_layout(root: Path, version: str) -> None:
    """The folder's layout must match its ``codebase_version``: v2.x lists episodes in
    ``meta/episodes.jsonl`` (one parquet per episode), v3.0 in ``meta/episodes/*.parquet``."""
    jsonl = root / "meta" / "episodes.jsonl"
    v3_meta = any((root / "meta" / "episodes").rglob("*.parquet"))  # empty if no such folder
    if version.startswith("v2") and not jsonl.is_file():
        if v3_meta:
            raise RocketError(
                f"{root}/meta/info.json says codebase_version {version} but the folder has the "
                "v3.0 layout (meta/episodes/*.parquet, no meta/episodes.jsonl); set "
                "codebase_version to \"v3.0\" or download the dataset again."
            )
        raise RocketError(
            f"{jsonl} is missing; the LeRobot {version} dataset is incomplete, download it again."
        )
    if version == "v3.0" and not v3_meta:
        if jsonl.is_file():
            raise RocketError(
                f"{root}/meta/info.json says codebase_version v3.0 but the folder has the v2 "
                "layout (meta/episodes.jsonl); set codebase_version to \"v2.1\" or download the "
                "dataset again."
            )
        raise RocketError(
            f"{root}/meta/episodes has no parquet files; the LeRobot v3.0 dataset is incomplete, "
            "download it again."
        )


def feature_size(feature: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of an image/video feature from its shape and axis names
    (LeRobot writes ``[H, W, 3]`` with names height/width/channel; some conversions
    ``[3, H, W]`` with channel first)."""
    shape = [int(s) for s in feature["shape"]]
    names = [str(n).lower() for n in (feature.get("names") or [])]
    if len(shape) == 3 and "height" in names and "width" in names and len(names) == 3:
        return shape[names.index("height")], shape[names.index("width")]
    if len(shape) == 3 and shape[0] == 3 and shape[2] != 3:
        return shape[1], shape[2]
    if len(shape) == 3:
        return shape[0], shape[1]
    raise RocketError(f"image feature of shape {shape} is not [H, W, 3]; fix meta/info.json.")


def check_lerobot_features(info: Mapping[str, Any], root: Path, cams: Mapping[str, str],
                           widths: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The mapped features' metadata: vector widths of state and action, one image size for
    both cameras, and a video path template when a camera is a video. Returns the sizes."""
    features = info["features"]
    for key, width in widths.items():
        shape = features[key]["shape"]
        if shape != [width]:
            raise RocketError(
                f"{root}/meta/info.json gives {key} shape {shape} but LIBERO data needs [{width}] "
                "(state: eef pos 3, axis-angle 3, gripper joints 2; action: 7-dim delta); convert "
                "the dataset or pass LeRobotKeys naming the right feature."
            )
    sizes = {ours: feature_size(features[theirs]) for ours, theirs in cams.items()}
    check_camera_sizes(sizes, f"{root}/meta/info.json")
    if any(features[t].get("dtype") == "video" for t in cams.values()) and not isinstance(
            info.get("video_path"), str):
        raise RocketError(f"{root}/meta/info.json has video features but no 'video_path'; "
                          "download the dataset again.")
    return sizes


def check_episode_table(table: Any, file: Path, index: int, length: Any,
                        columns: Iterable[str]) -> int:
    """An episode's frame rows against its metadata: the length the metadata gives (rows
    missing from a truncated file are refused, not trained around), the feature columns,
    and ``frame_index`` running 0..n-1 in order. Returns the number of frames."""
    where = f"{file} (episode {index})"
    if not isinstance(length, int) or isinstance(length, bool):
        raise RocketError(f"{where}: the metadata gives length {length!r}; download the dataset again.")
    if length == 0:
        raise RocketError(
            f"{where} has no frames (length 0 in the metadata); remove the empty episode from the "
            "metadata or download the dataset again."
        )
    if table.num_rows != length:
        raise RocketError(
            f"{where} holds {table.num_rows} rows but the metadata says the episode has {length}; "
            "the files disagree (truncated or mixed versions), download the dataset again."
        )
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise RocketError(f"{where} lacks the column(s) {', '.join(missing)} that meta/info.json "
                          "lists; download the dataset again.")
    if "frame_index" in table.column_names:
        steps = np.asarray(table.column("frame_index").to_pylist())
        if not np.array_equal(steps, np.arange(length)):
            raise RocketError(
                f"{where}: frame_index does not run 0..{length - 1} in order; the rows are "
                "shuffled or duplicated, download the dataset again."
            )
    return length


def vectors(table: Any, key: str, width: int, file: Path, index: int) -> np.ndarray:
    """A list column as float64 ``[n, width]``, refusing rows of another width than the
    metadata says (reshaping them would mix values of neighbouring frames)."""
    rows = table.column(key).to_pylist()
    odd = next((r for r in rows if not isinstance(r, list | tuple) or len(r) != width), False)
    if odd is not False:
        got = len(odd) if isinstance(odd, list | tuple) else "no"
        raise RocketError(
            f"{file} (episode {index}): {key} rows have {got} values but meta/info.json says "
            f"{width}; the data and metadata disagree, download the dataset again."
        )
    try:
        arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    except (TypeError, ValueError) as err:
        raise RocketError(f"{file} (episode {index}): {key} holds non-numbers ({err}); download "
                          "the dataset again.") from None
    check_finite(arr, f"{file} (episode {index}) {key}", key)
    return arr


def check_frames(frames: np.ndarray, want: tuple[int, int], source: str, feature: str) -> None:
    """Decoded frames must have the size the metadata gives for their feature."""
    h, w = frames.shape[1:3]
    if (h, w) != tuple(want):
        raise RocketError(
            f"{source} is {h}x{w} px but meta/info.json says {feature} is {want[0]}x{want[1]}; "
            "re-encode it at the metadata's size or download the dataset again."
        )

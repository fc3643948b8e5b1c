"""Episodes in the LIBERO / robomimic HDF5 layout: one reader for official files and ours.

Layout (what the official LIBERO datasets use, plus optional extras marked *)::

    data                      attrs: problem_info (JSON with "language_instruction"),
                                     env_name, bddl_file_name, macros_image_convention,
                                     num_demos, total, *rocket_format, *frame_stride,
                                     *suite, *task_id, *image_size
    data/demo_k               attrs: num_samples, *init_state_index, *seed,
                                     *agentview_intrinsics, *eye_in_hand_intrinsics
    data/demo_k/actions       [T, 7] float: delta pos (3), delta axis-angle (3), gripper
                                     in LIBERO's env convention (-1 open, +1 close)
    data/demo_k/states        [T, S] MuJoCo states;  rewards, dones [T]
    data/demo_k/obs/ee_pos [T,3]  ee_ori [T,3] (axis-angle)  ee_states [T,6]
                    gripper_states [T,2]  joint_states [T,7]
                    agentview_rgb [N,H,W,3] uint8   eye_in_hand_rgb [N,H,W,3] uint8
                   *agentview_depth [N,H,W] float32 metres  *eye_in_hand_depth
                   *agentview_extrinsics [N,4,4]  *eye_in_hand_extrinsics [N,4,4]
    data/demo_k/frame_index  *[N] int64: the step of each image row (absent = every step)

Images are stored as the renderer produces them (OpenGL convention, upside down), exactly
like the official files, so our files stay drop-in replacements for LIBERO tooling. The
reader returns them in the POLICY orientation (rotated 180 degrees, as
:mod:`rocket_vla.envs.policy` documents) together with intrinsics that match the returned
pixels: training and evaluation therefore see identical images by construction.
Camera conventions: extrinsics are camera-to-world 4x4 poses with OpenCV axes (x right,
y down, z forward); a pixel (u = column, v = row) with metric depth d is the world point
``T @ [d * K^-1 (u, v, 1), 1]``. MuJoCo's raw buffer is the upright view flipped
vertically, so the 180-degree-rotated image is the upright view mirrored left-right and its
K has a negative fx; use K as given rather than assuming fx > 0.

A dataset is a file or a directory of ``*.hdf5`` files. :class:`EpisodeWriter` writes one
file per episode to a temporary name and renames it when complete, so a crash mid-collection
leaves every finished episode readable and no half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rocket_vla.data import validate
from rocket_vla.errors import RocketError

#: 2: ee_ori is robosuite's quat2axisangle (no w >= 0 flip), like the official LIBERO data.
FORMAT_VERSION = 2
CAMERA_KEYS = ("agentview", "eye_in_hand")
IMAGE_KEYS = ("agentview_rgb", "eye_in_hand_rgb", "agentview_depth", "eye_in_hand_depth")
LOW_DIM_KEYS = ("ee_pos", "ee_ori", "ee_states", "gripper_states", "joint_states")


@dataclass
class Episode:
    """One demonstration.

    actions: [T, 7] float32 in LIBERO's env convention (gripper -1 open / +1 close; use
        :func:`gripper_env_to_model` for the policy convention).
    obs: name -> array. Low-dim keys (``ee_pos``, ``ee_ori``, ``gripper_states``,
        ``joint_states``, ...) have T rows (one per step); image-like keys (``*_rgb``,
        ``*_depth``, ``*_extrinsics``) have N rows, one per entry of ``frame_index``.
        Images are in the policy orientation (rotated 180 degrees).
    language: the task instruction.
    frame_index: [N] int64, the step each image row belongs to (arange(T) for official files).
    attrs: file and episode attributes (``frame_stride``, ``suite``, ``task_id``,
        ``agentview_intrinsics`` / ``eye_in_hand_intrinsics`` matching the returned images...).
    """

    actions: np.ndarray
    obs: dict[str, np.ndarray]
    language: str
    frame_index: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    source: str = ""

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def gripper_env_to_model(actions: np.ndarray, gripper: str = "unit") -> np.ndarray:
    """Return a copy of ``actions`` with the gripper in the model convention.

    The inverse of the runner's mapping: LIBERO's -1 (open) -> 1, +1 (close) -> 0 for
    ``gripper="unit"``; -1 -> +1, +1 -> -1 for ``gripper="signed"``.
    """
    out = np.array(actions, dtype=np.float32, copy=True)
    g = np.sign(out[..., 6])
    if gripper == "unit":
        out[..., 6] = (1.0 - g) / 2.0
    elif gripper == "signed":
        out[..., 6] = -g
    else:
        raise RocketError(f"unknown gripper convention {gripper!r}; use 'unit' or 'signed'.")
    return out


def rotate_intrinsics_180(k: np.ndarray, height: int, width: int) -> np.ndarray:
    """Intrinsics of an image rotated by 180 degrees (u' = W-1-u, v' = H-1-v); an involution."""
    out = np.array(k, dtype=np.float64)
    out[0, 0], out[1, 1] = -out[0, 0], -out[1, 1]
    out[0, 2], out[1, 2] = (width - 1) - out[0, 2], (height - 1) - out[1, 2]
    return out


def _to_policy_orientation(images: np.ndarray, convention: str) -> np.ndarray:
    """Stored frames [N, H, W, ...] -> policy orientation (raw OpenGL rotated 180 degrees)."""
    if convention == "opengl":
        return np.ascontiguousarray(images[:, ::-1, ::-1])
    if convention == "opencv":  # stored upright (raw[::-1]); policy = raw[::-1, ::-1]
        return np.ascontiguousarray(images[:, :, ::-1])
    raise RocketError(
        f"unknown image convention {convention!r} in the file; expected 'opengl' or 'opencv'."
    )


# -- reading --------------------------------------------------------------------------------
def list_episode_files(path: str | os.PathLike[str]) -> list[Path]:
    """The HDF5 files of a dataset: the file itself, or ``*.hdf5`` under a directory, sorted."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*.hdf5") if q.is_file())
        if not files:
            raise RocketError(f"no .hdf5 files under {p}; point to a LIBERO dataset file or folder.")
        return files
    if not p.exists():
        raise RocketError(f"dataset {p} does not exist; check the path or collect demos first.")
    return [p]


def dataset_files(path: str | os.PathLike[str]) -> list[Path]:
    """Every file that defines a dataset, sorted: a LeRobot folder's metadata, parquet frames
    and videos, or the HDF5 files of :func:`list_episode_files`. What fingerprints hash."""
    from rocket_vla.data.lerobot import is_lerobot_dataset

    if is_lerobot_dataset(path):
        return sorted(q for q in Path(path).rglob("*") if q.is_file())
    return list_episode_files(path)


def _language(h5: Any, path: Path) -> str:
    data = h5["data"]
    info = data.attrs.get("problem_info")
    if info is not None:
        try:
            lang = json.loads(info if isinstance(info, str) else info.decode()).get(
                "language_instruction")
        except (ValueError, AttributeError):
            lang = None
        if lang:
            return str(lang)
    if "language_instruction" in data.attrs:
        return str(data.attrs["language_instruction"])
    # Official file names spell the instruction: [SCENE_prefix_]pick_up_the_x_demo.hdf5
    stem = re.sub(r"_demo$", "", path.stem)
    stem = re.sub(r"^[A-Z0-9_]*SCENE\d+_", "", stem)
    return stem.replace("_", " ")


def _attrs(node: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.attrs.items():
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def _demo_sort_key(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


def iter_episodes(path: str | os.PathLike[str], *, images: bool = True) -> Iterator[Episode]:
    """Yield the episodes of a file or directory, one at a time (memory stays bounded).

    ``images=False`` skips the image-like arrays (fast scans for statistics).
    Raises :class:`RocketError` for a missing path, a non-HDF5 file or a wrong layout, and
    -- checked by :mod:`rocket_vla.data.validate` before the episode is yielded -- for
    non-finite actions or proprio, images that are not uint8 ``[N, H, W, 3]``, an invalid
    ``frame_index``, an empty demo, or cameras and image sizes unlike the first episode's.
    Besides our files this reads the original LIBERO release (128 px), OpenVLA-OFT's
    regenerated "no-noops" files (256 px, no attributes: the instruction comes from the file
    name), and -- for a folder with ``meta/info.json`` -- a LeRobot dataset
    (:mod:`rocket_vla.data.lerobot`).
    """
    import h5py

    from rocket_vla.data.lerobot import is_lerobot_dataset, iter_lerobot_episodes

    if is_lerobot_dataset(path):
        yield from iter_lerobot_episodes(path, images=images)
        return

    layout = validate.SameLayout()  # one camera set and image size across the dataset
    for file in list_episode_files(path):
        try:
            h5 = h5py.File(file, "r")
        except OSError as err:
            raise RocketError(
                f"{file} is not a readable HDF5 file ({err.__class__.__name__}); re-download or "
                "re-collect it."
            ) from err
        with h5:
            with _damaged(file, "data"):
                if "data" not in h5 or not any(k.startswith("demo") for k in h5["data"]):
                    raise RocketError(
                        f"{file} has no data/demo_* groups; expected the LIBERO/robomimic layout "
                        "(data/demo_k/actions, data/demo_k/obs/...)."
                    )
                file_attrs = _attrs(h5["data"])
                check_format(file_attrs, file)
                language = _language(h5, file)
                convention = str(file_attrs.get("macros_image_convention", "opengl"))
                names = sorted((k for k in h5["data"] if k.startswith("demo")), key=_demo_sort_key)
            for name in names:
                with _damaged(file, f"data/{name}"):
                    episode = _read_demo(h5["data"][name], file, name, language, convention,
                                         file_attrs, images, layout)
                yield episode


@contextlib.contextmanager
def _damaged(file: Path, where: str) -> Iterator[None]:
    """Report h5py's errors for damaged chunks, failed checksums (Fletcher-32) and broken
    metadata as one sentence naming the file and the fix."""
    try:
        yield
    except RocketError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise RocketError(
            f"{file}: {where} cannot be read ({reason}); the file is damaged -- re-collect or "
            "re-download it."
        ) from err


def check_format(file_attrs: dict[str, Any], file: Path) -> None:
    """Refuse our own collections of an older format (official files carry no version).

    Format 1 stored ``ee_ori`` flipped to w >= 0, which differs from the official data
    (and from what ``rocket eval`` feeds a policy) at most steps of a LIBERO episode.
    """
    version = file_attrs.get("rocket_format")
    if version is None:
        return
    if int(version) < FORMAT_VERSION:
        raise RocketError(
            f"{file} was collected by an older rocket-vla (format {int(version)}, proprio orientation "
            f"not as in the official LIBERO data); re-collect it with `rocket collect`."
        )
    if int(version) > FORMAT_VERSION:
        raise RocketError(
            f"{file} has format {int(version)}, newer than this rocket-vla reads ({FORMAT_VERSION}); "
            "upgrade rocket-vla."
        )


def read_episodes(path: str | os.PathLike[str], *, images: bool = True) -> list[Episode]:
    """All episodes of a file or directory as a list (see :func:`iter_episodes`)."""
    return list(iter_episodes(path, images=images))


def _read_demo(group: Any, file: Path, name: str, language: str, convention: str,
               file_attrs: dict[str, Any], images: bool, layout: validate.SameLayout) -> Episode:
    """Read one demo after checking its layout (shapes, dtypes, ``frame_index``) from the
    file's metadata, its cameras and image size against the dataset's first episode
    (``layout``), and its actions and proprio for non-finite values."""
    where = f"{file}:data/{name}"
    _, frame_index, sizes = validate.check_demo_layout(group, where)
    layout.check(sizes, where)
    actions = np.asarray(group["actions"][()], dtype=np.float32)
    attrs = {**file_attrs, **_attrs(group)}
    obs: dict[str, np.ndarray] = {}
    for key, ds in group["obs"].items():
        is_frame = key.endswith(("_rgb", "_depth", "_extrinsics"))
        if is_frame and not images and not key.endswith("_extrinsics"):
            continue
        arr = np.asarray(ds[()])
        if key.endswith(("_rgb", "_depth")):
            arr = _to_policy_orientation(arr, convention)
        obs[key] = arr
    validate.check_demo_values(actions, obs, where)
    for cam in CAMERA_KEYS:
        k = attrs.get(f"{cam}_intrinsics")
        rgb = group["obs"].get(f"{cam}_rgb")
        if k is not None and rgb is not None and convention == "opengl":
            h, w = rgb.shape[1:3]
            attrs[f"{cam}_intrinsics"] = rotate_intrinsics_180(np.asarray(k), h, w)
    return Episode(actions, obs, language, frame_index, attrs, name, str(file))


# -- writing --------------------------------------------------------------------------------
class EpisodeWriter:
    """Write episodes as ``<root>/<stem>.hdf5``, one complete file per episode.

    Each file is written under ``<stem>.hdf5.tmp`` and renamed when closed, so a file with the
    final name is always complete; a crash loses at most the episode being written. Input
    images are in the policy orientation (what :meth:`LiberoEnv.observation` returns) and are
    stored in LIBERO's raw orientation.
    """

    def __init__(self, root: str | os.PathLike[str], *, file_attrs: dict[str, Any] | None = None,
                 compression: str | None = "lzf") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.file_attrs = dict(file_attrs or {})
        self.compression = compression

    def path_for(self, stem: str) -> Path:
        return self.root / f"{stem}.hdf5"

    def exists(self, stem: str) -> bool:
        """True if the episode ``stem`` was already written completely (for resuming)."""
        return self.path_for(stem).is_file()

    def write(self, stem: str, episode: Episode, *, states: np.ndarray | None = None) -> Path:
        """Write ``episode`` (policy-orientation images) atomically; return its path."""
        import h5py

        final = self.path_for(stem)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".tmp")
        t = len(episode)
        lang = episode.language
        with h5py.File(tmp, "w") as h5:
            data = h5.create_group("data")
            attrs = {"problem_info": json.dumps({"language_instruction": lang,
                                                 "problem_name": self.file_attrs.get("problem_name", "")}),
                     "macros_image_convention": "opengl", "num_demos": 1, "total": t,
                     "rocket_format": FORMAT_VERSION, **self.file_attrs}
            for key, value in attrs.items():
                data.attrs[key] = value
            demo = data.create_group("demo_0")
            demo.attrs["num_samples"] = t
            for key, value in episode.attrs.items():
                if key.endswith("_intrinsics"):
                    rgb = episode.obs.get(key.replace("_intrinsics", "_rgb"))
                    h, w = (rgb.shape[1:3] if rgb is not None else (0, 0))
                    value = rotate_intrinsics_180(np.asarray(value), h, w)
                demo.attrs[key] = value
            _dataset(demo, "actions", np.asarray(episode.actions, dtype=np.float64))
            _dataset(demo, "frame_index", np.asarray(episode.frame_index, dtype=np.int64))
            rewards = np.zeros(t, dtype=np.uint8)
            if t:
                rewards[-1] = 1 if episode.attrs.get("success", True) else 0
            _dataset(demo, "rewards", rewards)
            _dataset(demo, "dones", rewards.copy())
            if states is not None:
                _dataset(demo, "states", np.asarray(states))
            obs = demo.create_group("obs")
            for key, arr in episode.obs.items():
                arr = np.asarray(arr)
                if key.endswith(("_rgb", "_depth")):
                    arr = np.ascontiguousarray(arr[:, ::-1, ::-1])  # back to raw OpenGL
                    _dataset(obs, key, arr, compression=self.compression, chunks=(1, *arr.shape[1:]))
                else:
                    _dataset(obs, key, arr)
            h5.flush()
        os.replace(tmp, final)
        return final


def _dataset(group: Any, key: str, arr: np.ndarray, **kwargs: Any) -> None:
    """Create a dataset with HDF5's Fletcher-32 checksum on every chunk.

    HDF5 verifies it on each read, so a flipped byte in an action or image array fails
    loudly (and is reported by :func:`iter_episodes`) instead of being trained on; any
    HDF5 reader handles the filter, so files stay drop-in LIBERO files.
    """
    if arr.size:
        kwargs["fletcher32"] = True
    group.create_dataset(key, data=arr, **kwargs)

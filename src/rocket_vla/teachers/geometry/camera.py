"""Camera geometry of the teacher's targets: depth maps to points, and points between frames.

Plain numpy in float64: the targets are computed once per frame, so exactness matters
more than speed.
"""

from __future__ import annotations

import numpy as np

from rocket_vla.errors import RocketError


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Camera-frame points ``[H, W, 3]`` of a depth map ``[H, W]`` (z-depth, metres).

    Pixel ``(u = column, v = row)`` with depth ``d`` maps to ``d * K^-1 [u, v, 1]``, the
    convention of :meth:`rocket_vla.envs.libero_env.LiberoEnv.camera_parameters`
    (``K`` may have negative focal lengths: it describes the 180-degree-rotated images).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise RocketError(f"depth must be a single [H, W] map, got shape {depth.shape}.")
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                       indexing="ij")
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H, W, 3]
    rays = pixels @ np.linalg.inv(np.asarray(intrinsics, dtype=np.float64)).T
    return rays * depth[..., None]


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points ``[..., 3]``."""
    t = np.asarray(transform, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ t[:3, :3].T + t[:3, 3]


def relative_transform(cam_to_world: np.ndarray, ref_cam_to_world: np.ndarray) -> np.ndarray:
    """The transform taking camera-frame points into the reference camera's frame."""
    return np.linalg.inv(np.asarray(ref_cam_to_world, np.float64)) @ np.asarray(
        cam_to_world, np.float64)

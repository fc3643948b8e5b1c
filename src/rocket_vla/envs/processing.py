"""Observation and action processing of the paper's LIBERO protocol (no simulator needed).

Kept apart from the environment so that training code, the evaluation runner and the
tests all use literally the same transforms: a model trained on rotated images and 8-dim
proprio must see exactly the same at evaluation time.
"""

from __future__ import annotations

import numpy as np

from rocket_vla.errors import RocketError

ACTION_DIM = 7
PROPRIO_DIM = 8


def rotate_180(image: np.ndarray) -> np.ndarray:
    """Rotate an (H, W, ...) image by 180 degrees and return a contiguous copy.

    MuJoCo renders with OpenGL's bottom-left origin, so raw LIBERO frames are upside
    down; the paper (like OpenVLA) rotates them by 180 degrees before the model sees them.
    """
    return np.ascontiguousarray(image[::-1, ::-1])


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Convert a unit quaternion (x, y, z, w; robosuite's order) to a 3-dim axis-angle vector.

    The sign of the quaternion is fixed to w >= 0 so the angle lies in [0, pi]; this is the
    representation LIBERO's datasets store as ``ee_ori``.
    """
    q = np.asarray(quat_xyzw, dtype=np.float64)
    if q[3] < 0:
        q = -q
    w = min(max(q[3], -1.0), 1.0)
    den = np.sqrt(max(1.0 - w * w, 0.0))
    if den < 1e-8:
        return np.zeros(3)
    angle = 2.0 * np.arccos(w)
    return q[:3] / den * angle


def proprio_vector(eef_pos: np.ndarray, eef_quat_xyzw: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """The paper's 8-dim proprio: eef position (3), eef axis-angle (3), two gripper joints (2)."""
    return np.concatenate(
        [np.asarray(eef_pos, dtype=np.float64), quat_to_axis_angle(eef_quat_xyzw),
         np.asarray(gripper_qpos, dtype=np.float64)]
    ).astype(np.float32)


def model_to_env_actions(chunk: np.ndarray, gripper: str = "unit") -> np.ndarray:
    """Map a policy action chunk (model convention) to LIBERO env actions.

    ``gripper="unit"``: the model's last dimension g is in [0, 1] with 1 = open, 0 = closed
    (the convention of the LIBERO training data as OpenVLA uses it). ``gripper="signed"``: g is
    in [-1, 1] with +1 = open. Either way it is binarised with sign(2g-1) (or sign(g)) and
    inverted, because LIBERO's controller reads -1 as open and +1 as close. The first six
    dimensions (delta position, delta axis-angle, normalised to [-1, 1]) pass through.
    """
    arr = np.asarray(chunk, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != ACTION_DIM or arr.shape[0] == 0:
        raise RocketError(
            f"policy returned actions of shape {tuple(np.shape(chunk))}; "
            f"return an action chunk of shape [chunk, {ACTION_DIM}] with chunk >= 1."
        )
    if not np.all(np.isfinite(arr)):
        raise RocketError("policy returned NaN or infinite actions; check the model's outputs.")
    out = arr.copy()
    if gripper == "unit":
        g = 2.0 * arr[:, 6] - 1.0
    elif gripper == "signed":
        g = arr[:, 6]
    else:
        raise RocketError(f"unknown gripper convention {gripper!r}; use 'unit' or 'signed'.")
    out[:, 6] = -np.sign(g)
    return out


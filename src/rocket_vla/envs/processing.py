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

    This is robosuite's own ``quat2axisangle``, called on a copy (it clips its argument in
    place). It does NOT flip the quaternion to w >= 0: the angle is 2 acos(w) in [0, 2 pi], so
    the same rotation can come out as a vector of length ~pi pointing either way. That is
    exactly what the official LIBERO datasets store as ``ee_ori`` and what the official
    OpenVLA-OFT and openpi clients feed their models; LIBERO's downward-pointing gripper sits
    near w = 0, so any other convention puts the 4th-6th proprio dimensions up to 2 pi away
    from the training data of every public checkpoint.
    """
    from rocket_vla.envs.simstack import quiet_simulator_imports

    quiet_simulator_imports()
    try:
        from robosuite.utils.transform_utils import quat2axisangle
    except ImportError as err:
        raise RocketError(
            "robosuite is not installed; install the LIBERO extra with pip install 'rocket-vla[libero]'."
        ) from err
    q = np.array(quat_xyzw, dtype=np.float64, copy=True).reshape(4)
    return np.asarray(quat2axisangle(q), dtype=np.float64)


def proprio_vector(eef_pos: np.ndarray, eef_quat_xyzw: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """The paper's 8-dim proprio: eef position (3), eef axis-angle (3), two gripper joints (2)."""
    return np.concatenate(
        [np.asarray(eef_pos, dtype=np.float64), quat_to_axis_angle(eef_quat_xyzw),
         np.asarray(gripper_qpos, dtype=np.float64)]
    ).astype(np.float32)


GRIPPER_CONVENTIONS = ("unit", "signed", "env")


def model_to_env_actions(chunk: np.ndarray, gripper: str = "unit") -> np.ndarray:
    """Map a policy action chunk (model convention) to LIBERO env actions.

    ``gripper="unit"``: the model's last dimension g is in [0, 1] with 1 = open, 0 = closed
    (the convention of the LIBERO training data as OpenVLA uses it). ``gripper="signed"``: g is
    in [-1, 1] with +1 = open. Either way it is binarised with sign(2g-1) (or sign(g)) and
    inverted, because LIBERO's controller reads -1 as open and +1 as close (the official
    OpenVLA-OFT client does exactly this). ``gripper="env"``: the policy already speaks
    LIBERO's env convention and the value passes through untouched, as the openpi client
    sends its model's raw actions. The first six dimensions (delta position, delta
    axis-angle, normalised to [-1, 1]) always pass through.
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
        out[:, 6] = -np.sign(2.0 * arr[:, 6] - 1.0)
    elif gripper == "signed":
        out[:, 6] = -np.sign(arr[:, 6])
    elif gripper != "env":
        raise RocketError(
            f"unknown gripper convention {gripper!r}; use one of {', '.join(GRIPPER_CONVENTIONS)}."
        )
    return out

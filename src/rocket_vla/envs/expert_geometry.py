"""Geometry the scripted experts read from privileged simulator state: rotations, the
Panda hand's collision model and the scene's boxes.

Kept apart from the controller (:mod:`rocket_vla.envs.experts`) because it is plain numpy
over observation dictionaries: no phase, no episode state, testable without a simulator.
Boxes are world-aligned ``[xmin, ymin, zmin, xmax, ymax, zmax]`` rows, as the environment
reports them under ``state/obstacle_boxes`` and ``state/<object>_bbox_{min,max}``.
"""

from __future__ import annotations

import numpy as np

from rocket_vla.errors import RocketError


# -- rotations -----------------------------------------------------------------------------
def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion in robosuite's ``(x, y, z, w)`` order."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def mat_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Axis-angle vector (axis x angle, radians) of a rotation matrix: the OSC rotation error."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    if np.pi - angle < 1e-3:  # near 180 degrees the antisymmetric part vanishes
        axis = np.sqrt(np.maximum((np.diag(r) + 1.0) / 2.0, 0.0))
        k = int(np.argmax(axis))
        axis[k] = axis[k] if axis[k] > 0 else 1.0
        for j in range(3):
            if j != k:
                axis[j] = np.copysign(axis[j], r[k, j] + r[j, k])
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def rot_z(yaw: float) -> np.ndarray:
    """Rotation by ``yaw`` radians about the vertical axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def hand_overlap(point: np.ndarray, axis: int, boxes: np.ndarray) -> float:
    """Volume (m^3) by which an open Panda hand at grasp ``point`` intersects ``boxes``.

    The hand is modelled as two fingers (open, along ``axis``) plus the palm above them;
    sizes are the Panda gripper's, with a small margin.
    """
    if boxes.size == 0:
        return 0.0
    across = 1 - axis
    parts = []
    for sign in (1.0, -1.0):  # fingers: 1.6 cm x 2.2 cm, from tip to palm
        c = point.copy()
        c[axis] += sign * 0.05
        half = np.zeros(3)
        half[axis], half[across], half[2] = 0.012, 0.013, 0.03
        c[2] += 0.025
        parts.append((c - half, c + half))
    palm_c = point.copy()
    palm_c[2] += 0.10
    half = np.zeros(3)
    half[axis], half[across], half[2] = 0.11, 0.035, 0.045
    parts.append((palm_c - half, palm_c + half))
    total = 0.0
    for p_lo, p_hi in parts:
        ext = np.clip(np.minimum(p_hi, boxes[:, 3:]) - np.maximum(p_lo, boxes[:, :3]), 0, None)
        total += float(np.prod(ext, 1).sum())
    return total


# -- the scene's boxes ---------------------------------------------------------------------
def object_box(obs: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corner of object ``name``'s bounding box."""
    try:
        return obs[f"state/{name}_bbox_min"], obs[f"state/{name}_bbox_max"]
    except KeyError as err:
        raise RocketError(
            f"the expert needs privileged state for {name!r}; run it through the runner, "
            "which passes state to policies with needs_state = True."
        ) from err


def region_owner(obs: dict[str, np.ndarray], region: str) -> str:
    """Map a BDDL region name (``basket_1_contain_region``) to the object that owns it."""
    names = sorted({k[6:-9] for k in obs if k.endswith("_bbox_min")}, key=len, reverse=True)
    for n in names:
        if region == n or region.startswith(n + "_"):
            return n
    raise RocketError(f"cannot find the object of region {region!r} in the scene.")


def local_top(obs: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray, p: np.ndarray) -> float:
    """Top of the object's own geoms near ``p`` (a tilted bowl's rim is not level)."""
    boxes = obs.get("state/obstacle_boxes", np.zeros((0, 6)))
    inside = np.all(boxes[:, :3] >= lo - 1e-3, 1) & np.all(boxes[:, 3:] <= hi + 1e-3, 1)
    own = boxes[inside]
    if own.size == 0:
        return float(hi[2])
    d = np.linalg.norm(np.maximum(np.maximum(own[:, :2] - p[:2], p[:2] - own[:, 3:5]), 0), axis=1)
    near = own[d < 0.015]
    return float(near[:, 5].max()) if near.size else float(hi[2])


def obstacles(obs: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Scene collision boxes minus the object's own geoms and the support below it."""
    boxes = obs.get("state/obstacle_boxes", np.zeros((0, 6)))
    inside = np.all(boxes[:, :3] >= lo - 1e-3, 1) & np.all(boxes[:, 3:] <= hi + 1e-3, 1)
    below = boxes[:, 5] <= lo[2] + 0.005
    return boxes[~inside & ~below]

"""Scripted experts that solve LIBERO pick-and-place tasks from privileged simulator state.

They exist to (1) check the evaluation pipeline end to end with a policy that is known to
work, and (2) produce demonstrations without human teleoperation. Each expert is an
ordinary :class:`~rocket_vla.envs.policy.Policy` (chunks of one action, model gripper
convention), so ``rocket eval --policy expert`` measures them under exactly the protocol a
learned model gets.

The controller is a proportional servo on OSC_POSE deltas: position error / 0.05 m and
rotation error / 0.5 rad, clipped to [-1, 1] (the controller's input range), holding a
downward gripper orientation. A task's goal is read from its BDDL file: a single
``(on|in) <object> <target>`` predicate becomes pick <object> -> place over <target>.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from rocket_vla.envs.expert_geometry import (
    hand_overlap,
    local_top,
    mat_to_axis_angle,
    object_box,
    obstacles,
    quat_to_mat,
    region_owner,
    rot_z,
)
from rocket_vla.envs.policy import TaskInfo
from rocket_vla.errors import RocketError

OPEN, CLOSED = 1.0, 0.0  # model convention (policy.py): 1 = open


@dataclass
class ExpertConfig:
    """Tunable constants of the scripted pick-and-place controller (metres, steps)."""

    pos_scale: float = 0.05  # metres of error that saturate the position command
    rot_scale: float = 0.5  # radians of error that saturate the rotation command
    approach_height: float = 0.08  # hover above the grasp point before descending
    pos_tol: float = 0.008  # "reached" tolerance
    close_steps: int = 12
    open_steps: int = 10
    carry_clearance: float = 0.04  # object bottom above the tallest obstacle while carrying
    place_above_surface: float = 0.015  # release height above a support ("on")
    phase_timeout: int = 70  # steps before a stuck phase moves on
    max_regrasps: int = 2
    open_finger: float = 0.03  # finger joint (m) above which the gripper counts as open enough
    grasp_edge_margin: float = 0.015  # keep a slid grasp this far (m) inside the object's end
    push_replan: float = 0.02  # object shift (m) during the descent that triggers a re-plan
    offset_drift: float = 0.01  # in-hand shift (m) above which placement re-measures the offset
    drop_distance: float = 0.05  # change (m) of the hand-object offset that means "dropped"
    blocked_height: float = 0.015  # a rim descent stalled this far above its point changes side


@dataclass
class PickPlacePlan:
    """Which object to pick and where it goes, resolved from the BDDL goal."""

    relation: str  # "on" | "in"
    obj: str
    target: str


@functools.lru_cache(maxsize=64)
def plan_for_task(suite: str, task_id: int) -> PickPlacePlan:
    """Read the task's BDDL goal; only single pick-and-place goals are scripted."""
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    from rocket_vla.envs.suites import get_task

    spec = get_task(suite, task_id)
    goal = robosuite_parse_problem(spec.bddl_file)["goal_state"]
    if len(goal) != 1 or goal[0][0].lower() not in ("on", "in"):
        raise RocketError(
            f"no scripted expert for {suite} task {task_id} ({spec.language!r}); experts cover "
            "single pick-and-place goals (all of libero_spatial and libero_object)."
        )
    rel, obj, target = (g.lower() for g in goal[0])
    return PickPlacePlan(rel, obj, target)


@dataclass
class _Episode:
    phase: str = "start"
    phase_steps: int = 0
    target_rot: np.ndarray | None = None
    grasp_point: np.ndarray | None = None
    grasp_offset: np.ndarray | None = None  # eef - object centre, fixed at grasp time
    obj_lo0: float = 0.0
    regrasps: int = 0
    events: list[str] = field(default_factory=list)  # recovery rules that fired, in order
    extra: dict = field(default_factory=dict)


class PickPlaceExpert:
    """Pick the goal object, carry it over the target and release it (see module docstring)."""

    needs_images = False
    needs_state = True
    gripper = "unit"

    def __init__(self, config: ExpertConfig | None = None) -> None:
        self.config = config or ExpertConfig()
        self.plan: PickPlacePlan | None = None
        self._ep = _Episode()

    def reset(self, task: TaskInfo) -> None:
        self.plan = plan_for_task(task.suite, task.task_id)
        self._ep = _Episode()

    # -- grasp planning -------------------------------------------------------------------
    def _choose_grasp(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """Grasp point (eef target) and gripper yaw for the goal object."""
        plan = self.plan
        lo, hi = object_box(obs, plan.obj)
        centre, size = (lo + hi) / 2, hi - lo
        if "bowl" in plan.obj:
            # Straddle the rim with the closing axis radial; of the four sides, take the one
            # where the hand collides least with the scene (e.g. drawer walls, nearby boxes).
            off = 0.44 * min(size[0], size[1])
            boxes = obstacles(obs, lo, hi)
            cands = []
            blocked = self._ep.extra.get("blocked_sides", set())
            for axis, yaw in ((1, 0.0), (0, np.pi / 2)):
                for sign in (1.0, -1.0):
                    if (axis, sign) in blocked and len(blocked) < 4:
                        continue
                    p = centre.copy()
                    p[axis] += sign * off
                    p[2] = local_top(obs, lo, hi, p) - 0.02
                    cands.append((hand_overlap(p, axis, boxes), p, yaw, (axis, sign)))
            # Least collision first; among (near-)ties the side closest to the robot base,
            # since the far side can lie beyond the reach of a downward-pointing hand.
            base = obs.get("state/robot0_base_pos", np.zeros(3))
            best = min(c[0] for c in cands)
            ok = [c for c in cands if c[0] <= best + 2e-6]
            _, point, yaw, side = min(ok, key=lambda c: float(np.linalg.norm(c[1][:2] - base[:2])))
            self._ep.extra["side"] = side
            return point, yaw
        yaw = np.pi / 2 if (size[1] > 0.065 and size[0] < size[1]) else 0.0
        point = centre.copy()
        point[2] = max(lo[2] + 0.008, hi[2] - 0.035)
        axis = 0 if yaw else 1  # the fingers open along y at yaw 0 (as for the bowl rim)
        return self._clear_point(obs, lo, hi, point, axis), yaw

    def _clear_point(self, obs: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray,
                     point: np.ndarray, axis: int) -> np.ndarray:
        """Slide a centre grasp along the object's free axis when the hand would hit a neighbour.

        A flat object (a cream cheese box) is grasped low, so the palm and the far parts of
        the open fingers come down beside it; a taller neighbour (a can) then stops the hand
        centimetres above the object and the fingers close on air. Sliding the grasp along
        the axis the fingers do not span keeps the grip on the object and the hand clear.
        Grasps that already fit are returned unchanged.
        """
        boxes = obstacles(obs, lo, hi)
        best = hand_overlap(point, axis, boxes)
        if best <= 0.0:
            return point
        along = 1 - axis
        reach = (hi[along] - lo[along]) / 2 - self.config.grasp_edge_margin
        if reach <= 0.0:
            return point
        out = point
        # Smallest slide first, so an equal overlap never moves the grasp further out.
        for shift in sorted(np.linspace(-reach, reach, 9), key=abs):
            p = point.copy()
            p[along] += shift
            overlap = hand_overlap(p, axis, boxes)
            if overlap < best - 1e-7:
                best, out = overlap, p
        return out

    # -- control --------------------------------------------------------------------------
    def _servo(self, obs: dict[str, np.ndarray], target: np.ndarray, grip: float,
               speed: float = 1.0) -> np.ndarray:
        cfg = self.config
        eef = obs["state/robot0_eef_pos"]
        pos = np.clip((target - eef) / cfg.pos_scale * speed, -1, 1)
        rot_err = mat_to_axis_angle(self._ep.target_rot @ quat_to_mat(obs["state/robot0_eef_quat"]).T)
        rot = np.clip(rot_err / cfg.rot_scale, -1, 1)
        return np.concatenate([pos, rot, [grip]])[None].astype(np.float32)

    def _goto(self, phase: str) -> None:
        self._ep.phase, self._ep.phase_steps = phase, 0
        self._ep.extra["trail"] = []

    def _stalled(self, eef: np.ndarray, window: int = 8, eps: float = 0.0015) -> bool:
        """True when the hand has moved less than ``eps`` over the last ``window`` steps
        (blocked by contact): waiting longer only burns the step budget."""
        trail = self._ep.extra.setdefault("trail", [])
        trail.append(eef.copy())
        return len(trail) > window and float(np.linalg.norm(trail[-1] - trail[-1 - window])) < eps

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.plan is None:
            raise RocketError("call reset(task) before act(obs).")
        cfg, ep = self.config, self._ep
        eef = obs["state/robot0_eef_pos"]
        ep.phase_steps += 1
        timeout = ep.phase_steps > cfg.phase_timeout
        lo, hi = object_box(obs, self.plan.obj)
        obj_centre = (lo + hi) / 2

        if ep.phase == "start":
            point, yaw = self._choose_grasp(obs)
            base = quat_to_mat(obs["state/robot0_eef_quat"])
            # Keep the initial downward orientation, only turn about the vertical axis.
            ep.extra["base_rot"] = base
            ep.target_rot = rot_z(yaw) @ base
            ep.grasp_point, ep.obj_lo0 = point, lo[2]
            ep.extra["planned_box"] = np.concatenate([lo, hi])
            self._goto("approach")
        if ep.phase == "approach":
            self._replan_if_moved(obs, lo, hi)
            hover = ep.grasp_point + np.array([0, 0, cfg.approach_height])
            rot_err = np.linalg.norm(mat_to_axis_angle(
                ep.target_rot @ quat_to_mat(obs["state/robot0_eef_quat"]).T))
            # A rim grasp must not start descending while the hand is still turning (a
            # finger would land on the rim); centre grasps straddle the object anyway.
            aligned = rot_err < 0.08 or "bowl" not in self.plan.obj
            # After a failed grasp the fingers are still reopening; descending with them
            # half closed lands a fingertip on the object instead of beside it.
            opened = float(np.abs(obs["state/robot0_gripper_qpos"]).min()) > cfg.open_finger
            if (np.linalg.norm(hover - eef) < cfg.pos_tol * 2 and aligned and opened) or timeout:
                self._goto("descend")
            return self._servo(obs, hover, OPEN)
        if ep.phase == "descend":
            if self._pushed_away(lo, hi):
                self._replan_if_moved(obs, lo, hi)
                self._goto("approach")
                return self._servo(obs, eef + np.array([0, 0, 0.03]), OPEN)
            stalled = self._stalled(eef)
            if stalled and self._blocked_above(obs, eef):
                return self._servo(obs, eef + np.array([0, 0, 0.03]), OPEN)
            if np.linalg.norm(ep.grasp_point - eef) < cfg.pos_tol or timeout or stalled:
                self._goto("close")
            return self._servo(obs, ep.grasp_point, OPEN, speed=0.8)
        if ep.phase == "close":
            if ep.phase_steps >= cfg.close_steps:
                ep.grasp_offset = eef - obj_centre
                self._goto("lift")
            return self._servo(obs, ep.grasp_point, CLOSED)
        carry_z = self._carry_height(obs, lo, hi, eef)
        if ep.phase == "lift":
            target = np.array([eef[0], eef[1], carry_z])
            target[:2] = ep.grasp_point[:2]
            if lo[2] < ep.obj_lo0 + 0.01 and ep.phase_steps > 15:
                return self._regrasp(obs)
            # A hand that stopped rising with the object held (arm at its reach, or the
            # obstacle estimate above what the corridor needs) carries at the height it has.
            stalled = self._stalled(eef)
            if abs(carry_z - eef[2]) < cfg.pos_tol * 2 or timeout or stalled:
                if stalled and not timeout and abs(carry_z - eef[2]) >= cfg.pos_tol * 2:
                    ep.events.append("lift_stalled")
                self._goto("carry")
            return self._servo(obs, target, CLOSED)
        t_lo, t_hi = object_box(obs, region_owner(obs, self.plan.target))
        t_centre = (t_lo + t_hi) / 2
        over = np.array([t_centre[0], t_centre[1], carry_z]) + np.array([*ep.grasp_offset[:2], 0])
        if ep.phase == "carry":
            if lo[2] < ep.obj_lo0 + 0.01:
                return self._regrasp(obs)
            if self._dropped(eef, obj_centre):
                ep.events.append("dropped")
                return self._regrasp(obs)
            if np.linalg.norm((over - eef)[:2]) < cfg.pos_tol or timeout:
                self._goto("lower")
            return self._servo(obs, over, CLOSED)
        if ep.phase == "lower":
            over = self._place_xy(over, eef, obj_centre, t_centre)
            if self.plan.relation == "in":
                bottom = max(t_lo[2] + 0.02, t_hi[2] - 0.07)
            else:
                bottom = t_hi[2] + cfg.place_above_surface
            place = over.copy()
            place[2] = eef[2] + (bottom - lo[2])
            if lo[2] - bottom < 0.006 or timeout:
                self._goto("release")
            return self._servo(obs, place, CLOSED, speed=0.6)
        if ep.phase == "release":
            if ep.phase_steps >= cfg.open_steps:
                ep.extra["retreat"] = eef + np.array([0, 0, 0.10])
                self._goto("retreat")
            return self._servo(obs, eef, OPEN)
        # retreat and hold
        return self._servo(obs, ep.extra["retreat"], OPEN)

    def _place_xy(self, over: np.ndarray, eef: np.ndarray, obj_centre: np.ndarray,
                  t_centre: np.ndarray) -> np.ndarray:
        """Eef target that puts the object's *current* centre over the target.

        The offset fixed at grasp time is wrong when the object turned in the hand (a bowl
        grasped while tilted hangs level once lifted); then the live offset is used. Objects
        held rigidly keep the grasp-time offset, so their placement is unchanged.
        """
        ep = self._ep
        live = eef - obj_centre
        if float(np.linalg.norm((live - ep.grasp_offset)[:2])) < self.config.offset_drift:
            return over
        out = over.copy()
        out[:2] = t_centre[:2] + live[:2]
        return out

    def _dropped(self, eef: np.ndarray, obj_centre: np.ndarray) -> bool:
        """True when the object no longer moves with the hand.

        A bowl slipping out of a rim grasp mid-carry can land on a ledge (the drawer's edge)
        above its starting height, which the height check alone misses; the hand then carries
        nothing to the target and "places" it there. An object held in the hand keeps its
        offset to within a few centimetres (a tilted bowl hangs level), so a larger change
        means it was lost and is grasped again.
        """
        shift = (eef - obj_centre) - self._ep.grasp_offset
        return float(np.linalg.norm(shift)) > self.config.drop_distance

    def _pushed_away(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        """True (once per episode) when the descending hand shoved the object far off its plan.

        A bowl leaning on a ramekin is knocked level by the first finger that touches it;
        the planned rim point is then centimetres away and closing there wastes a whole
        grasp-lift-regrasp cycle. Backing off and re-planning on the settled pose is cheaper.
        """
        ep = self._ep
        if ep.extra.get("pushed") or float(np.abs(np.concatenate([lo, hi]) - ep.extra["planned_box"]).max()
                                            ) < self.config.push_replan:
            return False
        ep.extra["pushed"] = True
        return True

    def _blocked_above(self, obs: dict[str, np.ndarray], eef: np.ndarray) -> bool:
        """On a rim grasp whose descent stalled well above the grasp point, switch sides.

        The box model sees world-aligned boxes; a cabinet turned about the vertical axis
        (LIBERO places fixtures with a random yaw) inflates its drawer's walls into boxes that
        overlap every side of the bowl, so the chosen side can still put a finger on a wall.
        A hand stopped more than ``blocked_height`` above its grasp point holds nothing when
        it closes; the side is marked blocked and the grasp re-planned on the others.
        Returns True when it re-planned (the caller backs the hand off).
        """
        ep = self._ep
        side = ep.extra.get("side")
        if side is None or eef[2] - ep.grasp_point[2] < self.config.blocked_height:
            return False
        ep.extra.setdefault("blocked_sides", set()).add(side)
        ep.events.append("side_blocked")
        point, yaw = self._choose_grasp(obs)
        ep.target_rot = rot_z(yaw) @ ep.extra["base_rot"]
        ep.grasp_point = point
        self._goto("approach")
        return True

    def _replan_if_moved(self, obs: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray) -> None:
        """Re-choose the grasp when the object moved since it was planned.

        An object resting unstably (a bowl tilted on a ramekin) can still slide or tip in the
        first steps of an episode; a rim grasp planned on the old pose then closes on air.
        Objects that stay put keep their original plan, so stable scenes are unaffected.
        """
        ep = self._ep
        box = np.concatenate([lo, hi])
        if float(np.abs(box - ep.extra["planned_box"]).max()) < 0.004:
            return
        point, yaw = self._choose_grasp(obs)
        ep.target_rot = rot_z(yaw) @ ep.extra["base_rot"]
        ep.grasp_point, ep.obj_lo0 = point, lo[2]
        ep.extra["planned_box"] = box
        ep.phase_steps = 0

    def _carry_height(self, obs: dict[str, np.ndarray], lo: np.ndarray, hi: np.ndarray,
                      eef: np.ndarray) -> float:
        """Eef height keeping the held object's bottom above every obstacle along the way.

        Only obstacles in the corridor between the grasp and the target matter (a tall
        cabinet off to the side must not send the arm to its reach limit).
        """
        ep = self._ep
        if ep.grasp_offset is None:
            return float(eef[2])
        if "carry_top" not in ep.extra:
            t_lo, t_hi = object_box(obs, region_owner(obs, self.plan.target))
            start, goal = ep.grasp_point[:2], (t_lo[:2] + t_hi[:2]) / 2
            boxes = obstacles(obs, lo, hi)
            half = (hi[:2] - lo[:2]).max() / 2 + 0.03
            tops = [t_hi[2]]
            for b in boxes:
                # distance from the box (xy) to the segment start->goal, sampled
                for f in np.linspace(0.0, 1.0, 21):
                    q = start + f * (goal - start)
                    d = np.maximum(np.maximum(b[:2] - q, q - b[3:5]), 0)
                    if np.linalg.norm(d) < half:
                        tops.append(b[5])
                        break
            ep.extra["carry_top"] = max(tops)
        hang = eef[2] - lo[2]  # eef above the object's bottom
        # Always lift clear of the support too (an object on a cabinet starts above the plate).
        return float(max(ep.extra["carry_top"] + self.config.carry_clearance + hang,
                         ep.grasp_point[2] + 0.06))

    def _regrasp(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        ep = self._ep
        if ep.regrasps >= self.config.max_regrasps:
            self._goto("retreat")
            ep.extra["retreat"] = obs["state/robot0_eef_pos"] + np.array([0, 0, 0.05])
        else:
            ep.regrasps += 1
            point, yaw = self._choose_grasp(obs)
            ep.target_rot = rot_z(yaw) @ ep.extra["base_rot"]
            ep.grasp_point, ep.obj_lo0, ep.grasp_offset = point, object_box(obs, self.plan.obj)[0][2], None
            ep.extra.pop("carry_top", None)
            self._goto("approach")
        return self._servo(obs, obs["state/robot0_eef_pos"] + np.array([0, 0, 0.03]), OPEN)


def make_expert_policy(config: ExpertConfig | None = None, **_: object) -> PickPlaceExpert:
    """Factory used by ``rocket eval --policy expert`` (extra CLI kwargs are ignored)."""
    return PickPlaceExpert(config)

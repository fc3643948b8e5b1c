"""One LIBERO task as a headless, CPU-friendly environment with decision-step-only rendering.

Rendering the two cameras costs ~13x a physics step on a CPU, yet a chunked policy reads
images only once per chunk. robosuite samples camera observables inside ``env.step`` on its
own clock; instead of bypassing that machinery (which would change *when* in the step the
frame is taken), we keep it intact and swap each camera's sensor for a lazy one that renders
only while the step is "armed" and otherwise returns the previous frame. The sampling times
are therefore identical to the standard env, and the frames at armed steps are exactly the
frames the standard env returns at those steps (a test checks this pixel for pixel).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from rocket_vla.envs.processing import proprio_vector, rotate_180
from rocket_vla.envs.suites import TaskSpec, setup_headless_gl
from rocket_vla.errors import RocketError

#: robosuite camera names -> the short names used in observations and episode files.
CAMERAS: dict[str, str] = {"agentview": "agentview", "robot0_eye_in_hand": "wrist"}
RENDER_MODES = ("decision", "every_step")
#: Episode starts: the official clients' (hard reset, nothing after set_init_state) or a clean
#: soft reset (see :class:`EnvConfig`).
START_MODES = ("official", "clean")


def check_start(start: str) -> None:
    """Refuse an unknown episode start (the ``--start`` flag of eval and collect)."""
    if start not in START_MODES:
        raise RocketError(f"unknown --start {start!r}; use one of {', '.join(START_MODES)}.")


@dataclass
class EnvConfig:
    """How to build an environment.

    image_size: square camera resolution rendered (256, as the paper and the official clients).
    render: "decision" renders only at steps whose observation a caller will read (armed
        steps); "every_step" renders at every physics step like the standard LIBERO env.
    depth: also render depth maps (for demonstrations feeding a 3D teacher).
    gl_backend: MUJOCO_GL override ("egl" default, "osmesa" fallback).
    start: how an episode starts. "official" (default) does what the official LIBERO clients
        do: a hard reset (the MuJoCo model is rebuilt; docs/benchmarks.md times it),
        ``set_init_state``, nothing else -- so the controller keeps the goal it got at the
        reset (robot at home) and the first no-op steps pull the arm toward it, exactly as
        in the data and the papers' evaluations. "clean" is a soft reset followed by
        clearing the solver's warm start and re-syncing the controllers to the init state: a
        start that does not depend on the reset, but not the official one (fixture
        placement draws differ on scenes with a drawer, and the arm does not drift).
    cameras: build the offscreen renderer and camera observables; False for policies that
        read no image (scripted experts, premise checks): the physics, the fixture stream
        and the sim states are identical, and a hard reset costs a fraction (no renderer).
    """

    image_size: int = 256
    render: str = "decision"
    depth: bool = False
    gl_backend: str | None = None
    start: str = "official"
    cameras: bool = True

    def __post_init__(self) -> None:
        if self.render not in RENDER_MODES:
            raise RocketError(f"unknown render mode {self.render!r}; use one of {RENDER_MODES}.")
        check_start(self.start)
        if self.depth and not self.cameras:
            raise RocketError("depth maps need cameras; build the env with cameras=True.")
        if not 16 <= int(self.image_size) <= 1024:
            raise RocketError(f"image size {self.image_size} is out of range; use 16..1024 pixels.")


class LiberoEnv:
    """A LIBERO task with the paper's observation processing.

    Typical loop: ``reset(init_state)``, then ``step(env_action, render=...)`` where
    ``render=True`` marks the steps after which :meth:`observation` will read images.
    Actions are in LIBERO's env convention (gripper -1 open, +1 close); convert a policy's
    chunk with :func:`rocket_vla.envs.processing.model_to_env_actions`.
    """

    def __init__(self, task: TaskSpec, config: EnvConfig | None = None) -> None:
        self.task = task
        self.config = config or EnvConfig()
        setup_headless_gl(self.config.gl_backend)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                from libero.libero.envs import OffScreenRenderEnv
                from libero.libero.envs.env_wrapper import ControlEnv
        except ImportError as err:
            raise RocketError(
                "LIBERO is not installed; install the extra with pip install 'rocket-vla[libero]'."
            ) from err
        size = int(self.config.image_size)
        hard = self.config.start == "official"
        try:
            if self.config.cameras:  # what the official clients build
                self._env = OffScreenRenderEnv(
                    bddl_file_name=task.bddl_file, camera_heights=size, camera_widths=size,
                    camera_depths=self.config.depth, hard_reset=hard)
            else:
                self._env = ControlEnv(
                    bddl_file_name=task.bddl_file, has_renderer=False, has_offscreen_renderer=False,
                    use_camera_obs=False, hard_reset=hard)
        except Exception as err:
            if "EGL" in repr(err) or "OSMesa" in repr(err) or "GL" in type(err).__name__:
                raise RocketError(
                    f"headless OpenGL failed ({err}); install libegl1 or libosmesa6 and set "
                    "MUJOCO_GL=egl or MUJOCO_GL=osmesa."
                ) from err
            raise
        self._armed = False
        self._frames: dict[str, np.ndarray] = {}
        self._obs: dict[str, Any] = {}
        self._geom_groups: dict[str, np.ndarray] | None = None
        self._obstacle_geoms: np.ndarray | None = None
        self._stream: dict[str, Any] | None = None  # fixture-placement RNG state (see seed())
        self._stream_resets = 0
        self._install_lazy_cameras()

    # -- rendering control ------------------------------------------------------------
    def _install_lazy_cameras(self) -> None:
        """Wrap the camera sensors so they render only on armed steps (idempotent)."""
        if not self.config.cameras:
            return
        from robosuite.utils.observables import sensor

        robo = self._env.env
        for cam in CAMERAS:
            name = f"{cam}_image"
            observable = robo._observables.get(name)
            if observable is None or getattr(observable._sensor, "_rocket_lazy", False):
                continue
            real = observable._sensor

            def make(real_sensor=real, key=name):
                @sensor(modality=real_sensor.__modality__)
                def lazy(obs_cache):
                    # Render on armed steps; on unarmed ones reuse the last frame (the very
                    # first sample after a reset renders so the cache holds a real image).
                    if self._armed or self.config.render == "every_step" or key not in self._frames:
                        self._frames[key] = real_sensor(obs_cache)
                    return self._frames[key]

                lazy._rocket_lazy = True
                return lazy

            observable.set_sensor(make())

    # -- episode control --------------------------------------------------------------
    def seed(self, seed: int = 0) -> None:
        """Start the fixture-placement stream the way the official clients do (``env.seed(0)``).

        LIBERO re-samples the placement of fixtures without joints (cabinet, stove...) at
        every reset by moving their model ``body_pos``, which the init state does not cover;
        the sampler draws from numpy's global RNG. The official OpenVLA-OFT and openpi clients
        call ``env.seed(0)`` (OpenVLA-OFT; openpi passes its --seed, 7) = ``np.random.seed``
        once per task env and then reset it once
        per trial, so trial k's fixtures come from the k-th reset of that stream. We keep the
        stream's RNG state here and swap it in only around resets, so it is the same stream
        whatever a policy draws from numpy in between (the official clients share it), and
        :meth:`advance_to` can reproduce trial k's placement in a fresh env (a shard).
        """
        state = np.random.get_state()
        np.random.seed(int(seed) % (2**32))
        self._stream = {"rng": np.random.get_state(), "seed": int(seed)}
        self._stream_resets = 0
        np.random.set_state(state)

    @property
    def stream_position(self) -> int:
        """Resets drawn from the stream since :meth:`seed` (= the next trial's index)."""
        return self._stream_resets

    def advance_to(self, trial: int) -> None:
        """Draw resets from the stream until the next reset is trial ``trial``'s.

        Under the official start a reset is a hard one (the model is rebuilt), so a shard
        starting at a late trial spends a reset's time per earlier trial here; the stream
        cannot go backwards (re-seed for that).
        """
        if self._stream is None:
            raise RocketError("advance_to needs a seeded stream; call env.seed(0) first.")
        if trial < self._stream_resets:
            self.seed(self._stream["seed"])
        while self._stream_resets < trial:
            self._reset_from_stream()

    def _reset_from_stream(self) -> None:
        assert self._stream is not None
        outer = np.random.get_state()
        np.random.set_state(self._stream["rng"])
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self._env.reset()
        finally:
            self._stream["rng"] = np.random.get_state()
            self._stream_resets += 1
            np.random.set_state(outer)

    def reset(self, init_state: np.ndarray, render: bool = False, seed: int | None = None) -> None:
        """Reset to a stored init state (a flattened MuJoCo state); render if ``render``.

        ``seed`` re-seeds numpy's global RNG before the reset (the per-episode scheme: a
        trial's fixture placement depends on its seed alone). Without it, the placement
        comes from the stream started by :meth:`seed` when there is one (the official
        scheme), else from whatever state numpy's global RNG is in.
        """
        if seed is not None:
            np.random.seed(seed % (2**32))
        self._armed = bool(render)
        self._frames = {}
        try:
            if seed is None and self._stream is not None:
                self._reset_from_stream()
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    self._env.reset()
            self._install_lazy_cameras()  # a hard reset recreates the observables
            if self.config.start == "clean":
                self._clear_solver_memory()
            self._obs = dict(self._env.set_init_state(np.asarray(init_state)))
            if self.config.start == "clean":
                self._sync_controllers()
        except ValueError as err:
            raise RocketError(
                f"init state of size {np.size(init_state)} does not fit {self.task.suite} task "
                f"{self.task.task_id}; use init states of this task (trial k -> state k)."
            ) from err
        finally:
            self._armed = False

    @property
    def language_instruction(self) -> str:
        """The instruction in the task's BDDL file, as the env states it (LIBERO-PRO's
        reworded ``_lan`` instructions live only here; see :mod:`rocket_vla.envs.suites`)."""
        return str(getattr(self._env, "language_instruction", "") or self.task.language)

    def _clear_solver_memory(self) -> None:
        """Zero what a flattened state does not cover (solver warm start, applied forces).

        Without this a soft reset inherits the previous episode's warm start, and the same
        init state and actions give slightly different trajectories depending on what ran
        before in this worker; with it, episodes are reproducible like after a hard reset.
        """
        data = self.sim.data._data
        for name in ("qacc_warmstart", "ctrl", "qfrc_applied", "xfrc_applied", "act"):
            getattr(data, name)[...] = 0.0

    def _sync_controllers(self) -> None:
        """The "clean" start: controllers synced to the init state, not to the reset pose.

        robosuite's Panda gripper integrates its command in ``current_action`` and the OSC
        caches the end-effector pose and goal; a soft reset clears neither, so without this
        an episode would start from the previous episode's gripper command. Note this is
        *not* what the official clients do (their controller keeps the goal set at the reset
        with the arm at home, and the no-op steps pull toward it), hence not the default.
        """
        for robot in self._env.env.robots:
            grippers = getattr(robot, "gripper", None)
            for gripper in (grippers.values() if isinstance(grippers, dict) else [grippers]):
                if gripper is not None and hasattr(gripper, "current_action"):
                    gripper.current_action = np.zeros_like(gripper.current_action)
            controller = getattr(robot, "controller", None)
            if controller is not None:
                controller.update(force=True)
                if hasattr(controller, "reset_goal"):
                    controller.reset_goal()

    def step(self, action: np.ndarray, render: bool = False) -> bool:
        """Apply one env-convention action; return True when the task is solved.

        ``render=True`` arms the cameras for this step so the next :meth:`observation` has
        fresh frames; otherwise the physics step skips rendering (``decision`` mode).
        """
        self._armed = bool(render)
        try:
            obs, _reward, done, _info = self._env.step(np.asarray(action, dtype=np.float64))
        finally:
            self._armed = False
        self._obs = dict(obs)
        return bool(done)

    def check_success(self) -> bool:
        return bool(self._env.check_success())

    # -- observations -----------------------------------------------------------------
    def raw_obs(self) -> dict[str, Any]:
        """The unprocessed robosuite observation dict of the last step (images upside down)."""
        return self._obs

    def observation(self, images: bool = True, state: bool = False) -> dict[str, np.ndarray]:
        """The policy observation (format documented in :mod:`rocket_vla.envs.policy`)."""
        o = self._obs
        out: dict[str, np.ndarray] = {
            "proprio": proprio_vector(o["robot0_eef_pos"], o["robot0_eef_quat"],
                                      o["robot0_gripper_qpos"]),
        }
        if images:
            if not self.config.cameras:
                raise RocketError("this env was built without cameras; build it with "
                                  "EnvConfig(cameras=True) to read images.")
            for cam, short in CAMERAS.items():
                out[short] = rotate_180(np.asarray(o[f"{cam}_image"], dtype=np.uint8))
        if state:
            out.update(self.privileged_state())
        return out

    def depth(self) -> dict[str, np.ndarray]:
        """Metric depth (metres, float32, (H, W)) of both cameras, rotated like the images."""
        if not self.config.depth:
            raise RocketError("depth was not rendered; build the env with EnvConfig(depth=True).")
        from robosuite.utils.camera_utils import get_real_depth_map

        out = {}
        for cam, short in CAMERAS.items():
            raw = np.asarray(self._obs[f"{cam}_depth"])[..., 0]
            out[short] = rotate_180(get_real_depth_map(self._env.sim, raw).astype(np.float32))
        return out

    def camera_parameters(self) -> dict[str, dict[str, np.ndarray]]:
        """Intrinsics K (3x3) and camera-to-world extrinsics (4x4, OpenCV axes) per camera.

        They describe the ROTATED images returned by :meth:`observation`: a pixel (u=col,
        v=row) with metric depth d maps to the world point ``T @ [d * K^-1 (u, v, 1), 1]``.
        """
        from robosuite.utils.camera_utils import (
            get_camera_extrinsic_matrix,
            get_camera_intrinsic_matrix,
        )

        size = int(self.config.image_size)
        out = {}
        for cam, short in CAMERAS.items():
            k = get_camera_intrinsic_matrix(self._env.sim, cam, size, size)
            t = get_camera_extrinsic_matrix(self._env.sim, cam)
            out[short] = {"intrinsics": _rotated_intrinsics(k, size, size),
                          "extrinsics": np.array(t, dtype=np.float64)}  # rotation keeps the pose
        return out

    def privileged_state(self) -> dict[str, np.ndarray]:
        """Simulator ground truth for scripted experts, keys prefixed ``state/``."""
        o = self._obs
        keys = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos"]
        keys += [k for k in o if (k.endswith("_pos") or k.endswith("_quat"))
                 and not k.startswith("robot0_") and "_to_robot0_" not in k]
        out = {f"state/{k}": np.asarray(o[k], dtype=np.float64).copy() for k in keys}
        for name, (lo, hi) in self.object_bounds().items():
            out[f"state/{name}_bbox_min"] = lo
            out[f"state/{name}_bbox_max"] = hi
        out["state/obstacle_boxes"] = self.obstacle_boxes()
        out["state/robot0_base_pos"] = np.asarray(
            self.sim.data.get_body_xpos("robot0_base"), dtype=np.float64).copy()
        out["state/sim"] = self.sim_state()  # the full flattened MuJoCo state (time, qpos, qvel)
        return out

    def obstacle_boxes(self) -> np.ndarray:
        """[M, 6] world AABBs (min xyz, max xyz) of every non-robot collision geom above the floor.

        Lets an expert test whether its hand fits somewhere (a bowl inside a drawer, next to
        a tall box) without per-scene rules.
        """
        model, data = self.sim.model._model, self.sim.data._data
        if self._obstacle_geoms is None:
            import mujoco

            keep = []
            for g in range(model.ngeom):
                if not (model.geom_contype[g] or model.geom_conaffinity[g]):
                    continue
                body = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[g]) or ""
                if body.startswith(("robot0_", "gripper0_", "mount0_")) or body in ("world", "floor"):
                    continue
                if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE:
                    continue
                keep.append(g)
            self._obstacle_geoms = np.asarray(keep, dtype=np.int64)
        geoms = self._obstacle_geoms
        if geoms.size == 0:
            return np.zeros((0, 6))
        lo, hi = _world_boxes(model.geom_aabb[geoms], data.geom_xmat[geoms], data.geom_xpos[geoms])
        return np.concatenate([lo, hi], 1)

    def object_bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """World axis-aligned bounding boxes of every object and fixture's collision geoms.

        Experts need object extents (grasp height, rim radius, basket top) that poses alone
        do not give; computing them from MuJoCo's per-geom local boxes keeps the experts free
        of per-object constants.
        """
        import mujoco

        robo = self.robosuite_env
        model, data = self.sim.model._model, self.sim.data._data
        if self._geom_groups is None:
            names = list(getattr(robo, "objects_dict", {})) + list(getattr(robo, "fixtures_dict", {}))
            body_names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) or ""
                          for i in range(model.nbody)]
            groups: dict[str, np.ndarray] = {}
            for name in names:
                roots = {i for i, b in enumerate(body_names) if b == f"{name}_main" or b == name}
                members = set(roots)
                for i in range(model.nbody):  # descendants of the root bodies
                    j = i
                    while j > 0 and j not in roots:
                        j = model.body_parentid[j]
                    if j in roots:
                        members.add(i)
                geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] in members
                         and (model.geom_contype[g] or model.geom_conaffinity[g])]
                if geoms:
                    groups[name] = np.asarray(geoms)
            self._geom_groups = groups
        out = {}
        for name, geoms in self._geom_groups.items():
            lo, hi = _world_boxes(model.geom_aabb[geoms], data.geom_xmat[geoms], data.geom_xpos[geoms])
            out[name] = (lo.min(0), hi.max(0))
        return out

    @property
    def sim(self) -> Any:
        return self._env.sim

    @property
    def robosuite_env(self) -> Any:
        """The underlying robosuite/LIBERO env (object registries, sites, check_success)."""
        return self._env.env

    def sim_state(self) -> np.ndarray:
        return np.asarray(self._env.get_sim_state()).copy()

    def close(self) -> None:
        """Free the GL context explicitly (EGL teardown at interpreter exit is noisy)."""
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()

    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)


def _world_boxes(aabb: np.ndarray, xmat: np.ndarray, xpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World AABBs of geoms from MuJoCo's local boxes (centre 3 + half sizes 3) and poses."""
    local = aabb[:, None, :3] + _CORNERS[None] * aabb[:, None, 3:]
    world = np.einsum("gij,gkj->gki", xmat.reshape(-1, 3, 3), local) + xpos[:, None]
    return world.min(1), world.max(1)


def _rotated_intrinsics(k: np.ndarray, height: int, width: int) -> np.ndarray:
    """Intrinsics for the 180-degree-rotated image.

    robosuite's K and extrinsics (OpenCV axes: x right, y down, z forward) describe the image
    flipped upright from OpenGL's bottom-left origin, i.e. ``raw[::-1]``. Our image is
    ``raw[::-1, ::-1]``, the upright image mirrored left-right: u' = W - 1 - u.
    """
    out = np.array(k, dtype=np.float64)
    out[0, 0] = -out[0, 0]
    out[0, 2] = (width - 1) - out[0, 2]
    return out


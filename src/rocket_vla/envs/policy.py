"""The policy interface every model implements to be evaluated on LIBERO.

A policy is anything with ``reset(task)`` and ``act(obs) -> chunk``: no base class, no
torch, no simulator import. The evaluation runner owns the protocol (init states, no-op
steps, step budgets, chunk execution, gripper mapping); the policy only maps observations
to actions.

Observation dict passed to :meth:`Policy.act` (all numpy arrays):

``agentview``  (H, W, 3) uint8 -- third-person camera, already rotated by 180 degrees.
``wrist``      (H, W, 3) uint8 -- eye-in-hand camera, already rotated by 180 degrees.
``proprio``    (8,) float32 -- eef position (3, metres, world frame), eef orientation as
               axis-angle (3, radians; robosuite's ``quat2axisangle``, exactly as the official
               LIBERO datasets store ``ee_ori``), the two gripper finger joints (2, metres).
``step``       () int64 -- policy steps executed so far in this episode (0 at the first call).

H = W = the run's image size (``--image_size``, default 256 like the paper and the official
clients). :mod:`rocket_vla.data.preprocess` has the official clients' resizing presets.
Images are present only when the policy's ``needs_images`` is true (the default); a policy
that sets ``needs_state = True`` (the scripted experts) also gets privileged simulator state
under keys prefixed ``state/``: ``state/robot0_eef_pos``, ``state/robot0_eef_quat``
(x, y, z, w), ``state/robot0_gripper_qpos``, ``state/robot0_joint_pos`` and, per object,
``state/<object>_pos`` and ``state/<object>_quat``, and ``state/sim`` (the full flattened
MuJoCo state, as the init-state files store it).

Action chunk returned by :meth:`Policy.act`: shape [chunk, 7] (a [7] vector counts as a
chunk of one), float. Dimensions 0-2 are the delta eef position and 3-5 the delta
orientation (axis-angle), both normalised to [-1, 1] as LIBERO's OSC_POSE controller reads
them. Dimension 6 is the gripper in the MODEL convention: g in [0, 1] with 1 = open and
0 = closed (``gripper = "unit"``, the default), or g in [-1, 1] with +1 = open if the policy
sets ``gripper = "signed"``. The runner maps it with sign(2g - 1) (resp. sign(g)) and inverts
it to LIBERO's -1 = open / +1 = close (the OpenVLA-OFT client's rule). ``gripper = "env"``
means the policy already returns LIBERO's convention and the value passes through unchanged
(the openpi client's rule). The first ``actions_per_chunk`` actions of the chunk (attribute
of the policy, default: all) are executed open-loop; the next observation is read after the
last of them. ``on_error = "fail"`` makes an exception end the episode as a failure instead
of aborting the run. ``rocket eval --gripper/--actions_per_chunk/--on_error`` override all three.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rocket_vla.errors import RocketError

#: The entry-point group third-party packages use to add policies without importing them here.
ENTRY_POINT_GROUP = "rocket_vla.policies"


@dataclass(frozen=True)
class TaskInfo:
    """What a policy is told at the start of an episode."""

    suite: str
    task_id: int
    name: str
    language: str


@runtime_checkable
class Policy(Protocol):
    """Observation dict in, action chunk out (see the module docstring for the exact format).

    Optional attributes the runner reads with ``getattr``: ``needs_images`` (bool, default
    True: set False to skip rendering entirely), ``needs_state`` (bool, default False: adds
    privileged ``state/...`` entries), ``gripper`` ("unit" default, "signed", or "env"),
    ``actions_per_chunk`` (int or None = whole chunk), ``on_error`` ("abort" or "fail").
    """

    def reset(self, task: TaskInfo) -> None:
        """Start a new episode of ``task`` (clear action queues, encode the instruction...)."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Return the next action chunk, shape [chunk, 7], in the model convention."""


PolicyFactory = Callable[..., Policy]

_REGISTRY: dict[str, PolicyFactory | str] = {
    # Built-ins are import paths so that registering them costs nothing at import time.
    "expert": "rocket_vla.envs.experts:make_expert_policy",
    "checkpoint": "rocket_vla.envs.policy:policy_from_checkpoint",
}
#: Every student kind of ``rocket_vla.policies.student.REGISTRY`` is also a policy name: its
#: checkpoints load through this one factory (the checkpoint records the kind).
STUDENT_POLICY = "rocket_vla.policies.student_policy:load_policy"


def _student_kinds() -> list[str]:
    """Registered student kinds (imported lazily: the registry module imports torch)."""
    with contextlib.suppress(ImportError):
        from rocket_vla.policies.student import REGISTRY

        return sorted(REGISTRY)
    return []
#: Files a checkpoint folder may carry to say which policy loads it: {"policy": "<name>"}.
CHECKPOINT_POLICY_FILES = ("rocket_policy.json", "config.json")


def register_policy(name: str, factory: PolicyFactory | str) -> None:
    """Make ``rocket eval --policy NAME`` build a policy with ``factory(**kwargs)``.

    ``factory`` is a callable or an import path ``"package.module:function"``. Evaluation
    workers are separate processes, so they rebuild the policy from the factory's import
    path: register a module-level function (not a lambda) or workers fall back to the path
    being unimportable and the run fails with a clear error. kwargs come from the command
    line (``--checkpoint PATH`` becomes ``checkpoint=PATH``, ``--policy_kwargs.k v`` adds more).
    """
    if not name or not isinstance(name, str):
        raise RocketError("a policy name must be a non-empty string; pass e.g. 'minivla'.")
    _REGISTRY[name] = factory


def registered_policies() -> list[str]:
    """Names usable with ``--policy``: registered ones plus installed entry points."""
    names = set(_REGISTRY) | set(_student_kinds())
    with contextlib.suppress(Exception):  # broken metadata must not break the CLI
        names.update(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def factory_path(name: str) -> str:
    """The import path of a policy factory, the form worker processes can rebuild it from."""
    if ":" in name and name not in _REGISTRY:
        return name
    entry = _REGISTRY.get(name)
    if entry is None and name in _student_kinds():
        return STUDENT_POLICY
    if entry is None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                return ep.value
        raise RocketError(
            f"unknown policy {name!r}; use one of {', '.join(registered_policies())} "
            "or an import path 'package.module:function'."
        )
    if isinstance(entry, str):
        return entry
    module, qualname = getattr(entry, "__module__", None), getattr(entry, "__qualname__", "")
    if not module or "<" in qualname:
        raise RocketError(
            f"policy {name!r} was registered with a lambda or local function; register a "
            "module-level function so evaluation workers can import it."
        )
    return f"{module}:{qualname}"


def factory_kwargs(name: str, kwargs: dict[str, Any], checkpoint: str | None,
                   device: str = "auto") -> dict[str, Any]:
    """What ``rocket eval`` passes to the factory of policy ``name``: ``kwargs`` plus
    ``checkpoint=`` (``--checkpoint``), for a student kind ``student=name`` so that a
    checkpoint of another kind is refused, and for student policies the resolved ``device``
    (``--device``; ``--policy_kwargs.device`` may not say otherwise)."""
    if name == "checkpoint" and not checkpoint and "checkpoint" not in kwargs:
        raise RocketError("--policy checkpoint needs --checkpoint PATH.")
    out = dict(kwargs)
    if checkpoint:
        out["checkpoint"] = checkpoint
    if name in _student_kinds():
        out.setdefault("student", name)
    if name == "checkpoint" or name in _student_kinds():
        resolved = resolve_device(device)
        if "device" in out and out["device"] != resolved:
            raise RocketError(f"--policy_kwargs.device {out['device']} contradicts --device {device}; "
                              "give the device once, with --device.")
        out["device"] = resolved
    return out


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RocketError("--device cuda was given but torch sees no CUDA device; pass --device cpu "
                          "(or auto), or install a CUDA build of torch.")
    return device


#: ``package.module:attr`` (dotted names on both sides), the only form an import path may take.
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def load_factory(path: str) -> PolicyFactory:
    """Import ``"module:attr"`` and return the factory it names, checked before anyone calls it.

    Importing runs the module's code, so paths come only from the command line or the
    registry, never from a checkpoint's files. The attribute must be a class or a Python
    function that the module itself defines under that name: a module, a builtin such as
    ``os:getpid``, a callable object or a function imported from elsewhere is refused before
    it is called, since none of them is a policy factory written for ``rocket eval``.
    """
    if not _IMPORT_PATH.fullmatch(path):
        raise RocketError(f"policy {path!r} is not an import path; write it as 'package.module:factory'.")
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise RocketError(
            f"cannot import policy factory {path!r} ({err}); install the package that "
            "provides it or fix the import path."
        ) from err
    _check_factory(obj, path)
    return obj


def _check_factory(obj: Any, path: str) -> None:
    """Refuse anything but a class or function defined in the named module under that name."""
    target = obj.__func__ if inspect.ismethod(obj) else obj  # a classmethod such as Cls.create
    if not (inspect.isclass(target) or inspect.isfunction(target)):
        raise RocketError(
            f"policy factory {path!r} is a {type(obj).__name__}, not a class or function; point "
            "--policy at a policy class or a factory function."
        )
    defined = f"{target.__module__}:{target.__qualname__}"
    if defined != path:
        raise RocketError(
            f"policy factory {path!r} is {defined}, defined in another module; pass the path of "
            f"the module that defines it (--policy {defined})."
        )


def check_arguments(factory: PolicyFactory, kwargs: dict[str, Any], name: str) -> None:
    """Refuse keyword arguments the factory does not take (a typo in ``--policy_kwargs``)
    before it is called, naming the ones it takes."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: the call reports itself
        return
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        known = None  # takes any keyword
    else:
        known = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                       inspect.Parameter.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if known is not None and k not in known]
    if unknown:
        raise RocketError(
            f"policy {name!r} takes no argument {', '.join(map(repr, unknown))}; its --policy_kwargs "
            f"are {', '.join(k for k in known or [] if k != 'checkpoint') or 'none'}."
        )
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise RocketError(f"policy {name!r} cannot be built from {sorted(kwargs)} ({err}); pass the "
                          "arguments it needs with --policy_kwargs.NAME VALUE.") from None


def get_policy_factory(name: str) -> PolicyFactory:
    """Resolve a policy name (registered, entry point, or import path) to its factory."""
    return load_factory(factory_path(name))


def build_policy(name: str, **kwargs: Any) -> Policy:
    """Build a policy by name and check that it has the interface the runner calls."""
    factory = get_policy_factory(name)
    check_arguments(factory, kwargs, name)
    policy = factory(**kwargs)
    if not (callable(getattr(policy, "reset", None)) and callable(getattr(policy, "act", None))):
        raise RocketError(
            f"policy {name!r} has no reset(task)/act(obs) methods; implement the Policy protocol."
        )
    return policy


def check_policy(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check that policy ``name`` can be built from ``kwargs`` without building it, and return
    the kwargs with ``checkpoint`` pinned to the step folder it names now.

    Run once where an evaluation starts, before its folder or a simulator is touched. Pinning
    matters because a `rocket train` run folder stands for its newest step: if training goes
    on while an evaluation runs, every worker must still load the step the run recorded.
    """
    kwargs = dict(kwargs)
    checkpoint = kwargs.get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        kwargs["checkpoint"] = pinned_checkpoint(checkpoint)
    if name == "checkpoint":
        inner = checkpoint_policy_name(kwargs.get("checkpoint"))
        check_arguments(get_policy_factory(inner), kwargs, inner)
    else:
        check_arguments(get_policy_factory(name), kwargs, name)
    return kwargs


# -- checkpoints ------------------------------------------------------------------------------
#: What a `rocket train` step folder holds (see rocket_vla.train.checkpoint).
_WEIGHTS, _CONFIG, _LATEST = "model.safetensors", "config.json", "latest"


def checkpoint_folder(path: Path) -> Path:
    """The folder describing checkpoint ``path``: the step a `rocket train` run folder (or its
    ``checkpoints/`` folder) points at with ``latest``, else the folder itself (or a file's)."""
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder / "checkpoints"):
        try:
            step = candidate / (candidate / _LATEST).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if step.is_dir() and step != candidate:
            return step
        if step != candidate:  # `latest` names a missing step: say so, with the steps there
            from rocket_vla.weights import locate_checkpoint

            return locate_checkpoint(candidate)
    return folder


def _train_step_folder(checkpoint: str) -> Path | None:
    """The `rocket train` step folder ``checkpoint`` resolves to now, or None for other folders."""
    folder = checkpoint_folder(Path(checkpoint))
    return folder if (folder / _WEIGHTS).is_file() and (folder / _CONFIG).is_file() else None


def pinned_checkpoint(checkpoint: str) -> str:
    """``checkpoint`` as the absolute step folder it names now (other paths are kept as given)."""
    step = _train_step_folder(checkpoint)
    return str(step.resolve()) if step is not None else checkpoint


def checkpoint_identity(checkpoint: str) -> dict[str, Any] | None:
    """``{"step", "weights", "path"}`` of the `rocket train` checkpoint ``checkpoint`` names now
    (weights: the digest its config.json records), or None when it is no such checkpoint.

    An evaluation folder records it: episodes of two steps must not mix in one result."""
    step = _train_step_folder(checkpoint)
    if step is None:
        return None
    saved = read_checkpoint_json(step / _CONFIG)
    saved = saved if isinstance(saved, dict) else {}
    digest = (saved.get("digests") or {}).get(_WEIGHTS)
    if not isinstance(digest, str):  # written before digests were recorded
        from rocket_vla.fingerprint import file_digest

        digest = file_digest(step / _WEIGHTS)
    return {"step": saved.get("step"), "weights": digest, "path": str(step.resolve())}


def read_checkpoint_json(path: Path) -> Any:
    """A checkpoint's JSON file, or one sentence saying it is not valid JSON and how to fix it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problem = f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
    except (OSError, UnicodeDecodeError) as err:
        problem = f"cannot be read as JSON ({type(err).__name__})"
    raise RocketError(
        f"{path} {problem}; the checkpoint is damaged -- copy that file again from where the "
        "checkpoint came from, or pass another checkpoint (a step_* folder)."
    )


def checkpoint_policy_name(checkpoint: str | None) -> str:
    """The registered policy a checkpoint folder names in ``rocket_policy.json`` or ``config.json``.

    Only registered names (built-ins, student kinds, installed entry points) are accepted: an
    import path would make loading a model folder downloaded from someone else run its code,
    so import paths are taken only from the command line.
    """
    if not checkpoint:
        raise RocketError("--policy checkpoint needs --checkpoint PATH.")
    path = Path(checkpoint)
    if not path.exists():
        raise RocketError(f"checkpoint {path} does not exist; check the path.")
    folder = checkpoint_folder(path)
    for fname in CHECKPOINT_POLICY_FILES:
        meta = folder / fname
        if not meta.is_file():
            continue
        saved = read_checkpoint_json(meta)
        name = saved.get("policy") if isinstance(saved, dict) else None
        if isinstance(name, str) and name and name != "checkpoint":
            allowed = [n for n in registered_policies() if n != "checkpoint"]
            if name not in allowed:
                raise RocketError(
                    f"{meta} names policy {name!r}, which is not registered; a checkpoint may name only "
                    f"{', '.join(allowed)} (an import path runs code, so it is taken only from the command "
                    "line: pass --policy module:factory --checkpoint PATH if you trust that code)."
                )
            return name
    raise RocketError(
        f"{folder} does not say which policy loads it; add rocket_policy.json with "
        '{"policy": "<name>"} or pass --policy <name> --checkpoint PATH.'
    )


def policy_from_checkpoint(checkpoint: str | None = None, **kwargs: Any) -> Policy:
    """``--policy checkpoint --checkpoint PATH``: let the checkpoint say which policy loads it.

    The checkpoint folder (or the folder of a checkpoint file, or the newest step of a
    `rocket train` run folder) must hold ``rocket_policy.json`` or a ``config.json`` whose
    ``"policy"`` key names a registered policy; that factory is then called with
    ``checkpoint=PATH`` and the other kwargs. This keeps ``rocket eval`` independent of any
    one model family.
    """
    name = checkpoint_policy_name(checkpoint)
    return build_policy(name, checkpoint=checkpoint, **kwargs)

"""A policy on recorded demonstrations, no simulator: its action error on held-out frames
and the visual-token states a spatial probe reads, with the probe's 3D targets.

Why in ``envs/``: the observation a policy sees and the task plans that name each task's
objects are LIBERO's protocol, which this package owns; the probe itself (a ridge
regression on plain tensors) lives in :mod:`rocket_vla.analysis.spatial_probe`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rocket_vla.envs.policy import Policy, TaskInfo


def episode_observation(ep: Any, row: int) -> dict[str, np.ndarray]:
    """The policy observation of image row ``row`` of a stored episode."""
    step = int(ep.frame_index[row])
    proprio = np.concatenate([ep.obs["ee_pos"][step], ep.obs["ee_ori"][step],
                              ep.obs["gripper_states"][step]]).astype(np.float32)
    return {"agentview": ep.obs["agentview_rgb"][row], "wrist": ep.obs["eye_in_hand_rgb"][row],
            "proprio": proprio}


def heldout_action_l1(policy: Policy, episodes: list[Any]) -> float:
    """Mean |predicted - demonstrated| over held-out frames, whole chunks, env action units."""
    from rocket_vla.data.episodes import gripper_env_to_model

    errors = []
    for ep in episodes:
        policy.reset(TaskInfo("", 0, "", ep.language))
        target = gripper_env_to_model(ep.actions, "signed")
        for row in range(len(ep.frame_index)):
            step = int(ep.frame_index[row])
            chunk = policy.act(episode_observation(ep, row))
            want = target[step: step + len(chunk)]
            errors.append(np.abs(chunk[: len(want)] - want).mean())
    return float(np.mean(errors))


def probe_target(ep: Any, step: int) -> np.ndarray:
    """3D positions of the task's pick object and place target at ``step`` (all objects if
    the plan cannot be matched), from the ``object_pos`` the collector stores per step."""
    from rocket_vla.envs.experts import plan_for_task

    names = str(ep.attrs.get("object_names", "")).split(",")
    positions = np.asarray(ep.obs["object_pos"][step], np.float64)
    try:
        plan = plan_for_task(str(ep.attrs["suite"]), int(ep.attrs["task_id"]))
        chosen = [next(i for i, n in enumerate(names) if name.startswith(n))
                  for name in (plan.obj, plan.target)]
    except (KeyError, StopIteration, ValueError):
        chosen = list(range(len(names)))
    return positions[chosen].reshape(-1)


def visual_token_features(policy: Any, episodes: list[Any], layers: list[int],
                          frames_per_episode: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Visual-token states at ``layers`` and the target objects' 3D positions, per frame.

    ``policy`` is a loaded student policy whose ``student`` declares ``blocks_path`` and
    ``visual_index`` (the Student interface). Frames are spread evenly over each episode;
    targets are :func:`probe_target`.
    """
    import torch

    from rocket_vla.align import LayerTaps

    model = policy.student
    feats: dict[int, list[np.ndarray]] = {k: [] for k in layers}
    targets: list[np.ndarray] = []
    with torch.no_grad(), LayerTaps(model, model.blocks_path, layers, final=model.final_path) as taps:
        for ep in episodes:
            policy.reset(TaskInfo("", 0, "", ep.language))
            rows = np.unique(np.linspace(0, len(ep.frame_index) - 1, frames_per_episode).round().astype(int))
            for row in rows:
                policy.act(episode_observation(ep, int(row)))
                taps.use_tokens(model.visual_index(policy.last_inputs))
                for k, state in zip(layers, taps.states, strict=True):
                    feats[k].append(state[0].float().numpy().reshape(-1))
                targets.append(probe_target(ep, int(ep.frame_index[row])))
    return {k: np.stack(v) for k, v in feats.items()}, np.stack(targets)

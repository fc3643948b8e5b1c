"""A policy on recorded demonstrations (rocket_vla.envs.offline) and the per-layer probe."""

from __future__ import annotations

import numpy as np
import torch

from rocket_vla.analysis.spatial_probe import fit_probe, probe_layers
from rocket_vla.data.episodes import Episode, gripper_env_to_model
from rocket_vla.envs import TaskInfo
from rocket_vla.envs.offline import episode_observation, heldout_action_l1, visual_token_features


def _episode(seed: int, steps: int = 9, stride: int = 2, size: int = 32) -> Episode:
    """Low-dim keys per step, images only every ``stride`` steps (as ``rocket collect`` stores)."""
    rng = np.random.default_rng(seed)
    rows = len(range(0, steps, stride))
    obs = {
        "agentview_rgb": rng.integers(0, 255, (rows, size, size, 3), dtype=np.uint8),
        "eye_in_hand_rgb": rng.integers(0, 255, (rows, size, size, 3), dtype=np.uint8),
        "ee_pos": rng.normal(size=(steps, 3)).astype(np.float32),
        "ee_ori": rng.normal(size=(steps, 3)).astype(np.float32),
        "gripper_states": rng.normal(size=(steps, 2)).astype(np.float32),
        "object_pos": rng.normal(size=(steps, 2, 3)),
    }
    actions = rng.uniform(-1, 1, (steps, 7)).astype(np.float32)
    actions[:, 6] = np.sign(actions[:, 6])
    return Episode(actions, obs, f"task {seed}", np.arange(0, steps, stride),
                   {"object_names": "bowl_1,plate_1"})


class _ZeroPolicy:
    """Answers every observation with a chunk of zeros, and remembers what it saw."""

    def __init__(self, chunk: int) -> None:
        self.chunk, self.seen, self.tasks = chunk, [], []

    def reset(self, task) -> None:
        self.tasks.append(task.language)

    def act(self, obs):
        self.seen.append(obs)
        return np.zeros((self.chunk, 7), np.float32)


def test_observation_reads_images_by_row_and_proprio_by_step() -> None:
    ep = _episode(0)
    obs = episode_observation(ep, 2)  # image row 2 is step 4
    np.testing.assert_array_equal(obs["agentview"], ep.obs["agentview_rgb"][2])
    np.testing.assert_array_equal(obs["wrist"], ep.obs["eye_in_hand_rgb"][2])
    np.testing.assert_array_equal(obs["proprio"], np.concatenate(
        [ep.obs["ee_pos"][4], ep.obs["ee_ori"][4], ep.obs["gripper_states"][4]]))


def test_heldout_action_l1_is_the_mean_error_of_whole_chunks() -> None:
    episodes = [_episode(0), _episode(1)]
    policy = _ZeroPolicy(chunk=3)
    got = heldout_action_l1(policy, episodes)
    want = []  # |0 - target| over each frame's chunk, cut at the episode's end
    for ep in episodes:
        target = gripper_env_to_model(ep.actions, "signed")
        want += [np.abs(target[s: s + 3]).mean() for s in ep.frame_index]
    assert got == np.float64(np.mean(want))
    assert policy.tasks == ["task 0", "task 1"] and len(policy.seen) == 10


def test_visual_token_features_are_the_tapped_block_outputs() -> None:
    from rocket_vla.data.dataset import fit_stats
    from rocket_vla.policies.minivla import MiniVLA, MiniVLAConfig
    from rocket_vla.policies.student_policy import StudentPolicy

    torch.manual_seed(0)
    episodes = [_episode(0), _episode(1)]
    model = MiniVLA(MiniVLAConfig.preset("tiny")).eval()
    policy = StudentPolicy(model, {"stats": fit_stats(episodes).to_dict()})
    feats, targets = visual_token_features(policy, episodes, [1, 3], frames_per_episode=3)
    # reference: a plain forward hook on block k-1 (hidden state k = after block k)
    outputs: list[torch.Tensor] = []
    handle = model.blocks[2].register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
    try:
        for ep in episodes:
            policy.reset(TaskInfo("", 0, "", ep.language))
            for row in (0, 2, 4):  # 3 frames spread over 5 image rows
                policy.act(episode_observation(ep, row))
    finally:
        handle.remove()
    spans = model.visual_spans
    want = [torch.cat([o[0, a:b] for a, b in spans]).reshape(-1).numpy() for o in outputs]
    np.testing.assert_allclose(feats[3], np.stack(want), rtol=1e-6, atol=1e-6)
    assert feats[1].shape == feats[3].shape and not np.allclose(feats[1], feats[3])
    # the plan is unknown without suite/task attributes: every object's position, per frame
    steps = [0, 4, 8] * 2
    np.testing.assert_array_equal(targets, np.stack(
        [episodes[i // 3].obs["object_pos"][s].reshape(-1) for i, s in enumerate(steps)]))


def test_probe_layers_fits_each_layer_on_its_own() -> None:
    g = torch.Generator().manual_seed(0)
    y_train, y_test = torch.randn(24, 3, generator=g), torch.randn(8, 3, generator=g)
    noise = torch.randn(32, 2, generator=g)
    x_train = {1: torch.randn(24, 5, generator=g), 4: torch.cat([y_train, noise[:24]], 1)}
    x_test = {1: torch.randn(8, 5, generator=g), 4: torch.cat([y_test, noise[24:]], 1)}
    out = probe_layers({k: v.numpy() for k, v in x_train.items()}, y_train.numpy(),
                       {k: v.numpy() for k, v in x_test.items()}, y_test.numpy())
    for k in (1, 4):
        ref = fit_probe(x_train[k], y_train, x_test[k], y_test)
        assert out[k] == {"r2": round(ref.r2, 4), "alpha": ref.alpha, "n_train": 24, "n_test": 8}
    assert out[4]["r2"] > 0.9 > out[1]["r2"]  # layer 4 holds the targets linearly

"""A trained checkpoint as the evaluation policy `rocket eval` loads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from minivla_fixtures import make_episodes, single_thread, tiny_config

from rocket_vla.envs.policy import TaskInfo, build_policy
from rocket_vla.errors import RocketError
from rocket_vla.train import Trainer

FACTORY = "minivla"  # every student kind is a policy name (rocket_vla.policies.student_policy)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_checkpoint_policy_uses_training_normalisation(tmp_path) -> None:
    episodes = make_episodes(n=2, length=8)
    trainer = Trainer(tiny_config(tmp_path, steps=2, variant="baseline"), episodes=episodes)
    trainer.fit()
    policy = build_policy(FACTORY, checkpoint=str(tmp_path / "run"))
    policy.reset(TaskInfo("libero_spatial", 0, "t0", episodes[0].language))
    obs = {"agentview": np.zeros((128, 128, 3), np.uint8), "wrist": np.zeros((128, 128, 3), np.uint8),
           "proprio": episodes[0].obs["ee_pos"][0].tolist() + [0.0] * 5, "step": np.int64(0)}
    obs["proprio"] = np.asarray(obs["proprio"], dtype=np.float32)
    chunk = policy.act(obs)
    assert chunk.shape == (8, 7) and np.all(np.isfinite(chunk))
    low, high = trainer.stats.action.low, trainer.stats.action.high
    assert np.all(chunk[:, :6] >= low[:6] - 1e-6) and np.all(chunk[:, :6] <= high[:6] + 1e-6)
    # the same numbers as the trained network, un-normalised with the stored statistics
    net = trainer.policy.eval()
    with torch.no_grad():
        images = torch.stack([policy._image(obs["agentview"]), policy._image(obs["wrist"])])[None]
        prop = torch.from_numpy(trainer.stats.proprio.normalize(obs["proprio"]))[None]
        text = net.config.tokenize([episodes[0].language])
        ref = trainer.stats.action.unnormalize(net(images, prop, text)[0].numpy())
    assert np.allclose(chunk[:, :6], ref[:, :6], atol=1e-5)
    assert np.allclose(chunk[:, 6], -ref[:, 6], atol=1e-5)
    assert policy.gripper == "signed"
    # `--policy checkpoint` reads the student kind from the checkpoint and builds the same policy
    again = build_policy("checkpoint", checkpoint=str(tmp_path / "run" / "checkpoints" / "step_000002"),
                         execute=3)
    again.reset(TaskInfo("libero_spatial", 0, "t0", episodes[0].language))
    assert np.allclose(again.act(obs), chunk[:3], atol=1e-6)


def test_policy_refuses_a_checkpoint_of_another_kind(tmp_path) -> None:
    Trainer(tiny_config(tmp_path, steps=1, variant="baseline"), episodes=make_episodes(n=2)).fit()
    with pytest.raises(RocketError, match="holds a minivla student, not pi0"):
        build_policy("pi0", checkpoint=str(tmp_path / "run"), student="pi0")


def test_policy_refuses_a_foreign_folder(tmp_path) -> None:
    with pytest.raises(RocketError, match="no checkpoint found"):
        build_policy(FACTORY, checkpoint=str(tmp_path))


def test_preprocess_preset_is_applied_to_every_camera_frame(tmp_path) -> None:
    """``--policy_kwargs.preprocess openpi`` equals feeding frames resized by PIL beforehand."""
    from PIL import Image

    episodes = make_episodes(n=2, length=8)
    Trainer(tiny_config(tmp_path, steps=1, variant="baseline"), episodes=episodes).fit()
    rng = np.random.default_rng(0)
    raw = {k: rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for k in ("agentview", "wrist")}
    proprio = np.asarray(episodes[0].obs["ee_pos"][0].tolist() + [0.0] * 5, dtype=np.float32)
    task = TaskInfo("libero_spatial", 0, "t0", episodes[0].language)
    padded = build_policy(FACTORY, checkpoint=str(tmp_path / "run"), preprocess="openpi")
    plain = build_policy(FACTORY, checkpoint=str(tmp_path / "run"))
    padded.reset(task)
    plain.reset(task)
    # a square frame: openpi's resize-with-pad is a plain bilinear resize to 224 x 224
    by_hand = {k: np.asarray(Image.fromarray(v).resize((224, 224), Image.Resampling.BILINEAR))
               for k, v in raw.items()}
    got = padded.act({**raw, "proprio": proprio})
    want = plain.act({**by_hand, "proprio": proprio})
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, plain.act({**raw, "proprio": proprio}))
    with pytest.raises(RocketError, match="unknown preprocessing preset 'jpeg'"):
        build_policy(FACTORY, checkpoint=str(tmp_path / "run"), preprocess="jpeg")

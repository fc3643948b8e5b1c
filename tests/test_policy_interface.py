"""The policy interface and its registry (no simulator needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rocket_vla.envs.policy import (
    Policy,
    TaskInfo,
    build_policy,
    factory_path,
    register_policy,
    registered_policies,
)
from rocket_vla.envs.processing import model_to_env_actions, proprio_vector, quat_to_axis_angle
from rocket_vla.errors import RocketError


class ZeroPolicy:
    """Holds still with the gripper open, in chunks of 4."""

    def __init__(self, checkpoint: str | None = None, chunk: int = 4) -> None:
        self.checkpoint, self.chunk = checkpoint, chunk

    def reset(self, task: TaskInfo) -> None:
        self.task = task

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros((self.chunk, 7), np.float32)
        out[:, 6] = 1.0
        return out


def make_zero(**kwargs) -> ZeroPolicy:
    return ZeroPolicy(**kwargs)


def test_registry_and_import_paths(tmp_path: Path) -> None:
    register_policy("zero-test", make_zero)
    assert "zero-test" in registered_policies() and "expert" in registered_policies()
    assert factory_path("zero-test") == f"{__name__}:make_zero"
    policy = build_policy("zero-test", chunk=2)
    assert isinstance(policy, Policy) and policy.act({}).shape == (2, 7)
    assert build_policy(f"{__name__}:make_zero").chunk == 4
    register_policy("lambda-test", lambda **kw: ZeroPolicy(**kw))
    with pytest.raises(RocketError, match="module-level function"):
        factory_path("lambda-test")
    with pytest.raises(RocketError, match="unknown policy"):
        build_policy("no-such-policy")
    with pytest.raises(RocketError, match="cannot import"):
        build_policy("no_such_module:factory")


def test_checkpoint_policy_reads_its_name(tmp_path: Path) -> None:
    register_policy("zero-test", make_zero)
    (tmp_path / "rocket_policy.json").write_text(json.dumps({"policy": "zero-test"}))
    policy = build_policy("checkpoint", checkpoint=str(tmp_path))
    assert isinstance(policy, ZeroPolicy) and policy.checkpoint == str(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(RocketError, match="does not say which policy"):
        build_policy("checkpoint", checkpoint=str(bare))
    with pytest.raises(RocketError, match="does not exist"):
        build_policy("checkpoint", checkpoint=str(tmp_path / "nope"))


def test_gripper_mapping_follows_the_paper() -> None:
    chunk = np.zeros((4, 7))
    chunk[:, 6] = [0.0, 0.3, 0.7, 1.0]  # model: 1 = open
    env = model_to_env_actions(chunk)
    np.testing.assert_array_equal(env[:, 6], [1, 1, -1, -1])  # LIBERO: -1 = open, +1 = close
    signed = chunk.copy()
    signed[:, 6] = [-1, -0.2, 0.2, 1]
    np.testing.assert_array_equal(model_to_env_actions(signed, "signed")[:, 6], [1, 1, -1, -1])
    assert model_to_env_actions(np.zeros(7)).shape == (1, 7)
    with pytest.raises(RocketError, match=r"shape \[chunk, 7\]"):
        model_to_env_actions(np.zeros((2, 6)))
    with pytest.raises(RocketError, match="NaN"):
        model_to_env_actions(np.full((1, 7), np.nan))


def test_proprio_is_pos_axis_angle_gripper() -> None:
    q = np.array([np.sin(0.25), 0, 0, np.cos(0.25)])  # 0.5 rad about x
    np.testing.assert_allclose(quat_to_axis_angle(q), [0.5, 0, 0], atol=1e-9)
    # no w >= 0 flip (robosuite's quat2axisangle, as the official data): -q is the same
    # rotation written as 2 pi - 0.5 rad about -x
    np.testing.assert_allclose(quat_to_axis_angle(-q), [-(2 * np.pi - 0.5), 0, 0], atol=1e-9)
    p = proprio_vector(np.array([1, 2, 3]), q, np.array([0.04, -0.04]))
    assert p.shape == (8,) and p.dtype == np.float32
    np.testing.assert_allclose(p, [1, 2, 3, 0.5, 0, 0, 0.04, -0.04], atol=1e-6)

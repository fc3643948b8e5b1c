"""The official clients' conventions on the real simulator: proprio, seeding, policy settings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("libero.libero")

from rocket_vla.envs.episode import EpisodeSettings, resolve_settings, run_episode  # noqa: E402
from rocket_vla.envs.experts import PickPlaceExpert  # noqa: E402
from rocket_vla.envs.libero_env import EnvConfig, LiberoEnv  # noqa: E402
from rocket_vla.envs.policy import register_policy  # noqa: E402
from rocket_vla.envs.runner import EvalConfig, read_results, run_evaluation  # noqa: E402
from rocket_vla.envs.suites import get_init_state, get_task, setup_headless_gl  # noqa: E402
from rocket_vla.errors import RocketError  # noqa: E402

pytestmark = pytest.mark.libero
SIZE = 64


def test_proprio_is_robosuites_axis_angle_on_real_states() -> None:
    """An expert episode's states: both signs of w occur and proprio = robosuite's conversion."""
    from robosuite.utils.transform_utils import quat2axisangle

    task = get_task("libero_spatial", 0)
    expert = PickPlaceExpert()
    seen = []
    with LiberoEnv(task, EnvConfig(image_size=SIZE)) as env:
        env.reset(get_init_state(task, 0), seed=0)
        from rocket_vla.envs.policy import TaskInfo

        expert.reset(TaskInfo(task.suite, task.task_id, task.name, task.language))
        for _ in range(120):
            obs = env.observation(images=False, state=True)
            quat = np.array(env.raw_obs()["robot0_eef_quat"], dtype=np.float64)
            seen.append((quat, obs["proprio"]))
            from rocket_vla.envs.processing import model_to_env_actions

            if env.step(model_to_env_actions(expert.act(obs), "unit")[0]):
                break
    signs = {bool(q[3] >= 0) for q, _ in seen}
    assert signs == {True, False}, "the episode should visit w of both signs"
    for quat, proprio in seen:
        ref = quat2axisangle(quat.copy())  # robosuite, as the official datasets were built
        np.testing.assert_allclose(proprio[3:6], ref, rtol=1e-5, atol=1e-6)
        # and the closed form, no w >= 0 flip: angle 2 acos(w) in [0, 2 pi]
        angle = 2 * math.acos(quat[3])
        np.testing.assert_allclose(np.linalg.norm(proprio[3:6]), angle, rtol=1e-5)
    negative = [p for q, p in seen if q[3] < 0]
    assert max(np.linalg.norm(p[3:6]) for p in negative) > math.pi  # the w >= 0 flip would cap at pi


def test_official_seeding_reproduces_the_official_client_fixtures() -> None:
    """Official client: OffScreenRenderEnv (hard resets), env.seed(0), reset + set_init_state
    per trial. Ours: the seeded stream swapped in around resets while the policy draws from
    numpy, and a fresh env jumping to trial 2."""
    setup_headless_gl()
    from libero.libero.envs import OffScreenRenderEnv

    task = get_task("libero_spatial", 0)
    ref = []
    official = OffScreenRenderEnv(bddl_file_name=task.bddl_file, camera_heights=SIZE, camera_widths=SIZE)
    try:
        official.seed(0)
        for k in range(3):
            official.reset()
            official.set_init_state(get_init_state(task, k))
            ref.append(np.array(official.sim.model.body_pos))
    finally:
        official.close()
    assert np.abs(ref[1] - ref[0]).max() > 1e-3  # fixtures really move between trials
    with LiberoEnv(task, EnvConfig(image_size=SIZE)) as env:
        env.seed(0)
        np.random.seed(123)  # a policy's own draws must not shift the stream
        for k in range(2):
            env.reset(get_init_state(task, k))
            np.random.rand(7)
            np.testing.assert_array_equal(np.array(env.sim.model.body_pos), ref[k])
    with LiberoEnv(task, EnvConfig(image_size=SIZE)) as env:
        env.seed(0)
        env.advance_to(2)
        env.reset(get_init_state(task, 2))
        np.testing.assert_array_equal(np.array(env.sim.model.body_pos), ref[2])


class ScriptedChunks:
    """Returns chunks of 8 holding still; optionally raises on its second call."""

    gripper = "env"
    actions_per_chunk = 8

    def __init__(self, fail_at: int = -1, **_: object) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def reset(self, task) -> None:
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ValueError("model blew up")
        chunk = np.zeros((8, 7))
        chunk[:, 6] = -0.25  # env convention: a raw, not binarised, opening command
        return chunk


def make_scripted(**kwargs) -> ScriptedChunks:
    return ScriptedChunks(**kwargs)


def test_policy_settings_resolution() -> None:
    policy = ScriptedChunks()
    assert resolve_settings(policy) == EpisodeSettings("env", 8, "abort")
    assert resolve_settings(policy, "unit", 5, "fail") == EpisodeSettings("unit", 5, "fail")
    assert resolve_settings(object()) == EpisodeSettings("unit", None, "abort")
    with pytest.raises(RocketError, match="actions per chunk must be >= 1"):
        EpisodeSettings("unit", 0)
    with pytest.raises(RocketError, match="unknown gripper convention"):
        EvalConfig(out_dir="x", gripper="open")


def test_actions_per_chunk_pass_through_and_error_as_failure(tmp_path: Path) -> None:
    task = get_task("libero_spatial", 0)
    sent = []
    with LiberoEnv(task, EnvConfig(image_size=SIZE)) as env:
        step = env.step

        def spy(action, render=False):
            sent.append(np.array(action))
            return step(action, render)

        env.step = spy  # record what reaches the simulator
        res = run_episode(env, ScriptedChunks(), get_init_state(task, 0), max_steps=20, num_wait=0,
                          settings=EpisodeSettings("env", 5, "abort"))
        assert res.policy_calls == 4 and res.steps == 20  # 5 of every 8 actions, then re-plan
        assert {float(a[6]) for a in sent} == {-0.25}  # passed through, not binarised
        with pytest.raises(ValueError, match="blew up"):
            run_episode(env, ScriptedChunks(fail_at=2), get_init_state(task, 0), max_steps=20,
                        num_wait=0, settings=EpisodeSettings("env", None, "abort"))
    register_policy("scripted-chunks-test", make_scripted)
    cfg = EvalConfig(out_dir=str(tmp_path), suites=["libero_spatial"], tasks=["0"], trials=2,
                     policy="scripted-chunks-test", policy_kwargs={"fail_at": 2}, image_size=SIZE,
                     max_steps=24, on_error="fail")
    run_evaluation(cfg, progress=False)
    recs = read_results(tmp_path / "episodes.jsonl")
    assert [r["trial"] for r in recs] == [0, 1]  # the run went on after the first error
    for r in recs:
        assert not r["success"] and r["steps"] == 8 and "ValueError: model blew up" in r["error"]
        assert r["seeding"] == "official" and r["gripper"] == "env" and r["actions_per_chunk"] == 8


def test_four_shards_merged_equal_one_unsharded_run(tmp_path: Path) -> None:
    """One task's 8 trials: 4 shards (each a fresh env replaying the fixture stream up to its
    first trial) merged = one run, episode for episode down to the final MuJoCo state."""
    from rocket_vla.cli import main

    common = ["eval", "--suites", "libero_spatial", "--tasks", "0", "--trials", "8", "--policy", "expert",
              "--image_size", str(SIZE), "--max_steps", "30", "--quiet"]
    assert main([*common, "--out_dir", str(tmp_path / "whole")]) == 0
    shards = [tmp_path / f"shard{k}" for k in range(4)]
    for k, d in enumerate(shards):
        assert main([*common, "--shard", f"{k}/4", "--out_dir", str(d)]) == 0
        assert [r["trial"] for r in read_results(d / "episodes.jsonl")] == [2 * k, 2 * k + 1]
    assert main(["eval", "--merge", *map(str, shards), "--out_dir", str(tmp_path / "merged")]) == 0
    keys = ("suite", "task_id", "trial", "success", "steps", "policy_calls", "final_state", "seeding")
    whole = [{k: r[k] for k in keys} for r in read_results(tmp_path / "whole" / "episodes.jsonl")]
    merged = [{k: r[k] for k in keys} for r in read_results(tmp_path / "merged" / "episodes.jsonl")]
    assert len(whole) == 8 and merged == whole
    assert len({r["final_state"] for r in whole}) == 8  # the digests do tell episodes apart
    other = tmp_path / "other"
    mixed = [x if x != "30" else "31" for x in common]  # another step budget
    assert main([*mixed, "--trials", "1", "--out_dir", str(other)]) == 0
    assert main(["eval", "--merge", str(shards[1]), str(other), "--out_dir", str(tmp_path / "mixed")]) == 2


SEEN_TASKS: list = []


class LanguageProbe:
    """Records the instruction it is given and holds still (no images needed)."""

    needs_images = False

    def __init__(self, **_: object) -> None:
        pass

    def reset(self, task) -> None:
        SEEN_TASKS.append(task)

    def act(self, obs):
        chunk = np.zeros((8, 7))
        chunk[:, 6] = 1.0
        return chunk


def make_probe(**kwargs) -> LanguageProbe:
    return LanguageProbe(**kwargs)


def test_libero_pro_suites_evaluate_with_the_reworded_instruction(tmp_path: Path) -> None:
    from rocket_vla.envs.suites import list_tasks

    suites = ["libero_spatial", "libero_spatial_lan", "libero_spatial_swap"]
    base, lan, swap = (list_tasks(s)[0] for s in suites)
    with LiberoEnv(lan, EnvConfig(image_size=SIZE)) as env:
        bddl_wording = env.language_instruction  # what the env itself states
    assert lan.language == bddl_wording != base.language  # the rewording, not the registry's
    assert "lift the black bowl" in lan.language
    assert swap.language == base.language  # swapped positions keep the official wording
    register_policy("language-probe-test", make_probe)
    SEEN_TASKS.clear()
    cfg = EvalConfig(out_dir=str(tmp_path), suites=suites, tasks=["0"], trials=1,
                     policy="language-probe-test", image_size=SIZE, max_steps=8)
    run_evaluation(cfg, progress=False)
    assert [(t.suite, t.language) for t in SEEN_TASKS] == [
        ("libero_spatial", base.language), ("libero_spatial_lan", lan.language),
        ("libero_spatial_swap", base.language)]
    recs = read_results(tmp_path / "episodes.jsonl")
    assert {r["suite"]: r["language"] for r in recs}["libero_spatial_lan"] == lan.language
    table = (tmp_path / "robustness.md").read_text()
    assert "| libero_spatial | 0/1 (0%) | 0/1 (0%) | - | 0/1 (0%) | - |" in table

"""Dataset format versions and evaluation shards (no simulator needed)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rocket_vla.data.episodes import FORMAT_VERSION, Episode, EpisodeWriter, read_episodes
from rocket_vla.envs.shards import merge_runs, parse_shard, shard_slice
from rocket_vla.errors import RocketError


def _write_ours(root: Path) -> Path:
    t = 4
    ep = Episode(np.zeros((t, 7), np.float32),
                 {"ee_pos": np.zeros((t, 3)), "ee_ori": np.zeros((t, 3)), "gripper_states": np.zeros((t, 2)),
                  "agentview_rgb": np.zeros((t, 8, 8, 3), np.uint8),
                  "eye_in_hand_rgb": np.zeros((t, 8, 8, 3), np.uint8)},
                 "pick it", np.arange(t))
    return EpisodeWriter(root).write("a/ep0", ep)


def test_older_collections_are_refused_with_one_sentence(tmp_path: Path) -> None:
    path = _write_ours(tmp_path)
    assert len(read_episodes(path)) == 1  # the current format reads
    with h5py.File(path, "r+") as f:
        assert f["data"].attrs["rocket_format"] == FORMAT_VERSION == 2
        f["data"].attrs["rocket_format"] = 1  # a collection made before the proprio fix
    with pytest.raises(RocketError, match=r"older rocket-vla \(format 1.*re-collect it with `rocket coll"):
        read_episodes(tmp_path)
    with h5py.File(path, "r+") as f:
        f["data"].attrs["rocket_format"] = FORMAT_VERSION + 1
    with pytest.raises(RocketError, match="upgrade rocket-vla"):
        read_episodes(path)


@given(st.integers(0, 60), st.integers(1, 9))
def test_shards_partition_the_list_in_order(total: int, n: int) -> None:
    items = list(range(total))
    parts = [shard_slice(items, k, n) for k in range(n)]
    assert [x for p in parts for x in p] == items  # disjoint, complete, order kept
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_flag_parsing() -> None:
    assert parse_shard("3/4") == (3, 4) and parse_shard(None) is None
    for bad in ("4/4", "1", "a/b", "-1/3", "0/0"):
        with pytest.raises(RocketError, match="K/N"):
            parse_shard(bad)


def _fake_run(root: Path, protocol: dict, trials: list[int]) -> Path:
    root.mkdir(parents=True)
    from rocket_vla.envs.simstack import simulator_stack
    from rocket_vla.fingerprint import code_version

    (root / "run_config.json").write_text(json.dumps({"protocol": protocol, "config": {},
                                                      "simulator": simulator_stack(),
                                                      "code_version": code_version(),
                                                      "planned_episodes": len(trials)}))
    with (root / "episodes.jsonl").open("w") as fh:
        for k in trials:
            fh.write(json.dumps({"suite": "libero_spatial", "task_id": 0, "task": "t", "trial": k,
                                 "success": k % 2 == 0, "steps": 10 + k, "wall_s": 1.0}) + "\n")
    return root


def test_merge_refuses_mixed_settings_and_duplicates(tmp_path: Path) -> None:
    from rocket_vla.envs.runner import PROTOCOL_FIELDS

    proto = {k: None for k in PROTOCOL_FIELDS} | {"image_size": 256, "seeding": "official"}
    a = _fake_run(tmp_path / "a", proto, [0, 1])
    b = _fake_run(tmp_path / "b", proto, [2, 3])
    c = _fake_run(tmp_path / "c", proto | {"image_size": 128}, [4])
    d = _fake_run(tmp_path / "d", proto, [1])
    summary = merge_runs([b, a], tmp_path / "ab")
    assert summary["tasks"][0]["episodes"] == 4 and summary["tasks"][0]["successes"] == 2
    lines = (tmp_path / "ab" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(x)["trial"] for x in lines] == [0, 1, 2, 3]
    with pytest.raises(RocketError, match="different image_size"):
        merge_runs([a, c], tmp_path / "ac")
    with pytest.raises(RocketError, match="trial 1 is in both"):
        merge_runs([a, d], tmp_path / "ad")
    with pytest.raises(RocketError, match="already holds results"):
        merge_runs([a, b], tmp_path / "ab")
    assert not (tmp_path / "ac").exists() and not (tmp_path / "ad").exists()


def test_robustness_report_counts_per_perturbation_kind() -> None:
    from rocket_vla.envs.robustness import robustness, robustness_markdown

    def rec(suite: str, task: int, ok: bool) -> dict:
        return {"suite": suite, "task_id": task, "success": ok}

    records = ([rec("libero_spatial", 0, True)] * 3 + [rec("libero_spatial", 1, False)]
               + [rec("libero_spatial_swap", 0, True), rec("libero_spatial_swap", 0, False)]
               + [rec("libero_spatial_lan", 1, True)] + [rec("libero_object_task", 2, False)])
    report = robustness(records)
    spatial = next(r for r in report["suites"] if r["base"] == "libero_spatial")
    assert spatial["unperturbed"] == {"successes": 3, "episodes": 4, "rate": 0.75}
    assert spatial["swap"]["rate"] == 0.5 and spatial["lan"]["episodes"] == 1
    assert spatial["object"] is None and spatial["task"] is None
    obj = next(r for r in report["suites"] if r["base"] == "libero_object")
    assert obj["unperturbed"] is None and obj["task"]["successes"] == 0
    md = robustness_markdown(report)
    assert "| libero_spatial | 3/4 (75%) | 1/2 (50%) | - | 1/1 (100%) | - |" in md
    assert "| libero_spatial | 0 | 3/3 (100%) | 1/2 (50%) | - | - | - |" in md

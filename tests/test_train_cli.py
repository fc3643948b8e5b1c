"""`rocket train` wiring (the learning-rate schedules are tested in test_optim.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from minivla_fixtures import make_episodes, single_thread

from rocket_vla.cli import main
from rocket_vla.commands.train import parse_layers
from rocket_vla.errors import RocketError
from rocket_vla.train.loop import sample_order


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_sample_order_is_a_permutation_per_epoch() -> None:
    first = sample_order(10, 0, 0, 10)
    assert sorted(first.tolist()) == list(range(10))
    assert np.array_equal(sample_order(10, 0, 3, 12), np.concatenate(
        [first[3:], sample_order(10, 0, 10, 5)]))


def test_parse_layers() -> None:
    assert parse_layers("2,4,-1") == [2, 4, -1]
    with pytest.raises(RocketError, match="comma-separated"):
        parse_layers("2;4")


def test_cli_trains_and_resumes(tmp_path, capsys) -> None:
    from rocket_vla.data.episodes import Episode, EpisodeWriter

    writer = EpisodeWriter(tmp_path / "data")
    for i, e in enumerate(make_episodes(n=2, length=8)):
        writer.write(f"ep{i}", Episode(e.actions, e.obs, e.language, np.arange(8)))
    args = ["train", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--model", "tiny", "--variant", "baseline", "--batch-size", "4",
            "--save-every", "2", "--no-progress", "--no-tensorboard"]
    assert main([*args, "--steps", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["checkpoint"].endswith("step_000002")
    assert main([*args, "--steps", "3", "--resume", "auto"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    assert main([*args, "--steps", "4", "--lr", "0.1", "--resume", "auto"]) == 2
    assert "changed hyper-parameters" in capsys.readouterr().err

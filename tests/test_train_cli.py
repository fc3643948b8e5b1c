"""`rocket train` wiring (the learning-rate schedules are tested in test_optim.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from minivla_fixtures import make_episodes, single_thread

from rocket_vla.cli import main
from rocket_vla.config_cli import CONFIG_DIR
from rocket_vla.errors import RocketError
from rocket_vla.train.config import TrainConfig
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


def test_every_shipped_config_round_trips_through_the_command_line(tmp_path) -> None:
    """Each shipped YAML parses into a TrainConfig; dumped back and re-read, it is unchanged."""
    import yaml

    from rocket_vla.commands.train import DESCRIPTION
    from rocket_vla.config_cli import build_parser, dump_yaml, parse_config, shipped_configs

    names = shipped_configs()
    assert {"baseline", "spatial_forcing", "naive", "shared", "rocket"} <= set(names)
    parser = build_parser(TrainConfig, "rocket train", DESCRIPTION)
    for name in names:
        cfg, _ = parse_config(parser, TrainConfig, ["--config", name])
        cfg.validate()
        written = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert all(cfg.to_dict()[k] == v for k, v in written.items())  # to_dict writes lists
        dumped = tmp_path / f"{name}.yaml"
        dumped.write_text(dump_yaml(cfg))
        again, _ = parse_config(parser, TrainConfig, ["--config", str(dumped)])
        assert again == cfg


def test_flags_override_configs_and_nested_keys_parse(tmp_path) -> None:
    from rocket_vla.commands.train import DESCRIPTION
    from rocket_vla.config_cli import build_parser, parse_config

    parser = build_parser(TrainConfig, "rocket train", DESCRIPTION)
    pairs = tmp_path / "pairs.yaml"
    assert main(["select-layers", "--student_depth", "6", "--teacher_depth", "4", "--pairs", "3",
                 "--format", "yaml", "--out", str(pairs)]) == 0
    cfg, _ = parse_config(parser, TrainConfig, ["--config", "naive", "--config", str(pairs),
                                                "--lr", "0.01", "--augment.enabled", "false"])
    assert cfg.variant == "naive" and cfg.lr == 0.01 and cfg.augment.enabled is False
    assert cfg.student_layers == [2, 4, 6] and cfg.teacher_layers == [2, 3, 4]
    assert cfg.steps == TrainConfig().steps  # untouched fields keep the dataclass default
    with pytest.raises(RocketError, match="neither a file nor a shipped config"):
        parse_config(parser, TrainConfig, ["--config", "rockett"])


def test_cli_trains_and_resumes(tmp_path, capsys) -> None:
    from rocket_vla.data.episodes import Episode, EpisodeWriter

    writer = EpisodeWriter(tmp_path / "data")
    for i, e in enumerate(make_episodes(n=2, length=8)):
        writer.write(f"ep{i}", Episode(e.actions, e.obs, e.language, np.arange(8)))
    args = ["train", "--dataset", str(tmp_path / "data"), "--out_dir", str(tmp_path / "run"),
            "--student_preset", "tiny", "--variant", "baseline", "--batch_size", "4",
            "--save_every", "2", "--progress", "false", "--tensorboard", "false"]
    assert main([*args, "--steps", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["checkpoint"].endswith("step_000002")
    assert main([*args, "--steps", "3", "--resume", "auto"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    assert main([*args, "--steps", "4", "--lr", "0.1", "--resume", "auto"]) == 2
    assert "changed hyper-parameters" in capsys.readouterr().err

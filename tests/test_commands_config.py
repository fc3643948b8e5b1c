"""The generated command lines of `rocket eval`, `collect`, `demo`, `cache-teacher`,
`select-layers`, `reproduce` and `profile KIND` (no simulator needed).

Each command's flags come from its config dataclass: no flags give the dataclass's own
defaults, flags give what constructing the dataclass by hand gives, ``--print_config``
output read back with ``--config`` gives the same dataclass, and a bad value is one
``rocket <cmd>: error:`` line.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest

from rocket_vla.align.pairing import LayerSelectionConfig, balanced_pairs
from rocket_vla.cli import main
from rocket_vla.config_cli import build_parser, dump_yaml, parse_config
from rocket_vla.demo.config import DemoConfig
from rocket_vla.envs.check_env import CheckEnvConfig, Tolerances
from rocket_vla.envs.collect import CollectConfig
from rocket_vla.envs.runner import EvalConfig
from rocket_vla.errors import RocketError
from rocket_vla.study.config import StudyConfig
from rocket_vla.teachers.build import TeacherConfig
from rocket_vla.teachers.fill import CacheFillConfig

# command -> (config class, flags, the same configuration built by hand)
CASES: dict[str, tuple[type, list[str], Any]] = {
    "eval": (EvalConfig,
             ["--out_dir", "o", "--suites", "goal,libero_10", "--tasks", "0,pick_up", "--trials", "3",
              "--policy", "minivla", "--policy_kwargs.execute", "8", "--shard", "1/4",
              "--seeding", "per-episode", "--video", "failures", "--max_steps", "30"],
             EvalConfig(out_dir="o", suites=["libero_goal", "libero_10"], tasks=[0, "pick_up"], trials=3,
                        policy="minivla", policy_kwargs={"execute": 8}, shard=(1, 4),
                        seeding="per_episode", video="failures", max_steps=30)),
    "collect": (CollectConfig,
                ["--out_dir", "d", "--suites", "[libero_object]", "--tasks", "2", "5", "--init_states", "3",
                 "--depth", "false", "--variation_xy", "0.05", "--frame_stride", "4"],
                CollectConfig(out_dir="d", suites=["libero_object"], tasks=[2, 5], init_states=3, depth=False,
                              variation_xy=0.05, frame_stride=4)),
    "demo": (DemoConfig,
             ["--preset", "smoke", "--data.tasks", "0,1", "--train.steps", "9", "--parallel_train",
              "--overwrite"],
             DemoConfig.preset("smoke", data={"tasks": [0, 1]}, train={"steps": 9}, parallel_train=True,
                               overwrite=True)),
    "cache-teacher": (CacheFillConfig,
                      ["--dataset", "d", "--teacher.kind", "vggt-random", "--teacher.input_size",
                       "224x308", "--layers", "1,-1", "--cameras", "agentview_rgb", "--shard", "1/3",
                       "--verify", "false"],
                      CacheFillConfig(dataset="d",
                                      teacher=TeacherConfig(kind="vggt-random", input_size=(224, 308)),
                                      layers=[1, -1], cameras=["agentview_rgb"], shard=(1, 3),
                                      verify=False)),
    "select-layers": (LayerSelectionConfig, ["--student_depth", "6", "--teacher_depth", "4", "--pairs", "3"],
                      LayerSelectionConfig(student_depth=6, teacher_depth=4, pairs=3)),
    "check-env": (CheckEnvConfig,
                  ["--suites", "spatial,libero_10", "--init_states", "0,3", "--workers", "1",
                   "--tolerances.position_mm", "3", "--premises", "--out_dir", "ce"],
                  CheckEnvConfig(suites=["libero_spatial", "libero_10"], init_states=[0, 3], workers=1,
                                 tolerances=Tolerances(position_mm=3.0), premises=True, out_dir="ce")),
    "reproduce": (StudyConfig,
                  ["--preset", "smoke", "--seeds", "0,1,2", "--variants", "baseline", "naive",
                   "--levels", "0.5,0.8", "--control_seeds", "1", "--train.teacher", "random-tiny",
                   "--overwrite"],
                  StudyConfig.preset("smoke", seeds=[0, 1, 2], variants=["baseline", "naive"],
                                     levels=[0.5, 0.8], control_seeds=[1], train={"teacher": "random-tiny"},
                                     overwrite=True)),
}
#: the flags a command cannot do without, and the fields they set
REQUIRED: dict[str, tuple[list[str], dict[str, Any]]] = {
    "select-layers": (["--student_depth", "32"], {"student_depth": 32}),
}
#: a flag given after --config FILE, and the field it sets
OVERRIDE: dict[str, tuple[str, Any]] = {"select-layers": ("pairs", 2)}


def _parser(command: str) -> Any:
    module = importlib.import_module(f"rocket_vla.commands.{command.replace('-', '_')}")
    cls = CASES[command][0]
    return build_parser(cls, f"rocket {command}", module.DESCRIPTION,
                        getattr(module, "Options", None), presets=getattr(cls, "PRESETS", None))


def _parse(command: str, argv: list[str]) -> Any:
    cls = CASES[command][0]
    return parse_config(_parser(command), cls, argv, presets=getattr(cls, "PRESETS", None))[0]


@pytest.mark.parametrize("command", sorted(CASES))
def test_no_flags_give_the_dataclass_defaults(command: str) -> None:
    cls = CASES[command][0]
    flags, values = REQUIRED.get(command, ([], {}))
    assert _parse(command, flags) == cls(**values)


@pytest.mark.parametrize("command", sorted(CASES))
def test_flags_give_what_the_dataclass_gives(command: str) -> None:
    _, flags, expected = CASES[command]
    assert _parse(command, flags) == expected


@pytest.mark.parametrize("command", sorted(CASES))
def test_print_config_read_back_gives_the_same_config(command: str, tmp_path: Path, capsys) -> None:
    _, flags, expected = CASES[command]
    with pytest.raises(SystemExit) as stop:
        main([command, *flags, "--print_config"])
    assert stop.value.code == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert _parse(command, ["--config", str(printed)]) == expected
    dumped = tmp_path / "dumped.yaml"  # the library's own YAML of the dataclass reads back too
    dumped.write_text(dump_yaml(expected))
    assert _parse(command, ["--config", str(dumped)]) == expected
    # a flag after the file still wins
    name, value = OVERRIDE.get(command, ("out_dir", "elsewhere"))
    again = _parse(command, ["--config", str(printed), f"--{name}", str(value)])
    assert again == dataclasses.replace(expected, **{name: value})


@pytest.mark.parametrize("command, argv, words", [
    ("eval", ["--trials", "many"], 'Parser key "trials"'),
    ("eval", ["--trials", "0"], "--trials must be >= 1"),
    ("eval", ["--shard", "4/4"], "shard 4/4 is out of range"),
    ("eval", ["--suites", "libero_moon"], "unknown LIBERO suite"),
    ("eval", ["--image-size", "64"], "unrecognized arguments: --image-size"),
    ("collect", ["--frame_stride", "0"], "--frame_stride must be >= 1"),
    ("collect", ["--image_size", "big"], 'Parser key "image_size"'),
    ("demo", ["--preset", "huge"], "unknown preset 'huge'"),
    ("demo", ["--train.steps", "0"], "steps must be at least 1"),
    ("demo", ["--train.nope", "1"], "unrecognized arguments: --train.nope"),
    ("demo", ["--train.decay_after", "9"], "the demo sets train.decay_after itself"),
    ("reproduce", ["--train.seed", "3"], "the study sets train.seed itself"),
    ("demo", ["--config", "no_such_config"], "neither a file nor a shipped config"),
    ("cache-teacher", ["--shard", "x"], "'x' is not INDEX/COUNT"),
    ("cache-teacher", ["--teacher.input_size", "big"], "is not HxW"),
    ("cache-teacher", ["--teacher.device", "cpu", "--dataset"], "expected one argument"),
    ("select-layers", [], "required: student_depth"),
    ("select-layers", ["--student_depth", "6", "--format", "toml"], 'key "format"'),
])
def test_a_bad_value_is_one_error_line(command: str, argv: list[str], words: str, capsys) -> None:
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rocket {command}: error: ") and err.count("\n") == 1, err
    assert words in err


def test_presets_set_defaults_that_config_files_and_flags_override(tmp_path: Path) -> None:
    assert _parse("demo", ["--preset", "quick"]) == DemoConfig.preset("quick")
    assert _parse("demo", ["--preset", "quick", "--preset", "default"]) == DemoConfig()  # the last wins
    override = tmp_path / "steps.yaml"
    override.write_text("train:\n  steps: 77\n")
    parsed = _parse("demo", ["--preset", "smoke", "--config", str(override), "--workers", "3"])
    assert parsed == DemoConfig.preset("smoke", train={"steps": 77}, workers=3)
    # a parser used for one preset does not leak it into the next parse
    parser = _parser("demo")
    parse_config(parser, DemoConfig, ["--preset", "smoke"], presets=DemoConfig.PRESETS)
    assert parse_config(parser, DemoConfig, [], presets=DemoConfig.PRESETS)[0] == DemoConfig()


def test_a_yaml_file_dotted_flags_and_a_preset_compose_into_the_nested_config(tmp_path: Path) -> None:
    """Preset < YAML file < flags, field by field: what is not named keeps the value below."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  tasks: [3]\ntrain:\n  lr: 0.002\n  augment:\n    enabled: false\n")
    parsed = _parse("demo", ["--preset", "quick", "--config", str(recipe), "--train.steps", "50",
                             "--data.train_demos", "5", "--data.tasks", "3", "4"])
    expected = DemoConfig(data=dataclasses.replace(DemoConfig().data, tasks=[3, 4], train_demos=5,
                                                   heldout_demos=3, demo_first_init=10),
                          eval_trials=6, probe_frames=8)
    expected.train.steps, expected.train.lr, expected.train.augment.enabled = 50, 0.002, False
    assert parsed == expected
    # a bare nested switch means true; a nested list takes words
    switched = _parse("reproduce", ["--train.gradient_checkpointing", "--data.tasks", "5", "6"])
    assert switched.train.gradient_checkpointing is True and switched.data.tasks == [5, 6]


def test_an_unknown_nested_key_is_refused_in_one_sentence(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 5\n")
    assert main(["demo", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rocket demo: error: ") and err.count("\n") == 1 and "stepz" in err, err
    with pytest.raises(RocketError, match=r"unknown setting 'train.stepz'; see --print_config"):
        DemoConfig.preset("default", train={"stepz": 5})


def test_eval_factory_kwargs_carry_the_checkpoint_and_the_student_kind() -> None:
    from rocket_vla.envs.policy import factory_kwargs

    assert factory_kwargs("minivla", {"execute": 2}, "ck", "cpu") == {
        "execute": 2, "checkpoint": "ck", "student": "minivla", "device": "cpu"}
    assert factory_kwargs("expert", {}, None) == {}
    with pytest.raises(RocketError, match="--policy checkpoint needs --checkpoint PATH"):
        factory_kwargs("checkpoint", {}, None)


def test_eval_merges_folders_given_after_the_merge_flag(tmp_path: Path, capsys) -> None:
    """``--merge DIR...`` takes several folders and writes into ``--out_dir``, as before."""
    import json

    from rocket_vla.envs.runner import PROTOCOL_FIELDS
    from rocket_vla.envs.simstack import simulator_stack
    from rocket_vla.fingerprint import code_version

    proto = {k: None for k in PROTOCOL_FIELDS} | {"image_size": 256}
    runs = []
    for name, trials in (("a", [0, 1]), ("b", [2])):
        root = tmp_path / name
        root.mkdir()
        (root / "run_config.json").write_text(json.dumps({"protocol": proto, "config": {},
                                                          "simulator": simulator_stack(),
                                                          "code_version": code_version(),
                                                          "planned_episodes": len(trials)}))
        (root / "episodes.jsonl").write_text("".join(
            json.dumps({"suite": "libero_spatial", "task_id": 0, "task": "t", "trial": k,
                        "success": k == 0, "steps": 5, "wall_s": 1.0}) + "\n" for k in trials))
        runs.append(str(root))
    assert main(["eval", "--merge", *runs, "--out_dir", str(tmp_path / "m")]) == 0
    assert "merged 2 folders" in capsys.readouterr().out
    merged = [json.loads(x)["trial"] for x in (tmp_path / "m" / "episodes.jsonl").read_text().splitlines()]
    assert merged == [0, 1, 2]
    assert main(["eval", "--merge", str(tmp_path / "missing"), "--out_dir", str(tmp_path / "n")]) == 2
    assert capsys.readouterr().err.startswith("rocket eval: error:")


def test_select_layers_writes_the_balanced_pairs_that_train_reads(tmp_path: Path, capsys) -> None:
    from rocket_vla.train.config import TrainConfig

    out = tmp_path / "pairs.yaml"
    assert main(["select-layers", "--student_depth", "12", "--pairs", "4", "--format", "yaml",
                 "--out", str(out)]) == 0
    cfg, _ = parse_config(build_parser(TrainConfig, "rocket train", ""), TrainConfig, ["--config", str(out)])
    assert (cfg.student_layers, cfg.teacher_layers) == tuple(balanced_pairs(12, 24, 4))
    assert main(["select-layers", "--student_depth", "12", "--pairs", "4"]) == 0
    flags = capsys.readouterr().out.strip().splitlines()[-1].split()
    again, _ = parse_config(build_parser(TrainConfig, "rocket train", ""), TrainConfig, flags)
    assert (again.student_layers, again.teacher_layers) == (cfg.student_layers, cfg.teacher_layers)


PROFILE_CASES = {
    "cka": (["--student_layers", "1,-1", "--teacher_layers", "[2, 4]", "--mode", "mean",
             "--progress", "false"],
            dict(student_layers=[1, -1], teacher_layers=[2, 4], mode="mean", progress=False)),
    "grad": (["--all_steps", "--params", "block", "--block", "0", "--batches", "2"],
             dict(all_steps=True, params="block", block=0, batches=2)),
    "projector": (["--samples", "8", "--all_steps"], dict(samples=8, all_steps=True)),
    "importance": (["--windows", "1", "3", "--out_dir", "imp"], dict(windows=[1, 3], out_dir="imp")),
}


@pytest.mark.parametrize("kind", sorted(PROFILE_CASES))
def test_profile_kinds_parse_print_and_read_back(kind: str, tmp_path: Path, capsys) -> None:
    from rocket_vla.analysis.profile_config import PROFILES
    from rocket_vla.config_cli import parse_kind

    cls = PROFILES[kind]
    assert parse_kind([kind, "--checkpoint", "run"], PROFILES, "rocket profile") == (kind, cls(["run"]))
    flags, values = PROFILE_CASES[kind]
    expected = cls(checkpoint=["a", "b"], **values)
    assert parse_kind([kind, "--checkpoint", "a", "b", *flags], PROFILES, "rocket profile")[1] == expected
    with pytest.raises(SystemExit):
        main(["profile", kind, "--checkpoint", "a", "b", *flags, "--print_config"])
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert parse_kind([kind, "--config", str(printed)], PROFILES, "rocket profile")[1] == expected


@pytest.mark.parametrize("argv, words", [
    ([], "no kind was given"),
    (["cca"], "unknown kind 'cca'"),
    (["cka"], "required: checkpoint"),
    (["grad", "--checkpoint", "a", "--batches", "x"], 'key "batches"'),
])
def test_profile_errors_are_one_line(argv: list[str], words: str, capsys) -> None:
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rocket profile: error: ") and err.count("\n") == 1 and words in err, err

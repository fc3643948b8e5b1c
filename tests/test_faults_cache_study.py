"""Faults of the teacher cache, the augmentation settings and `rocket reproduce` reruns.

Each fault is real: a cache whose manifest records other code, a disk that really fills up
(a small tmpfs, so writes fail with ENOSPC), flags given to the real CLI, and study folders
whose runs were recorded with other settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_helpers import small_disk
from minivla_fixtures import make_episodes, single_thread
from test_faults import _write_dataset

from rocket_vla.cli import main
from rocket_vla.data.augment import AugmentConfig
from rocket_vla.errors import RocketError

TINY_TEACHER = ("--teacher.kind", "vggt-random", "--teacher.vggt_size", "tiny",
                "--teacher.input_size", "28")
PAGE = 4096  # tmpfs counts its size in pages


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _error_line(err: str, command: str) -> str:
    """The CLI's one error line (progress bars may precede it on stderr)."""
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"rocket {command}: error: "), err
    return last


def _fill_args(data: Path, out: Path, layers: str) -> list[str]:
    return ["cache-teacher", "--dataset", str(data), "--out_dir", str(out), *TINY_TEACHER,
            "--layers", layers, "--batch_size", "4"]


# -- 1. a teacher cache made by other code ------------------------------------------------------
@pytest.mark.fault("refused")
def test_training_refuses_a_teacher_cache_made_by_other_code(tmp_path: Path, capsys) -> None:
    """`rocket train --teacher_cache` refuses a cache whose manifest records other code, as
    `rocket cache-teacher` does; the fix it names (`--overwrite`) makes it usable again."""
    data = _write_dataset(tmp_path / "data", make_episodes(n=2, length=6))
    cache = tmp_path / "cache"
    fill = _fill_args(data, cache, "2,3,4")
    assert main(fill) == 0
    train = ["train", "--dataset", str(data), "--teacher_cache", str(cache), "--student_preset", "tiny",
             "--steps", "1", "--batch_size", "4", "--num_pairs", "2", "--projector_hidden", "32",
             "--progress", "false", "--tensorboard", "false"]
    assert main([*train, "--out_dir", str(tmp_path / "same_code")]) == 0

    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["code_version"]["source"] = "0" * 24  # what a changed copy of the package records
    (cache / "manifest.json").write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in (cache / "episodes").iterdir()}
    capsys.readouterr()
    refused = tmp_path / "other_code"
    assert main([*train, "--out_dir", str(refused)]) == 2
    line = _error_line(capsys.readouterr().err, "train")
    assert f"the teacher cache at {cache} was made by other rocket-vla code (source" in line
    assert f"--out_dir {cache} --overwrite" in line and "new cache folder" in line
    assert not (refused / "checkpoints").exists()
    assert {p.name: p.read_bytes() for p in (cache / "episodes").iterdir()} == before
    # --overwrite over an earlier run with the refused cache: the earlier run is not cleared
    kept = sorted(p.name for p in (tmp_path / "same_code" / "checkpoints").iterdir())
    assert main([*train, "--out_dir", str(tmp_path / "same_code"), "--overwrite"]) == 2
    assert sorted(p.name for p in (tmp_path / "same_code" / "checkpoints").iterdir()) == kept
    assert (tmp_path / "same_code" / "metrics.jsonl").is_file()

    assert main([*fill, "--overwrite"]) == 0  # the named fix: recompute with this code
    assert main([*train, "--out_dir", str(refused)]) == 0


# -- 2. the disk fills up during a cache fill ----------------------------------------------------



def _pages(nbytes: int) -> int:
    return -(-nbytes // PAGE)


@pytest.mark.fault("survived")
def test_full_disk_during_a_cache_fill_keeps_finished_entries_and_a_later_fill_continues(
        tmp_path: Path, capsys) -> None:
    """The disk fills up in the middle of the second episode: one sentence names the cache and
    the fix, no temp file stays, the first entry survives byte for byte, and after freeing
    space a rerun writes only the rest -- the same bytes a fill with space writes."""
    data = _write_dataset(tmp_path / "data", make_episodes(n=3, length=12))
    reference = tmp_path / "reference"
    assert main(_fill_args(data, reference, "4")) == 0
    entries = sorted((reference / "episodes").glob("*.safetensors"))
    entry_pages = _pages(entries[0].stat().st_size)
    assert entry_pages >= 4  # the second entry fails part-way, after some of its writes
    with small_disk(tmp_path / "disk", 256) as disk:
        stat = os.statvfs(disk)
        room = PAGE * (_pages((reference / "manifest.json").stat().st_size) + entry_pages
                       + entry_pages // 2)  # the manifest, one entry and half of the next
        (disk / "ballast").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - room))
        out = disk / "cache"
        capsys.readouterr()
        assert main(_fill_args(data, out, "4")) == 2
        line = _error_line(capsys.readouterr().err, "cache-teacher")
        assert f"the disk holding the teacher cache {out} is full;" in line
        assert "finished episodes are kept" in line and "rerun `rocket cache-teacher`" in line
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
        kept = sorted((out / "episodes").glob("*.safetensors"))
        assert [p.name for p in kept] == [entries[0].name]
        assert kept[0].read_bytes() == entries[0].read_bytes()

        (disk / "ballast").unlink()  # free space, then rerun
        assert main(_fill_args(data, out, "4")) == 0
        assert "wrote 2 episodes" in capsys.readouterr().out
        assert sorted(p.name for p in (out / "episodes").iterdir()) == [p.name for p in entries]
        assert all((out / "episodes" / p.name).read_bytes() == p.read_bytes() for p in entries)


# -- 3. augmentation settings ---------------------------------------------------------------------
@pytest.mark.fault("refused")
@pytest.mark.parametrize("name,value", [
    ("crop_area", "4.0"), ("crop_area", ".nan"), ("crop_area", "-1"), ("crop_area", "0"),
    ("brightness", "50"), ("brightness", "1"), ("contrast", ".inf"), ("saturation", "-0.5"),
])
def test_augmentation_settings_out_of_range_are_refused(tmp_path: Path, capsys, name: str,
                                                        value: str) -> None:
    """Crop areas outside (0, 1] and jitter strengths outside [0, 1) stop the real CLI with
    one sentence before anything is read or written. NaN and infinity come from a YAML config
    (``.nan``, ``.inf``): the flag parser itself takes no nan."""
    out = tmp_path / "run"
    if value.startswith("."):
        config = tmp_path / "augment.yaml"
        config.write_text(f"augment:\n  {name}: {value}\n")
        given = ["--config", str(config)]
    else:
        given = [f"--augment.{name}", value]
    assert main(["train", "--dataset", str(tmp_path), "--out_dir", str(out), *given]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    line = _error_line(err, "train")
    expected = "a fraction of the frame in (0, 1]" if name == "crop_area" else "a jitter strength in [0, 1)"
    assert f"augment.{name} must be {expected}" in line and f"got {float(value.lstrip('.'))}" in line
    assert not out.exists()


def test_augmentation_settings_at_the_edges_are_accepted() -> None:
    AugmentConfig(crop_area=1.0, brightness=0.0, contrast=0.99, saturation=0.5).validate()
    AugmentConfig(crop_area=0.25).validate()


# -- 4. `rocket reproduce` rerun with other settings -------------------------------------------
DATA = {"train": "a" * 32, "heldout": "b" * 32}


def _study(tmp_path: Path, **overrides):
    from rocket_vla.study.config import StudyConfig

    return StudyConfig.preset("smoke", out_dir=str(tmp_path / "study"),
                              cache_dir=str(tmp_path / "cache"), **overrides)


def _record_finished_runs(cfg) -> None:
    """What a finished smoke study leaves per run -- its identity and its result file --
    written by the study's own functions, without collecting, training or simulating."""
    from rocket_vla.fingerprint import compared_code_version
    from rocket_vla.records import write_json_atomic
    from rocket_vla.study.runs import RunKey, claim, result_file, run_identity

    for seed in cfg.seeds:
        for variant in cfg.variants:
            key = RunKey(variant, seed)
            claim(cfg, key, run_identity(cfg, key, DATA, "teacher-fp", compared_code_version()))
            write_json_atomic(result_file(cfg, key, [2, 4]), {"variant": variant, "seed": seed})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.fault("refused")
@pytest.mark.parametrize("change,shown", [
    (dict(max_steps=50), "max_steps=20 (now 50)"), (dict(train={"lr": 0.5}), "train.lr=0.001 (now 0.5)"),
    (dict(train={"batch_size": 2}), "train.batch_size=4 (now 2)"),
    (dict(data={"seed": 3}), "data_settings.seed=0 (now 3)"),
    (dict(data={"tasks": [1]}), "data_settings.tasks=[0] (now [1])"),
    (dict(train={"student_preset": "demo"}), "train.student_preset='tiny' (now 'demo')"),
    (dict(check_every=1), "check_every=2 (now 1)"),
    (dict(train={"teacher": "random-tiny"}), "train.teacher='tiny' (now 'random-tiny')"),
])
def test_study_runs_made_with_other_settings_are_refused(tmp_path: Path, change: dict,
                                                         shown: str) -> None:
    """Every setting that changes what a run computes is part of its identity: a finished
    run is reused only with the same values, refused otherwise, redone with --overwrite."""
    from rocket_vla.fingerprint import compared_code_version
    from rocket_vla.study.runs import RunKey, check_settings, claim, run_identity

    cfg = _study(tmp_path)
    _record_finished_runs(cfg)
    code = compared_code_version()
    rocket = RunKey("rocket", 0)
    claim(cfg, rocket, run_identity(cfg, rocket, DATA, "teacher-fp", code))  # the same identity: kept
    assert (Path(cfg.out_dir) / "runs" / "rocket-seed0" / "result-test-t1-2-4.json").is_file()
    other = _study(tmp_path, **change)
    keys = [RunKey(v, s) for s in other.seeds for v in other.variants]
    before = _snapshot(Path(cfg.out_dir))
    with pytest.raises(RocketError, match=r"study run .*-seed0 was made with .*" + re.escape(shown)
                       + r".*use a new --out_dir"):
        check_settings(other, keys)
    with pytest.raises(RocketError, match="use a new --out_dir"):
        claim(other, rocket, run_identity(other, rocket, DATA, "teacher-fp", code))
    assert _snapshot(Path(cfg.out_dir)) == before
    baseline = RunKey("baseline", 0)
    if "teacher" in change.get("train", {}):  # the baseline never sees a teacher: its run is still reusable
        claim(other, baseline, run_identity(other, baseline, DATA, None, code))
        assert (Path(cfg.out_dir) / "runs" / "baseline-seed0" / "result-test-t1-2-4.json").is_file()
    redo = _study(tmp_path, overwrite=True, **change)
    claim(redo, rocket, run_identity(redo, rocket, DATA, "teacher-fp", code))
    assert sorted(p.name for p in Path(redo.out_dir, "runs", "rocket-seed0").iterdir()) == ["identity.json"]


def test_other_evaluated_points_or_trials_get_their_own_result(tmp_path: Path) -> None:
    """The evaluated checkpoints and test trials name the result file: another choice is a result
    of its own beside the first, never the first one reused."""
    from rocket_vla.study.runs import RunKey, result_file

    cfg = _study(tmp_path)
    key = RunKey("rocket", 0)
    files = {result_file(cfg, key, [2, 4]), result_file(cfg, key, [4]),
             result_file(_study(tmp_path, eval_trials=2, data={"demo_first_init": 3}), key, [2, 4])}
    assert len(files) == 3


@pytest.mark.fault("refused")
def test_reproduce_rerun_with_other_max_steps_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    """`rocket reproduce` over a finished study with another --max_steps stops with one
    sentence before collecting anything, and leaves every run and results.json as they were."""
    cfg = _study(tmp_path)
    _record_finished_runs(cfg)
    study = Path(cfg.out_dir)
    (study / "results.json").write_text(json.dumps({"max_steps": 20}))
    before = _snapshot(study)
    argv = ["reproduce", "--preset", "smoke", "--out_dir", str(study), "--cache_dir", str(tmp_path / "cache")]
    assert main([*argv, "--max_steps", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    line = _error_line(err, "reproduce")
    assert ("was made with max_steps=20 (now 50); pass --overwrite true to redo it, or use a new "
            "--out_dir.") in line
    assert not (tmp_path / "cache").exists()  # nothing was collected
    assert {k: v for k, v in _snapshot(study).items() if k != ".lock"} == before

"""Fault injection for training run folders and checkpoints: refused in one sentence, or survived.

Faults are real: a second process holding the run folder, two `rocket train` processes at
once, an edited number in a real config.json, a deleted step folder, a learning rate that
blows the weights up, a tmpfs that fills up mid-checkpoint, a file where the run folder
should be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fault_helpers import small_disk
from minivla_fixtures import ConvTeacher, make_episodes, single_thread, tiny_config
from test_faults import SRC, _kill, _spawn, _write_dataset

from rocket_vla.cli import main
from rocket_vla.envs.policy import build_policy
from rocket_vla.errors import RocketError
from rocket_vla.policies.student import load_student
from rocket_vla.train import Trainer
from rocket_vla.train import checkpoint as ckpt_io
from rocket_vla.weights import read_safetensors

#: `rocket train` flags of a tiny baseline run (seconds on one core).
TINY = ["--student_preset", "tiny", "--variant", "baseline", "--batch_size", "4", "--save_every", "1",
        "--log_every", "1", "--progress", "false", "--tensorboard", "false"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short episodes as a real LIBERO-layout HDF5 folder."""
    return _write_dataset(tmp_path_factory.mktemp("data") / "data", make_episodes(n=2, length=6))


def _train_cli(dataset: Path, out: str | Path, *extra: str) -> int:
    return main(["train", "--dataset", str(dataset), "--out_dir", str(out), *TINY, *extra])


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("rocket train: error:") and err.count("\n") == 1, err
    return err


def _steps(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "checkpoints").glob("step_*"))


def _metric_steps(root: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (root / "metrics.jsonl").read_text().splitlines()]


# -- 1. two runs into one folder ----------------------------------------------------------------
@pytest.mark.fault("refused")
def test_train_into_a_folder_another_trainer_holds_is_refused(tmp_path: Path, dataset: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A real trainer in another process holds the folder: `rocket train` (with --overwrite,
    too) is refused before it deletes or writes anything; after a kill -9 the folder is free."""
    out = tmp_path / "run"
    holder = _spawn("train_lock", str(out))
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--overwrite"]):
            assert _train_cli(dataset, out, "--steps", "2", *extra) == 2
            assert "is in use by a running `rocket train`" in _one_line_error(capsys)
            assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        _kill(holder)
    assert _train_cli(dataset, out, "--steps", "2") == 0
    assert _steps(out) == ["step_000001", "step_000002"] and _metric_steps(out) == [1, 2]


@pytest.mark.fault("survived")
def test_two_train_processes_at_once_leave_one_whole_run(tmp_path: Path, dataset: Path) -> None:
    """Two fresh `rocket train` into one --out_dir at once: one trains, the other is refused
    in one line; the folder holds that run's checkpoints and every metrics row once."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "rocket_vla.cli", "train", "--dataset", str(dataset),
                               "--out_dir", str(out), *TINY, "--steps", "4", "--seed", str(seed)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    winner = next(seed for seed, (rc, _) in zip((1, 2), results, strict=True) if rc == 0)
    refused = next(err for rc, err in results if rc == 2).strip()
    # refused by the lock, or -- when the first was already done -- as a folder with a run in it
    assert "in use by a running `rocket train`" in refused or "already holds a training run" in refused
    assert refused.count("\n") == 0 and "Traceback" not in refused
    assert _steps(out) == ["step_000003", "step_000004"] and _metric_steps(out) == [1, 2, 3, 4]
    for step in _steps(out):
        saved = ckpt_io.read_config(out / "checkpoints" / step)
        assert saved["train"]["seed"] == winner


# -- 2. config.json under the digest ---------------------------------------------------------------
def _trained(tmp_path: Path, **overrides) -> Path:
    cfg = tiny_config(tmp_path, **{"variant": "baseline", "steps": 2, "save_every": 1, **overrides})
    Trainer(cfg, episodes=make_episodes(n=2, length=6)).fit()
    return Path(cfg.out_dir)


@pytest.mark.fault("refused")
def test_edited_normalisation_number_is_refused_on_resume_and_by_evaluation(tmp_path: Path) -> None:
    run = _trained(tmp_path)
    ckpt = ckpt_io.resolve_checkpoint(run)
    config = ckpt / ckpt_io.CONFIG
    original = config.read_text()
    saved = json.loads(original)
    saved["stats"]["action"]["high"][0] += 0.01  # parses fine; shifts every action
    config.write_text(json.dumps(saved, indent=2))
    resume = tiny_config(tmp_path, variant="baseline", steps=3, save_every=1)
    with pytest.raises(RocketError, match="config.json was changed after it was saved .*normalisation"):
        Trainer(resume, episodes=make_episodes(n=2, length=6), resume=run)
    with pytest.raises(RocketError, match="config.json was changed after it was saved"):
        load_student(run)
    # key order and indentation are not content: the untouched config still loads
    config.write_text(json.dumps(dict(reversed(list(json.loads(original).items())))))
    load_student(run)
    # a config without its digest was written by older code: a resume refuses it
    older = json.loads(original)
    older.pop("config_digest")
    config.write_text(json.dumps(older))
    with pytest.raises(RocketError, match="made by other rocket-vla code .*no digest"):
        Trainer(resume, episodes=make_episodes(n=2, length=6), resume=run)


# -- 3. `latest` naming a missing step ---------------------------------------------------------------
@pytest.mark.fault("refused")
def test_latest_naming_a_missing_step_lists_the_steps_there(tmp_path: Path) -> None:
    run = _trained(tmp_path, steps=3)
    root = run / "checkpoints"
    assert (root / ckpt_io.LATEST).read_text() == "step_000003"
    ckpt_io.shutil.rmtree(root / "step_000003")
    resume = tiny_config(tmp_path, variant="baseline", steps=4, save_every=1)
    message = (r"latest names 'step_000003', which is not a complete checkpoint .* the checkpoints "
               r"there are step_000002 -- pass one of them directly \(e\.g\. --resume or --checkpoint "
               r".*step_000002\)")
    with pytest.raises(RocketError, match=message):
        Trainer(resume, episodes=make_episodes(n=2, length=6), resume=run)
    with pytest.raises(RocketError, match=message):
        load_student(run)
    with pytest.raises(RocketError, match=message):  # `rocket eval --policy checkpoint --checkpoint RUN`
        build_policy("checkpoint", checkpoint=str(run))
    (root / ckpt_io.LATEST).unlink()
    with pytest.raises(RocketError, match="has no latest file .* step_000002"):
        load_student(run)
    # the fix the message names works
    trainer = Trainer(resume, episodes=make_episodes(n=2, length=6), resume=root / "step_000002")
    assert trainer.step == 2 and trainer.fit().step == 4


# -- 4. a learning rate that blows the weights up ---------------------------------------------------
@pytest.mark.fault("refused")
def test_huge_lr_writes_no_checkpoint_of_blown_up_weights(tmp_path: Path) -> None:
    """--lr 1e30: the weights of step 1 are finite (about 1e30) but give a NaN loss; neither
    they nor anything later is written, and the message says there is no good checkpoint."""
    cfg = tiny_config(tmp_path, variant="baseline", steps=4, save_every=1, lr=1e30)
    with pytest.raises(RocketError, match="non-finite at step 2 .*there is no good checkpoint to "
                                          "resume from yet .*lower --lr"):
        Trainer(cfg, episodes=make_episodes(n=2, length=6)).fit()
    assert _steps(tmp_path / "run") == []
    # the last step of a run has no next step: a forward pass on the next batch checks it
    last = tiny_config(tmp_path / "last", variant="baseline", steps=1, save_every=1, lr=1e30)
    with pytest.raises(RocketError, match="loss at the weights of step 1 is not finite .*no good "
                                          "checkpoint"):
        Trainer(last, episodes=make_episodes(n=2, length=6)).fit()
    assert _steps(tmp_path / "last" / "run") == []


@pytest.mark.fault("refused")
def test_growing_lr_names_the_truly_last_good_checkpoint(tmp_path: Path) -> None:
    """The lr grows 1e4, 2e4, ... (a warm-up towards 1e30): the weights of step 1 still give a
    finite loss, those of step 2 do not -- step 1 is the last good checkpoint, step 2 is never
    written, and the weights on disk are finite."""
    cfg = tiny_config(tmp_path, variant="baseline", steps=6, save_every=1, lr=1e30, warmup=10**26,
                      schedule="constant")
    with pytest.raises(RocketError, match=r"non-finite at step 3 .*last good checkpoint \(.*step_000001\)"):
        Trainer(cfg, episodes=make_episodes(n=2, length=6)).fit()
    run = tmp_path / "run"
    assert _steps(run) == ["step_000001"]
    state = read_safetensors(ckpt_io.resolve_checkpoint(run) / ckpt_io.WEIGHTS)
    assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.fault("survived")
def test_checkpoint_written_a_step_late_resumes_exactly(tmp_path: Path) -> None:
    """Checkpoints are written once the next step's loss proved their weights good; what is
    written is still the state of their own step: resuming from it reproduces the run."""
    episodes = make_episodes(n=2, length=8)
    common = dict(variant="rocket", steps=4, save_every=2, keep_last=3, batch_size=4)
    straight = Trainer(tiny_config(tmp_path / "a", **common), episodes=episodes, teacher=ConvTeacher())
    straight.fit()
    mid = tmp_path / "a" / "run" / "checkpoints" / "step_000002"
    assert ckpt_io.load_trainer_state(mid)["step"] == 2
    resumed = Trainer(tiny_config(tmp_path / "b", **common), episodes=episodes, teacher=ConvTeacher(),
                      resume=mid)
    resumed.fit()
    a = straight.accelerator.unwrap_model(straight.model).state_dict()
    b = resumed.accelerator.unwrap_model(resumed.model).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


@pytest.mark.fault("refused")
def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    """Whoever calls save: NaN weights are refused before a temp folder is made."""
    trainer = Trainer(tiny_config(tmp_path, variant="baseline", steps=1), episodes=make_episodes(n=2))
    trainer.fit()
    with torch.no_grad():
        next(trainer.policy.parameters()).fill_(float("nan"))
    with pytest.raises(RocketError, match="weights at step 7 are not finite .*last good checkpoint "
                                          r"\(.*step_000001\)"):
        trainer.save(7)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["latest", "step_000001"]


# -- 5. a full disk during a checkpoint ------------------------------------------------------------
@pytest.mark.fault("refused")
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path: Path, dataset: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A real 1400 KiB tmpfs: one tiny-MiniVLA checkpoint (about 940 KiB) fits, two do not."""
    with small_disk(tmp_path / "disk", 1400) as disk:
        out = disk / "run"
        assert _train_cli(dataset, out, "--steps", "3") == 2
        err = _one_line_error(capsys)
        assert f"the disk holding {out / 'checkpoints'} is full, so the checkpoint of step 2" in err
        assert "free space there or pass another --out_dir" in err
        root = out / "checkpoints"
        assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000001"]  # no temp folder
        ckpt = ckpt_io.resolve_checkpoint(out)
        assert ckpt.name == "step_000001"
        load_student(ckpt)  # digests match: whole
        assert ckpt_io.load_trainer_state(ckpt)["step"] == 1


@pytest.mark.fault("refused")
def test_full_disk_before_any_checkpoint_is_one_sentence(tmp_path: Path, dataset: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A tmpfs of one page: the lock file fits, the first metrics row does not."""
    with small_disk(tmp_path / "disk", 4) as disk:
        assert _train_cli(dataset, disk / "run", "--steps", "2") == 2
        assert f"the disk holding {disk / 'run'} is full, so the run's logs" in _one_line_error(capsys)
        assert not (disk / "run" / "checkpoints").exists()


# -- 6. --out_dir that cannot be a run folder --------------------------------------------------------
@pytest.mark.fault("refused")
@pytest.mark.parametrize("kind", ["file", "below_file", "empty"])
def test_out_dir_that_is_a_file_or_empty_is_refused(tmp_path: Path, dataset: Path, kind: str,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "notes.txt").write_text("keep me")
    out, expected = {"file": ("notes.txt", "notes.txt is an existing file, not a folder"),
                     "below_file": ("notes.txt/run", "lies below notes.txt, which is a file"),
                     "empty": ("", "out_dir is empty; pass --out_dir FOLDER")}[kind]
    assert _train_cli(dataset, out, "--steps", "1") == 2
    assert expected in _one_line_error(capsys)
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    assert (work / "notes.txt").read_text() == "keep me"


@pytest.mark.fault("survived")
def test_relative_run_folder_trains_and_resumes(tmp_path: Path, dataset: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _train_cli(dataset, "runs/rel", "--steps", "2") == 0
    assert _train_cli(dataset, "runs/rel", "--steps", "3", "--resume", "auto") == 0
    run = tmp_path / "runs" / "rel"
    assert _steps(run) == ["step_000002", "step_000003"] and _metric_steps(run) == [1, 2, 3]
    assert ckpt_io.resolve_checkpoint("runs/rel").name == "step_000003"

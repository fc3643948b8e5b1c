"""Faults of evaluation and policy loading: each is refused with one sentence naming the fix.

Real faults only: a model folder whose config.json names code to import, a policy path that
points at a builtin, a broken config.json, shards held by a running process or killed with
SIGKILL mid-write, a shard written by a changed copy of the package, a `rocket train` run
trained further between an evaluation and its resume, a deleted settings file, a misspelt
``--policy_kwargs`` key. Nothing here builds a simulator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from minivla_fixtures import make_episodes, single_thread, tiny_config
from test_faults import SRC, _eval_record, _kill, _other_code, _spawn

from rocket_vla import records
from rocket_vla.cli import main
from rocket_vla.envs.policy import build_policy, check_policy
from rocket_vla.envs.runner import EvalConfig, _check_resume, _record_plan
from rocket_vla.envs.shards import merge_runs
from rocket_vla.errors import RocketError
from rocket_vla.train import Trainer
from rocket_vla.train import checkpoint as ckpt_io

ZEN = "Beautiful is better than ugly"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _train(out: Path, steps: int, resume: bool = False) -> Path:
    """A real tiny MiniVLA `rocket train` run folder, trained (on) to ``steps``."""
    cfg = tiny_config(out, variant="baseline", steps=steps, save_every=2, batch_size=4)
    Trainer(cfg, episodes=make_episodes(n=2, length=6), resume=cfg.out_dir if resume else None).fit()
    return Path(cfg.out_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run shared by the tests that only read it."""
    with single_thread():
        return _train(tmp_path_factory.mktemp("trained"), steps=2)


def _python(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _copy_step(run: Path, dest: Path) -> Path:
    """A copy of the run's checkpoint, as a model folder downloaded from someone else."""
    return Path(shutil.copytree(ckpt_io.resolve_checkpoint(run), dest))


def _eval_args(out: Path, *extra: str) -> list[str]:
    return ["eval", "--suites", "libero_spatial", "--tasks", "0", "--trials", "1", "--quiet",
            "--out_dir", str(out), *extra]


# -- 1. code run from data ----------------------------------------------------------------------
@pytest.mark.fault("refused")
def test_checkpoint_naming_an_import_path_imports_nothing(run: Path, tmp_path: Path) -> None:
    """A model folder whose config.json says ``"policy": "this:nothing"`` (or ``os:getpid``)
    is refused by `rocket eval --policy checkpoint` before anything is imported: no Zen of
    Python printed, ``this`` never in sys.modules, the eval folder left without settings."""
    folders = {}
    for name in ("this:nothing", "os:getpid"):
        folder = _copy_step(run, tmp_path / name.replace(":", "_"))
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "policy": name}))
        folders[name] = folder
    script = (
        "import sys\nfrom rocket_vla.cli import main\n"
        "for ckpt, out in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    print('rc', main(['eval', '--policy', 'checkpoint', '--checkpoint', ckpt, '--out_dir', out,"
        " '--quiet']))\n"
        "print('imported this:', 'this' in sys.modules)\n"
    )
    outs = [tmp_path / f"eval{i}" for i in range(len(folders))]
    proc = _python(script, *(str(x) for pair in zip(folders.values(), outs, strict=True) for x in pair))
    assert proc.stdout.splitlines() == ["rc 2", "rc 2", "imported this: False"], proc.stderr
    assert ZEN not in proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2
    for line, name in zip(errors, folders, strict=True):
        assert f"names policy '{name}', which is not registered; a checkpoint may name only" in line
        assert "minivla" in line and "--policy module:factory" in line
    for out in outs:
        assert not (out / "run_config.json").exists()


@pytest.mark.fault("refused")
def test_command_line_factory_is_checked_before_it_is_called(tmp_path: Path, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``--policy os:getpid`` (a builtin), a callable object and a function imported from
    another module are refused before they are called; a marker file proves no call."""
    out = tmp_path / "eval"
    assert main(_eval_args(out, "--policy", "os:getpid")) == 2
    err = capsys.readouterr().err
    assert "policy factory 'os:getpid' is a builtin_function_or_method, not a class or function" in err
    assert sorted(p.name for p in out.iterdir()) == [records.LOCK_FILE]

    marker = tmp_path / "called"
    (tmp_path / "sneaky.py").write_text(
        "from pathlib import Path\nfrom subprocess import run\n\n\n"
        "class _Writer:\n    def __call__(self, **kwargs):\n"
        f"        Path({str(marker)!r}).write_text('called')\n\n\nmake = _Writer()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RocketError, match="'sneaky:make' is a _Writer, not a class or function"):
        build_policy("sneaky:make")
    with pytest.raises(RocketError, match=r"'sneaky:run' is subprocess:run, defined in another module"):
        check_policy("sneaky:run", {})
    with pytest.raises(RocketError, match="'sneaky:' is not an import path"):
        build_policy("sneaky:")
    assert not marker.exists()


def test_a_trusted_module_factory_still_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--policy module:Factory`` (a class defined in that module) still works, its kwargs checked."""
    (tmp_path / "goodpolicy.py").write_text(
        "import numpy as np\n\n\nclass Still:\n"
        "    def __init__(self, chunk=4):\n        self.chunk = chunk\n\n"
        "    def reset(self, task):\n        pass\n\n"
        "    def act(self, obs):\n        return np.zeros((self.chunk, 7), np.float32)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check_policy("goodpolicy:Still", {"chunk": 2}) == {"chunk": 2}
    assert build_policy("goodpolicy:Still", chunk=2).act({}).shape == (2, 7)
    with pytest.raises(RocketError, match="'goodpolicy:Still' takes no argument 'chunks'; its "
                                          "--policy_kwargs are chunk"):
        build_policy("goodpolicy:Still", chunks=2)


# -- 2. a broken config.json is named as such ---------------------------------------------------------
@pytest.mark.fault("refused")
def test_broken_json_in_checkpoint_config_is_named(run: Path, tmp_path: Path) -> None:
    folder = _copy_step(run, tmp_path / "step")
    (folder / "config.json").write_text('{"policy": "minivla",')  # cut short
    with pytest.raises(RocketError, match=r"config.json is not valid JSON \(.* at line 1 column \d+\); the "
                                          "checkpoint is damaged -- copy that file again"):
        build_policy("checkpoint", checkpoint=str(folder))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "rocket_policy.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(RocketError, match="rocket_policy.json cannot be read as JSON"):
        build_policy("checkpoint", checkpoint=str(bare))


# -- 3. merging shards that are running, unfinished or made by other code ---------------------------
def _shard(root: Path, k: int, trials: list[int], planned: int = 2) -> Path:
    """A shard folder as `rocket eval --shard K/2` writes it, with ``trials`` recorded."""
    cfg = EvalConfig(out_dir=str(root), tasks=[0], trials=4, shard=(k, 2), allow_unpinned_sim=True)
    root.mkdir(parents=True)
    _check_resume(cfg, root)
    _record_plan(root, planned)
    with records.open_for_append(root / "episodes.jsonl") as fh:
        for t in trials:
            records.append(fh, _eval_record(t, t % 2 == 0))
    return root


@pytest.mark.fault("refused")
def test_merge_refuses_a_shard_that_is_still_running(tmp_path: Path) -> None:
    """A real process holds shard 1's folder lock (a running `rocket eval`): refused, nothing
    written; once it is gone the merge runs and keeps the shards' code version."""
    shards = [_shard(tmp_path / "s0", 0, [0, 1]), _shard(tmp_path / "s1", 1, [2, 3])]
    out = tmp_path / "merged"
    holder = _spawn("lock", str(shards[1]))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RocketError, match=r"s1 is in use by a running `rocket eval` \(pid \d+\); wait "
                                              "for it to finish, then merge"):
            merge_runs(shards, out)
        assert not out.exists()
    finally:
        _kill(holder)
    summary = merge_runs(shards, out)
    assert summary["suites"][0]["episodes"] == 4
    merged = json.loads((out / "run_config.json").read_text())
    shard = json.loads((shards[0] / "run_config.json").read_text())
    assert merged["code_version"] == shard["code_version"] and merged["planned_episodes"] == 4


@pytest.mark.fault("refused")
def test_merge_refuses_a_shard_killed_before_it_finished(tmp_path: Path) -> None:
    """Shard 0 is killed (SIGKILL) after one of its two episodes, mid-way through writing
    the next line: the merge names the shard and the missing episode count."""
    shards = [_shard(tmp_path / "s0", 0, []), _shard(tmp_path / "s1", 1, [2, 3])]
    writer = _spawn("torn", str(shards[0] / "episodes.jsonl"))  # trial 0, then half of a line
    assert writer.stdout.readline().strip() == "torn"
    _kill(writer)
    with pytest.raises(RocketError, match=r"s0 is missing 1 of its 2 planned episodes \(it was stopped "
                                          r"before it finished\); resume that shard"):
        merge_runs(shards, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.fault("refused")
def test_merge_refuses_shards_of_other_code(tmp_path: Path) -> None:
    """Shard 1 written by a changed copy of the package (a real subprocess) is not merged with
    shard 0 written by this code."""
    s0 = _shard(tmp_path / "s0", 0, [0, 1])
    s1 = tmp_path / "s1"
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from rocket_vla.envs.runner import EvalConfig, _check_resume, _record_plan\n"
        "out = Path(sys.argv[1]); out.mkdir()\n"
        "_check_resume(EvalConfig(out_dir=str(out), tasks=[0], trials=4, shard=(1, 2),"
        " allow_unpinned_sim=True), out)\n_record_plan(out, 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(_other_code(tmp_path))}
    subprocess.run([sys.executable, "-c", script, str(s1)], env=env, check=True, capture_output=True,
                   cwd=tmp_path, timeout=300)
    with pytest.raises(RocketError, match=r"s1 was evaluated by other rocket-vla code than .*s0 \(source "):
        merge_runs([s0, s1], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


# -- 4. resuming an evaluation after the run trained further ------------------------------------------
@pytest.mark.fault("refused")
def test_eval_resume_after_the_run_trained_further_is_refused(tmp_path: Path) -> None:
    """An evaluation of RUN at step 2 holds one episode; RUN then trains to step 4. Resuming
    `rocket eval --checkpoint RUN` is refused before LIBERO is imported (no task, init state
    or environment is loaded), naming both steps and the fix; the step-2 folder resumes."""
    run = _train(tmp_path / "train", steps=2)
    out = tmp_path / "eval"
    out.mkdir()
    cfg = EvalConfig(out_dir=str(out), policy="checkpoint", tasks=[0], trials=2)
    first = replace(cfg, policy_kwargs=check_policy("checkpoint", {"checkpoint": str(run)}))
    _check_resume(first, out)  # what `rocket eval` records before its first episode
    with records.open_for_append(out / "episodes.jsonl") as fh:
        records.append(fh, _eval_record(0, True))
    recorded = (out / "run_config.json").read_text()
    assert json.loads(recorded)["protocol"]["checkpoint"]["step"] == 2
    _train(tmp_path / "train", steps=4, resume=True)
    assert ckpt_io.resolve_checkpoint(run).name == "step_000004"

    script = (
        "import sys\nfrom rocket_vla.cli import main\n"
        "print(main(sys.argv[1:]), 'libero' in sys.modules)\n"
    )
    proc = _python(script, *_eval_args(out, "--trials", "2", "--policy", "checkpoint", "--checkpoint",
                                       str(run)))
    assert proc.stdout.strip() == "2 False", proc.stderr  # no LIBERO task, init state or env loaded
    step2 = run.resolve() / "checkpoints" / "step_000002"
    error = proc.stderr.strip().splitlines()[-1]
    assert "holds episodes of checkpoint step 2 (weights " in error
    assert "but the checkpoint given now is step 4 (weights " in error
    assert f"pass --checkpoint {step2} to resume with the same weights, or a new --out_dir folder" in error
    assert (out / "run_config.json").read_text() == recorded
    # the named step resumes (the check passes; the simulator part is not run here)
    again = replace(cfg, policy_kwargs=check_policy("checkpoint", {"checkpoint": str(step2)}))
    _check_resume(again, out)
    assert json.loads((out / "run_config.json").read_text())["protocol"] == json.loads(recorded)["protocol"]


# -- 5. a run folder whose settings file was deleted ---------------------------------------------------
@pytest.mark.fault("refused")
@pytest.mark.parametrize("command", ["eval", "collect"])
def test_records_without_their_settings_file_are_refused(tmp_path: Path, command: str) -> None:
    """An eval or collect folder holding episode records whose settings file was deleted is
    not treated as fresh: refused, and the records stay as they were."""
    from rocket_vla.envs.collect import CollectConfig, run_collection
    from rocket_vla.envs.runner import run_evaluation

    out = tmp_path / command
    out.mkdir()
    if command == "eval":
        settings, log = out / "run_config.json", out / "episodes.jsonl"
        cfg = EvalConfig(out_dir=str(out), trials=1, allow_unpinned_sim=True)
        _check_resume(cfg, out)
        record = _eval_record(0, True)
    else:
        settings, log = out / "collect_config.json", out / "attempts.jsonl"
        settings.write_text(json.dumps(asdict(CollectConfig(out_dir=str(out)))))
        record = {"suite": "libero_spatial", "task_id": 0, "init": 0, "variation": 0, "success": True}
    with records.open_for_append(log) as fh:
        records.append(fh, record)
    before = log.read_bytes()
    settings.unlink()
    pattern = f"holds episode records \\({log.name}\\) but no {settings.name}, so nothing says which " \
              f"settings, code and simulator made them; restore {settings.name} or pass a new --out_dir"
    with pytest.raises(RocketError, match=pattern):
        if command == "eval":
            run_evaluation(cfg, progress=False)
        else:
            run_collection(CollectConfig(out_dir=str(out), allow_unpinned_sim=True), progress=False)
    assert log.read_bytes() == before and not settings.exists()


# -- 6. a misspelt --policy_kwargs key ----------------------------------------------------------------
@pytest.mark.fault("refused")
def test_unknown_policy_kwargs_key_is_refused(run: Path, tmp_path: Path, capsys) -> None:
    """``--policy checkpoint --policy_kwargs.exectue 4`` is refused naming the keys the
    checkpoint's policy takes, before the eval folder is written; the right key builds."""
    out = tmp_path / "eval"
    assert main(_eval_args(out, "--policy", "checkpoint", "--checkpoint", str(run),
                           "--policy_kwargs.exectue", "4")) == 2
    err = capsys.readouterr().err
    assert "policy 'minivla' takes no argument 'exectue'; its --policy_kwargs are device, execute" in err
    assert not (out / "run_config.json").exists()
    assert build_policy("checkpoint", checkpoint=str(run), execute=2).execute == 2

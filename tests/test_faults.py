"""Fault injection: every fault is refused with one clear sentence, or survived with nothing lost.

One test (or a few) per item of issue 15. Faults are real: processes killed with SIGKILL,
bytes flipped in real files (HDF5, safetensors, pickles, caches), two processes at once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from minivla_fixtures import ConvTeacher, make_episodes, single_thread, tiny_config

from rocket_vla import records
from rocket_vla.cli import main
from rocket_vla.errors import RocketError
from rocket_vla.train import Trainer
from rocket_vla.train import checkpoint as ckpt_io
from rocket_vla.weights import read_safetensors

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _spawn(*args: str, pythonpath: Path = SRC) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{pythonpath}{os.pathsep}{TESTS}"}
    return subprocess.Popen([sys.executable, "-m", "fault_helpers", *args], cwd=TESTS, env=env,
                            stdout=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the subprocess")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _write_dataset(folder: Path, episodes) -> Path:
    """Fake episodes as real LIBERO-layout HDF5 files (what `rocket collect` writes)."""
    from rocket_vla.data.episodes import Episode, EpisodeWriter

    writer = EpisodeWriter(folder, file_attrs={"problem_name": "fake"})
    for i, ep in enumerate(episodes):
        t = len(ep.actions)
        writer.write(f"ep{i:02d}", Episode(ep.actions, dict(ep.obs), ep.language,
                                           np.arange(t, dtype=np.int64), {"success": True}))
    return folder


def _eval_record(trial: int, success: bool, task_id: int = 0) -> dict:
    return {"suite": "libero_spatial", "task_id": task_id, "task": "t", "trial": trial,
            "success": success, "steps": 10, "wall_s": 1.0}


# -- 1. evaluation records --------------------------------------------------------------------
@pytest.mark.fault("refused")
def test_second_eval_into_a_busy_folder_is_refused(tmp_path: Path) -> None:
    """A real process holds the run-folder lock; `run_evaluation` into the same folder is
    refused before it plans any episode, and nothing in the folder changes."""
    from rocket_vla.envs.runner import EvalConfig, run_evaluation

    out = tmp_path / "eval"
    holder = _spawn("lock", str(out))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RocketError, match="in use by a running `rocket eval`"):
            run_evaluation(EvalConfig(out_dir=str(out), trials=1), progress=False)
        assert sorted(p.name for p in out.iterdir()) == [records.LOCK_FILE]
    finally:
        _kill(holder)
    # the lock died with its process (kill -9): the folder is usable again
    with records.FolderLock(out, "rocket eval"):
        pass


@pytest.mark.fault("survived")
@pytest.mark.libero
def test_two_real_evals_into_one_folder_record_each_trial_once(tmp_path: Path) -> None:
    """Two `rocket eval` processes started together on one --out_dir: one runs, the other is
    refused with one line, and every trial is recorded exactly once."""
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "rocket_vla.cli", "eval", "--suites", "libero_spatial", "--tasks", "0",
           "--trials", "2", "--max_steps", "5", "--num_wait", "1", "--image_size", "32", "--out_dir",
           str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "in use by a running `rocket eval`" in refused.strip().splitlines()[-1]
    from rocket_vla.envs.runner import read_results

    assert sorted(r["trial"] for r in read_results(out / "episodes.jsonl")) == [0, 1]
    assert json.loads((out / "summary.json").read_text())["suites"][0]["episodes"] == 2


@pytest.mark.fault("survived")
def test_summary_counts_each_trial_once() -> None:
    """Records written twice (two old runs into one folder) count once per trial."""
    from rocket_vla.envs.runner import summarize

    recs = [_eval_record(0, True), _eval_record(1, False), _eval_record(2, True)]
    doubled = recs + [_eval_record(0, True), _eval_record(1, False), _eval_record(2, True)]
    summary = summarize(doubled)
    assert summary["suites"] == [{"suite": "libero_spatial", "episodes": 3, "successes": 2,
                                  "success_rate": 2 / 3}]
    assert summary == summarize(recs)


@pytest.mark.fault("survived")
def test_torn_last_line_is_cut_and_the_next_record_kept(tmp_path: Path) -> None:
    """A writer killed mid-line leaves a torn tail; the next append must not be glued onto it."""
    from rocket_vla.envs.runner import read_results

    path = tmp_path / "episodes.jsonl"
    writer = _spawn("torn", str(path))
    assert writer.stdout.readline().strip() == "torn"
    _kill(writer)
    assert not path.read_bytes().endswith(b"\n")
    assert [r["trial"] for r in read_results(path)] == [0]  # the torn line is skipped
    with records.open_for_append(path) as fh:
        records.append(fh, _eval_record(1, False))
    assert [r["trial"] for r in read_results(path)] == [0, 1]
    assert path.read_text().count("\n") == 2


# -- 2. damaged teacher cache, non-finite losses, nan flags ------------------------------------
def _small_cache(tmp_path: Path, episodes, fingerprint: str = "fake"):
    from rocket_vla.teachers import TeacherInput, VGGTConfig, VGGTTeacher
    from rocket_vla.teachers.fill import cache_episodes, episode_items

    teacher = VGGTTeacher(VGGTConfig.tiny(), TeacherInput(size=(28, 28)), seed=0)
    cache, _ = cache_episodes(teacher, episode_items(episodes, CAMERAS), tmp_path / "cache",
                              layers=[2, 3, 4], cameras=CAMERAS, dataset_fingerprint=fingerprint,
                              frame_size=(32, 32), progress=False)
    return teacher, cache


def _data_offset(path: Path) -> int:
    """First byte of the tensor data in a safetensors file (after the 8-byte length + header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


@pytest.mark.fault("refused")
def test_flipped_byte_in_a_cache_entry_stops_training_with_a_clear_message(tmp_path: Path) -> None:
    episodes = make_episodes(n=2, length=6)
    _, cache = _small_cache(tmp_path, episodes)
    _flip(cache.path("1"), _data_offset(cache.path("1")) + 5)
    cfg = tiny_config(tmp_path, steps=3, teacher_cache=str(cache.root))
    with pytest.raises(RocketError, match="episode '1' is corrupt .*rerun `rocket cache-teacher`"):
        Trainer(cfg, episodes=episodes).fit()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cache_reads_checksum_once_per_process(tmp_path: Path) -> None:
    """The first read of a tensor is checked; a flip after that first read (same file, same
    process) is not re-checked unless asked -- and a fresh process catches it."""
    from rocket_vla.teachers.cache import CacheEntryError, FeatureCache

    episodes = make_episodes(n=1, length=4)
    _, cache = _small_cache(tmp_path, episodes)
    reader = FeatureCache.open(cache.root)
    first = reader.read("0", [0, 1])
    assert reader._entry(reader.path("0"), "0").verified == {f"{s}/{c}" for s in (0, 1) for c in CAMERAS}
    # a process that has not read the entry yet checks it
    path = cache.path("0")
    stat = path.stat()
    _flip(path, _data_offset(path) + 3)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CacheEntryError, match="corrupt"):
        FeatureCache.open(cache.root).read("0", [0])
    with pytest.raises(CacheEntryError, match="corrupt"):
        reader.read("0", [0], verify=True)
    assert torch.equal(reader.read("0", [1])[0], first[0][1:2])  # untouched step still reads


@pytest.mark.fault("survived")
def test_cache_teacher_rerun_recomputes_a_damaged_entry(tmp_path: Path) -> None:
    from rocket_vla.teachers.fill import cache_episodes, episode_items

    episodes = make_episodes(n=2, length=4)
    teacher, cache = _small_cache(tmp_path, episodes)
    good = cache.path("0").read_bytes()
    _flip(cache.path("0"), _data_offset(cache.path("0")) + 11)
    _, report = cache_episodes(teacher, episode_items(episodes, CAMERAS), cache.root,
                               layers=[2, 3, 4], cameras=CAMERAS, dataset_fingerprint="fake",
                               frame_size=(32, 32), progress=False)
    assert report.repaired == {"0": "corrupt (checksum mismatch)"} and report.skipped == ["1"]
    assert cache.path("0").read_bytes() == good


class NanAfter:
    """A real teacher whose features turn to NaN from its ``n``-th call on (an fp16 overflow,
    say): the fault the loop must catch before it reaches the weights."""

    def __init__(self, n: int) -> None:
        self.teacher = ConvTeacher()
        self.dim, self.num_layers, self.n, self.calls = 24, 4, n, 0

    def resolve_layers(self, layers):
        return self.teacher.resolve_layers(layers)

    def features(self, frames, layers):
        self.calls += 1
        out = self.teacher.features(frames, layers)
        return [f * float("nan") for f in out] if self.calls >= self.n else out


@pytest.mark.fault("refused")
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    episodes = make_episodes(n=2, length=8)
    cfg = tiny_config(tmp_path, steps=6, save_every=2)
    with pytest.raises(RocketError, match=r"non-finite at step 4 .*last good checkpoint \(.*step_000002\)"):
        Trainer(cfg, episodes=episodes, teacher=NanAfter(4)).fit()
    ckpt = ckpt_io.resolve_checkpoint(cfg.out_dir)
    assert ckpt.name == "step_000002"
    assert sorted(p.name for p in (ckpt.parent).glob("step_*")) == ["step_000002"]
    state = read_safetensors(ckpt / ckpt_io.WEIGHTS)
    assert all(torch.isfinite(v).all() for v in state.values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # resuming with a healthy teacher continues from the good checkpoint
    resumed = Trainer(cfg, episodes=episodes, teacher=ConvTeacher(), resume=cfg.out_dir).fit()
    assert resumed.step == 6 and all(math.isfinite(r["total"]) for r in resumed.history)


@pytest.mark.parametrize("flag,value", [("--align_weight", "nan"), ("--lr", "inf"),
                                        ("--grad_clip", "-1"), ("--steps", "0"),
                                        ("--weight_decay", "nan"), ("--seed", "-1"),
                                        ("--lr_floor", "1.5")])
@pytest.mark.fault("refused")
def test_bad_numeric_train_flags_are_refused(tmp_path: Path, capsys, flag: str, value: str) -> None:
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path), "--out_dir", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rocket train: error:") and err.count("\n") == 1
    assert not out.exists()


# -- 3. a cache built for another dataset ---------------------------------------------------------
@pytest.mark.fault("refused")
def test_cache_of_another_dataset_is_refused(tmp_path: Path) -> None:
    from rocket_vla.data.episodes import list_episode_files
    from rocket_vla.teachers.cache import fingerprint_files

    data_a = _write_dataset(tmp_path / "a", make_episodes(n=2, length=6, seed=0))
    data_b = _write_dataset(tmp_path / "b", make_episodes(n=2, length=6, seed=1))
    _small_cache(tmp_path, make_episodes(n=2, length=6, seed=0),
                 fingerprint=fingerprint_files(list_episode_files(data_a)))
    cfg = tiny_config(tmp_path, dataset=str(data_b), steps=2, teacher_cache=str(tmp_path / "cache"))
    with pytest.raises(RocketError, match="built from another dataset"):
        Trainer(cfg)
    Trainer(tiny_config(tmp_path, dataset=str(data_a), steps=2, teacher_cache=str(tmp_path / "cache")))


# -- 4. a fresh run into a folder with checkpoints --------------------------------------------------
@pytest.mark.fault("refused")
def test_fresh_run_into_a_run_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    episodes = make_episodes(n=2, length=6)
    cfg = tiny_config(tmp_path, variant="baseline", steps=2, save_every=1)
    Trainer(cfg, episodes=episodes).fit()
    ckpts = tmp_path / "run" / "checkpoints"
    before = {p.name: ckpt_io.file_digest(p / ckpt_io.WEIGHTS) for p in ckpts.glob("step_*")}
    with pytest.raises(RocketError, match="already holds a training run .*--overwrite"):
        Trainer(tiny_config(tmp_path, variant="baseline", steps=2, seed=1), episodes=episodes)
    assert {p.name: ckpt_io.file_digest(p / ckpt_io.WEIGHTS) for p in ckpts.glob("step_*")} == before
    new = tiny_config(tmp_path, variant="baseline", steps=1, seed=1, overwrite=True)
    Trainer(new, episodes=episodes).fit()
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_000001"]
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1]


# -- 5. collect resumed with other settings --------------------------------------------------------
@pytest.mark.fault("refused")
def test_collect_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    """A folder collected at 64 px refuses a 32 px resume before any simulator work, and
    keeps its recorded settings."""
    from rocket_vla.envs.collect import CollectConfig, run_collection
    from rocket_vla.fingerprint import code_version

    out = tmp_path / "demos"
    out.mkdir()
    first = CollectConfig(out_dir=str(out), image_size=64)
    saved = json.dumps({**asdict(first), "code_version": code_version()})
    (out / "collect_config.json").write_text(saved)
    with pytest.raises(RocketError, match="different image_size; collect into a new --out_dir"):
        run_collection(CollectConfig(out_dir=str(out), image_size=32), progress=False)
    assert (out / "collect_config.json").read_text() == saved


@pytest.mark.fault("refused")
@pytest.mark.libero
def test_collect_resume_with_other_settings_is_refused_after_a_real_collection(tmp_path: Path) -> None:
    from rocket_vla.envs.collect import CollectConfig, run_collection

    out = tmp_path / "demos"
    run_collection(CollectConfig(out_dir=str(out), tasks=["0"], init_states=1, image_size=32,
                                 max_steps=3, num_wait=1, after_success=0), progress=False)
    attempts = (out / "attempts.jsonl").read_text()
    with pytest.raises(RocketError, match="different image_size"):
        run_collection(CollectConfig(out_dir=str(out), tasks=["0"], init_states=2, image_size=64,
                                     max_steps=3, num_wait=1, after_success=0), progress=False)
    assert (out / "attempts.jsonl").read_text() == attempts


# -- 6. damaged inputs, bad flags, killed fills, orphaned workers -----------------------------------
def _chunk_offset(path: Path, dataset: str) -> int:
    import h5py

    with h5py.File(path, "r") as h5:
        info = h5[dataset].id.get_chunk_info(0)
    return info.byte_offset + info.size // 2


@pytest.mark.fault("refused")
@pytest.mark.parametrize("dataset", ["data/demo_0/actions", "data/demo_0/obs/agentview_rgb"])
def test_flipped_byte_in_a_dataset_is_refused(tmp_path: Path, dataset: str) -> None:
    """Actions (plain) and images (LZF-compressed) carry HDF5 checksums: a flipped byte in
    either is refused by the reader instead of being trained on."""
    from rocket_vla.data.episodes import read_episodes

    folder = _write_dataset(tmp_path / "data", make_episodes(n=1, length=6))
    path = next(folder.glob("*.hdf5"))
    assert len(read_episodes(folder)) == 1
    _flip(path, _chunk_offset(path, dataset))
    with pytest.raises(RocketError, match=r"data/demo_0 cannot be read .*damaged -- re-collect"):
        read_episodes(folder)


@pytest.mark.fault("refused")
def test_damaged_compressed_chunk_of_an_unchecksummed_file_is_one_sentence(tmp_path: Path) -> None:
    """Files without checksums (official LIBERO files, older collections): a compressed image
    chunk that no longer decompresses is reported, not raised as h5py's OSError."""
    import h5py

    from rocket_vla.data.episodes import read_episodes

    path = tmp_path / "official_demo.hdf5"
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[:, 5:11, 5:11] = 200
    with h5py.File(path, "w") as h5:
        demo = h5.create_group("data").create_group("demo_0")
        demo.create_dataset("actions", data=np.zeros((4, 7)))
        demo.create_group("obs").create_dataset("agentview_rgb", data=images, compression="lzf",
                                                chunks=(1, 32, 32, 3))
    assert len(read_episodes(path)) == 1
    with h5py.File(path, "r") as h5:
        info = h5["data/demo_0/obs/agentview_rgb"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[info.byte_offset:info.byte_offset + info.size] = b"\xff" * info.size
    path.write_bytes(bytes(data))
    with pytest.raises(RocketError, match="data/demo_0 cannot be read .*damaged -- re-collect"):
        read_episodes(path)


def _trained(tmp_path: Path) -> tuple[Path, list]:
    episodes = make_episodes(n=2, length=6)
    cfg = tiny_config(tmp_path, variant="baseline", steps=2, save_every=1)
    Trainer(cfg, episodes=episodes).fit()
    return ckpt_io.resolve_checkpoint(cfg.out_dir), episodes


@pytest.mark.fault("refused")
def test_damaged_checkpoint_files_are_refused_on_resume(tmp_path: Path) -> None:
    ckpt, episodes = _trained(tmp_path)
    cfg = tiny_config(tmp_path, variant="baseline", steps=3, save_every=1)
    weights, state, config = (ckpt / ckpt_io.WEIGHTS, ckpt / ckpt_io.STATE, ckpt / ckpt_io.CONFIG)
    backup = {p: p.read_bytes() for p in (weights, state, config)}
    # a flipped bit in the weights (parses fine, wrong numbers)
    _flip(weights, _data_offset(weights) + 17)
    with pytest.raises(RocketError, match="model.safetensors is damaged"):
        Trainer(cfg, episodes=episodes, resume=cfg.out_dir)
    weights.write_bytes(backup[weights])
    # a truncated trainer state
    state.write_bytes(backup[state][: len(backup[state]) // 2])
    with pytest.raises(RocketError, match="trainer_state.pt is damaged"):
        Trainer(cfg, episodes=episodes, resume=cfg.out_dir)
    # ... also without a recorded digest (an older checkpoint): torch.load's error is wrapped,
    # and a resume refuses such a checkpoint as made by other code
    cfg_data = json.loads(backup[config])
    cfg_data.pop("digests")
    cfg_data.pop("config_digest")
    config.write_text(json.dumps(cfg_data))
    with pytest.raises(RocketError, match="trainer_state.pt is truncated or damaged"):
        ckpt_io.load_trainer_state(ckpt)
    with pytest.raises(RocketError, match="made by other rocket-vla code"):
        Trainer(cfg, episodes=episodes, resume=cfg.out_dir)
    # garbage weights and config
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(RocketError, match="not a readable safetensors file"):
        ckpt_io.load_weights(torch.nn.Linear(1, 1), ckpt)
    config.write_bytes(b"{not json")
    with pytest.raises(RocketError, match="config.json .*damaged"):
        Trainer(cfg, episodes=episodes, resume=cfg.out_dir)


@pytest.mark.fault("refused")
def test_damaged_checkpoint_is_refused_by_evaluation_loader(tmp_path: Path) -> None:
    from rocket_vla.policies.student import load_student

    ckpt, _ = _trained(tmp_path)
    load_student(ckpt)
    _flip(ckpt / ckpt_io.WEIGHTS, _data_offset(ckpt / ckpt_io.WEIGHTS) + 9)
    with pytest.raises(RocketError, match="model.safetensors is damaged"):
        load_student(ckpt)


@pytest.mark.fault("refused")
def test_broken_teacher_config_json_is_one_sentence(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from rocket_vla.teachers.hf import HFTeacher

    model = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=28, patch_size=14))
    model.save_pretrained(tmp_path)
    HFTeacher.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "dinov2", "hidden_size": ')
    with pytest.raises(RocketError, match="config.json cannot be read .*re-download"):
        HFTeacher.from_pretrained(tmp_path)


@pytest.mark.fault("refused")
def test_bad_numeric_eval_and_collect_settings_are_refused() -> None:
    from rocket_vla.demo.config import DemoConfig
    from rocket_vla.envs.collect import CollectConfig
    from rocket_vla.envs.runner import EvalConfig

    with pytest.raises(RocketError, match="--max_steps must be >= 1"):
        EvalConfig(out_dir="x", max_steps=0)
    with pytest.raises(RocketError, match="--num_wait must be >= 0, got -3"):
        EvalConfig(out_dir="x", num_wait=-3)
    with pytest.raises(RocketError, match="--variation_xy must be a finite value"):
        CollectConfig(out_dir="x", variation_xy=float("nan"))
    with pytest.raises(RocketError, match="--num_wait must be >= 0"):
        CollectConfig(out_dir="x", num_wait=-1)
    with pytest.raises(RocketError, match="lr must be a positive finite"):
        DemoConfig.preset("smoke", train={"lr": float("nan")})


@pytest.mark.fault("survived")
def test_temp_files_of_a_killed_cache_fill_are_removed(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    fill = _spawn("fill", str(cache_dir), "40")
    try:
        _wait_for(lambda: any((cache_dir / "episodes").glob(".*.tmp")) if (cache_dir / "episodes").is_dir()
                  else False, timeout=120)
    finally:
        _kill(fill)
    assert list((cache_dir / "episodes").glob(".*.tmp"))
    from rocket_vla.teachers.cache import FeatureCache

    spec = FeatureCache.open(cache_dir).spec
    FeatureCache.create(cache_dir, spec)  # what the next `rocket cache-teacher` run does first
    assert not list((cache_dir / "episodes").glob(".*.tmp"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.fault("survived")
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    parent = _spawn("parallel", str(tmp_path))
    try:
        _wait_for(lambda: len(list(tmp_path.glob("worker-*"))) == 2, timeout=120)
    finally:
        _kill(parent)
    pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
    _wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=10)


# -- code versions: a resumable folder made by other code is refused ------------------------------
def _other_code(tmp_path: Path) -> Path:
    """A copy of the installed package with one source line changed (not a git checkout)."""
    root = tmp_path / "other_src"
    shutil.copytree(SRC / "rocket_vla", root / "rocket_vla",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with (root / "rocket_vla" / "errors.py").open("a") as fh:
        fh.write("\n# changed\n")
    return root


def test_code_version_works_from_a_copy_and_changes_with_the_source(tmp_path: Path) -> None:
    from rocket_vla.fingerprint import code_version

    other = _other_code(tmp_path)
    script = "import json; from rocket_vla.fingerprint import code_version; print(json.dumps(code_version()))"
    env = {**os.environ, "PYTHONPATH": str(other)}
    theirs = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                       text=True, check=True, cwd=tmp_path).stdout)
    ours = code_version()
    assert theirs["version"] == ours["version"] and theirs["git"] is None
    assert theirs["source"] != ours["source"]
    (other / "rocket_vla" / "errors.py").write_bytes((SRC / "rocket_vla" / "errors.py").read_bytes())
    same = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                     text=True, check=True, cwd=tmp_path).stdout)
    assert same["source"] == ours["source"]


@pytest.mark.fault("refused")
def test_resume_of_a_run_made_by_other_code_is_refused(tmp_path: Path) -> None:
    """A checkpoint written by a changed copy of the package (a real subprocess) cannot be
    resumed by this code; eval, cache and demo folders refuse the same way."""
    data = _write_dataset(tmp_path / "data", make_episodes(n=2, length=6))
    cfg = tiny_config(tmp_path, dataset=str(data), variant="baseline", steps=1, batch_size=4)
    script = (
        "import json, sys, torch; torch.set_num_threads(1)\n"
        "from rocket_vla.train.config import TrainConfig\nfrom rocket_vla.train import Trainer\n"
        "Trainer(TrainConfig.from_dict(json.loads(sys.argv[1]))).fit()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(_other_code(tmp_path))}
    subprocess.run([sys.executable, "-c", script, json.dumps(cfg.to_dict())], env=env, check=True,
                   cwd=tmp_path, capture_output=True)
    assert ckpt_io.resolve_checkpoint(cfg.out_dir).name == "step_000001"
    cfg.steps = 2
    with pytest.raises(RocketError, match="made by other rocket-vla code .*source"):
        Trainer(cfg, resume=cfg.out_dir)


@pytest.mark.fault("refused")
def test_eval_and_cache_folders_made_by_other_code_are_refused(tmp_path: Path) -> None:
    from rocket_vla.envs.runner import EvalConfig, _check_resume
    from rocket_vla.teachers.cache import FeatureCache

    out = tmp_path / "eval"
    out.mkdir()
    cfg = EvalConfig(out_dir=str(out), trials=1)
    _check_resume(cfg, out)  # records settings and code
    _check_resume(cfg, out)  # same code: resumes
    saved = json.loads((out / "run_config.json").read_text())
    saved["code_version"]["source"] = "0" * 24
    (out / "run_config.json").write_text(json.dumps(saved))
    with pytest.raises(RocketError, match="made by other rocket-vla code.*use a new --out_dir"):
        _check_resume(cfg, out)

    _, cache = _small_cache(tmp_path, make_episodes(n=1, length=3))
    manifest = json.loads((cache.root / "manifest.json").read_text())
    manifest["code_version"]["version"] = "0.0.0"
    (cache.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RocketError, match="teacher cache .* other rocket-vla code.*--overwrite"):
        FeatureCache.create(cache.root, cache.spec)
    FeatureCache.create(cache.root, cache.spec, overwrite=True)
    assert FeatureCache.open(cache.root).episodes() == []


# -- 7. the demo: a run folder made by other code -----------------------------------------------
@pytest.mark.fault("refused")
def test_demo_folder_and_dataset_cache_are_keyed_by_code(tmp_path: Path) -> None:
    from rocket_vla.demo.config import DemoConfig
    from rocket_vla.demo.run import check_resumable, run_identity
    from rocket_vla.pipeline.data import dataset_dirs

    run = tmp_path / "run"
    run.mkdir()
    cfg = DemoConfig.preset("smoke", out_dir=str(run), cache_dir=str(tmp_path / "cache"))
    identity = run_identity(cfg)
    assert identity["code"]["source"]
    (run / "demo_config.json").write_text(json.dumps({**identity, "code": {"version": "0.1.0",
                                                                          "source": "older"}}))
    (run / "train").mkdir()
    with pytest.raises(RocketError, match=r"other settings or code \(rocket-vla code\).*--overwrite"):
        check_resumable(run, cfg, identity)
    check_resumable(run, DemoConfig.preset("smoke", out_dir=str(run), overwrite=True), identity)
    assert not (run / "train").exists() and not (run / "demo_config.json").exists()
    key = str(dataset_dirs(cfg.data, cfg.cache_dir)[0])
    from rocket_vla import fingerprint

    fingerprint.source_hash.cache_clear()
    assert str(dataset_dirs(cfg.data, cfg.cache_dir)[0]) == key  # stable for the same code


@pytest.mark.fault("refused")
def test_demo_folder_refuses_other_demonstrations(tmp_path: Path) -> None:
    from rocket_vla.demo.run import DATA_FILE, check_data

    run = tmp_path / "run"
    run.mkdir()
    train = _write_dataset(tmp_path / "data" / "train", make_episodes(n=1, length=4, seed=0))
    heldout = _write_dataset(tmp_path / "data" / "heldout", make_episodes(n=1, length=4, seed=1))
    check_data(run, train, heldout)
    recorded = (run / DATA_FILE).read_text()
    check_data(run, train, heldout)  # same demonstrations: resumes
    _write_dataset(heldout, make_episodes(n=1, length=4, seed=2))  # re-collected differently
    with pytest.raises(RocketError, match="made from other demonstrations"):
        check_data(run, train, heldout)
    assert (run / DATA_FILE).read_text() == recorded


@pytest.mark.fault("refused")
def test_resume_on_another_dataset_or_teacher_is_refused(tmp_path: Path) -> None:
    from rocket_vla.teachers import TeacherInput, VGGTConfig, VGGTTeacher

    data = _write_dataset(tmp_path / "data", make_episodes(n=2, length=6))
    teacher = VGGTTeacher(VGGTConfig.tiny(), TeacherInput(size=(28, 28)), seed=0)
    cfg = tiny_config(tmp_path, dataset=str(data), steps=1, batch_size=4)
    Trainer(cfg, teacher=teacher).fit()
    cfg.steps = 2
    other_teacher = VGGTTeacher(VGGTConfig.tiny(), TeacherInput(size=(28, 28)), seed=1)
    with pytest.raises(RocketError, match="trained with another teacher"):
        Trainer(cfg, teacher=other_teacher, resume=cfg.out_dir)
    _write_dataset(data, make_episodes(n=3, length=6))  # the folder now holds another dataset
    with pytest.raises(RocketError, match="trained with another dataset"):
        Trainer(cfg, teacher=teacher, resume=cfg.out_dir)

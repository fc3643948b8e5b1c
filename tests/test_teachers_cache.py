"""The teacher-feature cache: hits equal live features; damaged or stale entries never pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import TeacherInput
from rocket_vla.teachers.cache import CacheEntryError, FeatureCache, fingerprint_files
from rocket_vla.teachers.cache_format import spec_for
from rocket_vla.teachers.fill import fill_cache, frames_to_views, in_shard
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")
LAYERS = [2, -1]


@pytest.fixture(scope="module")
def teacher() -> VGGTTeacher:
    return VGGTTeacher(VGGTConfig.tiny(depth=3), TeacherInput(size=(28, 42)), seed=0)


def _episodes(n: int = 3, steps: int = 4) -> list[tuple[str, dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (f"libero_spatial/task_0/demo_{i}",
         {c: torch.randint(0, 256, (steps, 32, 48, 3), dtype=torch.uint8, generator=gen)
          for c in CAMERAS})
        for i in range(n)
    ]


def _filled(teacher: VGGTTeacher, root: Path, episodes=None):
    episodes = episodes or _episodes()
    spec = spec_for(teacher, LAYERS, CAMERAS, "dataset-a", (32, 48))
    cache = FeatureCache.create(root, spec)
    report = fill_cache(cache, teacher, episodes, batch_size=4, progress=False)
    return cache, report, episodes


def test_cache_hit_equals_live_computation(teacher: VGGTTeacher, tmp_path: Path) -> None:
    cache, report, episodes = _filled(teacher, tmp_path)
    assert len(report.written) == 3 and report.frames == 12
    episode, frames = episodes[1]
    live = teacher.features(frames_to_views(frames, CAMERAS), LAYERS)
    hit = cache.read(episode, [0, 1, 2, 3])
    assert [tuple(h.shape) for h in hit] == [(4, 2, 2, 3, 128)] * 2
    assert all(h.dtype == torch.float16 for h in hit)
    for a, b in zip(live, hit, strict=True):
        assert torch.equal(a.half(), b)
    # A subset of steps in any order, and a reopened cache, give the same tensors.
    again = FeatureCache.open(tmp_path, cache.spec).read(episode, [3, 1])
    assert torch.equal(again[0], hit[0][[3, 1]])
    batch = cache.read_batch([episodes[0][0], episode], [2, 1])
    assert torch.equal(batch[1][1], hit[1][1]) and batch[0].shape == (2, 2, 2, 3, 128)
    assert not list(tmp_path.rglob("*.tmp"))
    assert sorted(cache.episodes()) == sorted(e for e, _ in episodes)


def test_fill_is_resumable_and_skips_loading_cached_episodes(
    teacher: VGGTTeacher, tmp_path: Path
) -> None:
    cache, _, episodes = _filled(teacher, tmp_path)
    loads: list[str] = []

    def lazy(ep: str, frames):
        def load():
            loads.append(ep)
            return frames
        return load

    more = episodes + [("libero_spatial/task_1/demo_0", episodes[0][1])]
    report = fill_cache(cache, teacher, [(e, lazy(e, f)) for e, f in more], progress=False)
    assert len(report.skipped) == 3 and report.written == ["libero_spatial/task_1/demo_0"]
    assert loads == ["libero_spatial/task_1/demo_0"]


def _data_offset(path: Path) -> int:
    header = int.from_bytes(path.read_bytes()[:8], "little")
    return 8 + header


def test_corrupted_entry_is_detected_and_recomputed(teacher: VGGTTeacher, tmp_path: Path) -> None:
    cache, _, episodes = _filled(teacher, tmp_path)
    episode = episodes[0][0]
    path = cache.path(episode)
    good = cache.read(episode, [0, 1, 2, 3])
    data = bytearray(path.read_bytes())
    data[_data_offset(path) + 10] ^= 0xFF  # one flipped byte in the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CacheEntryError, match="corrupt .*rocket cache-teacher"):
        cache.read(episode, [0, 1, 2, 3])
    assert cache.check(episode, verify=True).startswith("corrupt")
    assert path.name in cache.verify()
    report = fill_cache(cache, teacher, episodes, verify_existing=True, progress=False)
    assert list(report.repaired) == [episode] and len(report.skipped) == 2
    assert all(torch.equal(a, b) for a, b in zip(good, cache.read(episode, [0, 1, 2, 3]),
                                                 strict=True))


def test_truncated_entry_is_detected(teacher: VGGTTeacher, tmp_path: Path) -> None:
    cache, _, episodes = _filled(teacher, tmp_path)
    episode = episodes[2][0]
    path = cache.path(episode)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CacheEntryError, match="truncated or corrupt"):
        cache.read(episode, [0])
    assert cache.check(episode).startswith("truncated")
    report = fill_cache(cache, teacher, episodes, progress=False)  # header check is enough
    assert list(report.repaired) == [episode]
    assert cache.check(episode, verify=True) == "ok"


def test_stale_entries_and_caches_are_detected(teacher: VGGTTeacher, tmp_path: Path) -> None:
    cache, _, episodes = _filled(teacher, tmp_path / "a")
    other = VGGTTeacher(VGGTConfig.tiny(depth=3), TeacherInput(size=(28, 42)), seed=1)
    other_spec = spec_for(other, LAYERS, CAMERAS, "dataset-a", (32, 48))
    assert other_spec.teacher != cache.spec.teacher
    # Opening the cache for another teacher (or creating over it) is refused.
    with pytest.raises(RocketError, match="stale.*teacher"):
        FeatureCache.open(tmp_path / "a", other_spec)
    with pytest.raises(RocketError, match="--overwrite"):
        FeatureCache.create(tmp_path / "a", other_spec)
    # An entry written for another spec, dropped into this directory, is stale.
    stale = FeatureCache.create(tmp_path / "b", other_spec)
    fill_cache(stale, other, episodes[:1], progress=False)
    stale.path(episodes[0][0]).replace(cache.path(episodes[0][0]))
    with pytest.raises(CacheEntryError, match="stale"):
        cache.read(episodes[0][0], [0])
    report = fill_cache(cache, teacher, episodes, progress=False)
    assert report.repaired == {episodes[0][0]: "stale (computed for another teacher or layer set)"}
    # --overwrite wipes the old entries and records the new spec.
    fresh = FeatureCache.create(tmp_path / "a", other_spec, overwrite=True)
    assert fresh.episodes() == []
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["teacher"] == other_spec.teacher


def test_shards_partition_episodes(teacher: VGGTTeacher, tmp_path: Path) -> None:
    ids = [f"ep{i}" for i in range(40)]
    owners = [[in_shard(e, (k, 3)) for k in range(3)] for e in ids]
    assert all(sum(o) == 1 for o in owners)
    episodes = _episodes(n=4, steps=2)
    spec = spec_for(teacher, LAYERS, CAMERAS, "dataset-a", (32, 48))
    cache = FeatureCache.create(tmp_path, spec)
    written = []
    for k in range(2):
        written += fill_cache(cache, teacher, episodes, shard=(k, 2), progress=False).written
    assert sorted(written) == sorted(e for e, _ in episodes)


def test_input_validation(teacher: VGGTTeacher, tmp_path: Path) -> None:
    chw = {c: torch.rand(2, 3, 32, 48) for c in CAMERAS}
    assert frames_to_views(chw, CAMERAS).shape == (2, 2, 3, 32, 48)
    with pytest.raises(RocketError, match="has no camera 'eye_in_hand_rgb'"):
        frames_to_views({"agentview_rgb": chw["agentview_rgb"]}, CAMERAS)
    with pytest.raises(RocketError, match="not a teacher cache"):
        FeatureCache.open(tmp_path)
    with pytest.raises(RocketError, match="shard"):
        spec = spec_for(teacher, LAYERS, CAMERAS, "d", (32, 48))
        fill_cache(FeatureCache.create(tmp_path, spec), teacher, [], shard=(2, 2))


def _h5(path: Path, order: tuple[str, ...], chunks: bool, action: float = 0.5, task: str = "put") -> Path:
    """An episode-like HDF5 file whose datasets are written in ``order`` and laid out with or
    without chunking: the same content, other bytes."""
    import h5py

    arrays = {"obs/rgb": np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3),
              "actions": np.full((2, 7), action, dtype=np.float32)}
    with h5py.File(path, "w") as f:
        f.attrs["task"] = task
        for name in order:
            f.create_dataset(name, data=arrays[name], chunks=True if chunks else None)
    return path


def test_dataset_fingerprint_follows_content_not_layout(tmp_path: Path) -> None:
    for sub in "abc":
        (tmp_path / sub).mkdir()
    first = fingerprint_files([_h5(tmp_path / "a" / "e.hdf5", ("obs/rgb", "actions"), False)])
    relaid = _h5(tmp_path / "b" / "e.hdf5", ("actions", "obs/rgb"), True)
    assert relaid.read_bytes() != (tmp_path / "a" / "e.hdf5").read_bytes()
    assert fingerprint_files([relaid]) == first  # re-collected demonstrations key the same
    for change in ({"action": 0.25}, {"task": "pick"}):
        other = _h5(tmp_path / "c" / "e.hdf5", ("obs/rgb", "actions"), False, **change)
        assert fingerprint_files([other]) != first
    assert fingerprint_files([_h5(tmp_path / "c" / "f.hdf5", ("obs/rgb", "actions"), False)]) != first  # name
    raw = tmp_path / "a.bin"
    raw.write_bytes(b"abc")
    before = fingerprint_files([raw])
    raw.write_bytes(b"abd")
    assert fingerprint_files([raw]) != before
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(b"abc")
    with pytest.raises(RocketError, match="cannot be read as HDF5"):
        fingerprint_files([broken])
    with pytest.raises(RocketError, match="does not exist"):
        fingerprint_files([tmp_path / "missing.hdf5"])

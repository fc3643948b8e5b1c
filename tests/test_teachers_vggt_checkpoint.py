"""Loading VGGT checkpoints: exact round trips, strict aggregator keys, ignored heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

TINY = VGGTConfig.tiny(depth=2)


@pytest.fixture(scope="module")
def teacher() -> VGGTTeacher:
    return VGGTTeacher(TINY, seed=7)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(0))


def _full_state(teacher: VGGTTeacher) -> dict[str, torch.Tensor]:
    """The teacher's aggregator plus fake head tensors, laid out like the official model.pt."""
    state = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    state["camera_head.trunk.0.norm1.weight"] = torch.ones(4)
    state["depth_head.scratch.output_conv2.2.bias"] = torch.zeros(1)
    state["point_head.projects.0.weight"] = torch.zeros(2, 2)
    state["track_head.feature_extractor.norm.bias"] = torch.zeros(3)
    return state


def test_safetensors_round_trip_is_exact(
    teacher: VGGTTeacher, frames: torch.Tensor, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.safetensors"
    teacher.save(path)
    loaded = VGGTTeacher.from_checkpoint(path, TINY)
    for a, b in zip(teacher.features(frames, [0, 1, 2]), loaded.features(frames, [0, 1, 2]),
                    strict=True):
        assert torch.equal(a, b)
    assert loaded.fingerprint() == teacher.fingerprint()
    assert loaded.load_report is not None and loaded.load_report.ignored == []


def test_full_pt_checkpoint_ignores_and_reports_heads(
    teacher: VGGTTeacher, frames: torch.Tensor, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    torch.save(_full_state(teacher), path)
    loaded = VGGTTeacher.from_checkpoint(path, TINY)
    report = loaded.load_report
    assert report is not None and report.loaded == len(teacher.model.state_dict())
    assert len(report.ignored) == 4 and "depth_head.scratch.output_conv2.2.bias" in report.ignored
    assert "camera_head" in report.summary() and "track_head" in report.summary()
    assert torch.equal(teacher.features(frames, [-1])[0], loaded.features(frames, [-1])[0])


def test_aggregator_only_checkpoint_without_prefix_loads(
    teacher: VGGTTeacher, frames: torch.Tensor, tmp_path: Path
) -> None:
    state = {k.removeprefix("aggregator."): v for k, v in teacher.model.state_dict().items()}
    path = tmp_path / "aggregator.pt"
    torch.save(state, path)
    loaded = VGGTTeacher.from_checkpoint(path, TINY)
    assert torch.equal(teacher.features(frames, [1])[0], loaded.features(frames, [1])[0])


def test_wrong_key_is_named(teacher: VGGTTeacher, tmp_path: Path) -> None:
    state = _full_state(teacher)
    state["aggregator.frame_blocks.1.attn.q_nrm.weight"] = state.pop(
        "aggregator.frame_blocks.1.attn.q_norm.weight"
    )
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(RocketError) as err:
        VGGTTeacher.from_checkpoint(path, TINY)
    message = str(err.value)
    assert "missing keys: aggregator.frame_blocks.1.attn.q_norm.weight" in message
    assert "unexpected keys: frame_blocks.1.attn.q_nrm.weight" in message


def test_foreign_top_level_key_and_shape_mismatch_fail(
    teacher: VGGTTeacher, tmp_path: Path
) -> None:
    state = _full_state(teacher)
    state["extra_module.weight"] = torch.zeros(1)
    path = tmp_path / "foreign.pt"
    torch.save(state, path)
    with pytest.raises(RocketError, match="unexpected keys: extra_module.weight"):
        VGGTTeacher.from_checkpoint(path, TINY)
    # The same file read with a config of another size is a shape mismatch, named.
    torch.save(_full_state(teacher), path)
    with pytest.raises(RocketError, match="shape mismatches: .*pos_embed"):
        VGGTTeacher.from_checkpoint(path, VGGTConfig.tiny(depth=2, img_size=70))


def test_unreadable_and_missing_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(RocketError, match="does not exist"):
        VGGTTeacher.from_checkpoint(tmp_path / "nope.pt", TINY)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(RocketError, match="could not read"):
        VGGTTeacher.from_checkpoint(bad, TINY)


def test_fingerprint_tracks_weights_and_input(teacher: VGGTTeacher) -> None:
    same = VGGTTeacher(TINY, seed=7)
    other = VGGTTeacher(TINY, seed=8)
    assert same.fingerprint() == teacher.fingerprint()
    assert other.fingerprint() != teacher.fingerprint()
    from rocket_vla.teachers.base import TeacherInput

    resized = VGGTTeacher(TINY, TeacherInput(size=(28, 28)), seed=7)
    assert resized.fingerprint() != teacher.fingerprint()

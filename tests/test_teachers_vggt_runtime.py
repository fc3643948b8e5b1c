"""TeacherRuntime on VGGT: cached constants, weights stored in bf16, per-block torch.compile."""

from __future__ import annotations

import pytest
import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import TeacherInput, TeacherRuntime
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher
from rocket_vla.teachers.vggt_blocks import patch_positions, rope_tables

TINY = VGGTConfig.tiny()
LAYERS = [0, 1, 3, 4]


def _frames(seed: int, h: int = 56, w: int = 42, b: int = 2, s: int = 3) -> torch.Tensor:
    return torch.rand(b, s, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_cached_constants_give_bit_identical_features_across_shapes() -> None:
    cached = VGGTTeacher(TINY, seed=0)
    fresh = VGGTTeacher(TINY, seed=0, runtime=TeacherRuntime(cache_constants=False))
    # 56x42 needs a resized position table (img_size 56 is square); 28x28 a second shape;
    # two view counts give two global RoPE tables -- then the first shape again, from cache
    for frames in (_frames(1), _frames(2, 28, 28), _frames(3, 56, 42, b=1, s=2), _frames(4)):
        got = cached.features(frames, LAYERS)
        ref = fresh.features(frames, LAYERS)
        for g, r in zip(got, ref, strict=True):
            assert torch.equal(g, r)
    agg = cached.model.aggregator
    keys = [k for k in agg.__dict__["_constants"] if k[0] == "rope"]
    assert len(keys) == 3  # (3 views, 4x3), (3 views, 2x2), (2 views, 4x3): nothing rebuilt
    assert "_constants" not in fresh.model.aggregator.__dict__


def test_cached_rope_tables_equal_the_formula_and_are_reused() -> None:
    agg = VGGTTeacher(TINY, seed=0).model.aggregator
    frame, glob = agg._rope(3, 4, 3, 16, torch.device("cpu"), torch.float32)
    cos, sin = rope_tables(patch_positions(4, 3, agg.patch_start, torch.device("cpu")), 16, 100.0)
    assert torch.equal(frame[0], cos) and torch.equal(frame[1], sin)
    assert torch.equal(glob[0], cos.repeat(3, 1)) and torch.equal(glob[1], sin.repeat(3, 1))
    again = agg._rope(3, 4, 3, 16, torch.device("cpu"), torch.float32)
    assert again[0][0] is frame[0]  # the same tensor: not rebuilt
    low = agg._rope(3, 4, 3, 16, torch.device("cpu"), torch.bfloat16)
    assert low[0][0].dtype == torch.bfloat16 and torch.equal(low[0][0], cos.to(torch.bfloat16))


def test_position_table_cache_follows_new_weights() -> None:
    teacher = VGGTTeacher(TINY, seed=0)
    frames = _frames(5)
    teacher.features(frames, [1])  # fills the resized position table for this grid
    other = VGGTTeacher(TINY, seed=7)
    teacher.model.load_state_dict(other.model.state_dict())  # in place: same storage, new version
    teacher.weights_changed()
    fresh = VGGTTeacher(TINY, seed=7, runtime=TeacherRuntime(cache_constants=False))
    assert torch.equal(teacher.features(frames, [1])[0], fresh.features(frames, [1])[0])


def test_position_table_is_not_cached_while_training() -> None:
    agg = VGGTTeacher(TINY, seed=0).model.aggregator.requires_grad_(True)
    out = agg(_frames(6), [1])[1]
    out.square().mean().backward()
    assert agg.patch_embed.pos_embed.grad is not None
    assert agg.patch_embed.pos_embed.grad.abs().sum() > 0
    assert not any(k[0] == "pos" for k in agg.patch_embed.__dict__.get("_constants", {}))


def test_bf16_weights_are_close_to_float32() -> None:
    full = VGGTTeacher(TINY, seed=0)
    low = VGGTTeacher(TINY, seed=0, runtime=TeacherRuntime(dtype="bfloat16"))
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    assert low.compute_dtype() == torch.bfloat16
    frames = _frames(8)
    got, ref = low.features(frames, LAYERS), full.features(frames, LAYERS)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == torch.float32  # features always come back as float32
        assert _rel(g, r) < 0.03, _rel(g, r)
    # a caller's autocast (a training step's) does not leak into the native bf16 run
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = low.features(frames, LAYERS)
    assert all(torch.equal(a, b) for a, b in zip(inside, got, strict=True))
    assert low.fingerprint() != full.fingerprint()


def test_auto_dtype_is_float32_on_cpu_and_fingerprint_unchanged() -> None:
    auto = VGGTTeacher(TINY, seed=0)
    explicit = VGGTTeacher(TINY, seed=0, runtime=TeacherRuntime(dtype="float32"))
    assert auto.compute_dtype() == torch.float32
    assert {p.dtype for p in auto.model.parameters()} == {torch.float32}
    assert auto.fingerprint() == explicit.fingerprint()
    assert not TeacherRuntime(compile="auto").compiles_on(torch.device("cpu"))
    assert TeacherRuntime(compile="auto").compiles_on(torch.device("cuda"))


def test_weights_follow_the_runtime_dtype_when_moved_behind_the_teachers_back() -> None:
    low = VGGTTeacher(TINY, seed=0, runtime=TeacherRuntime(dtype="bfloat16"))
    low.model.float()  # e.g. shared with another teacher that upcast it
    low.features(_frames(9, b=1), [1])
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}


def test_runtime_settings_are_checked() -> None:
    with pytest.raises(RocketError, match="dtype"):
        TeacherRuntime(dtype="fp8")
    with pytest.raises(RocketError, match="compile"):
        TeacherRuntime(compile="yes")


def test_compiled_blocks_match_eager() -> None:
    cfg = VGGTConfig.tiny(depth=2, patch_embed_depth=1)
    eager = VGGTTeacher(cfg, TeacherInput(size=(28, 28)), seed=0)
    compiled = VGGTTeacher(cfg, TeacherInput(size=(28, 28)), seed=0,
                           runtime=TeacherRuntime(compile="blocks"))
    frames = _frames(10, b=1, s=2)
    for _ in range(2):  # the second call reuses the compiled graphs
        got = compiled.features(frames, [1, 2])
        ref = eager.features(frames, [1, 2])
        for g, r in zip(got, ref, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    assert compiled.model.aggregator.__dict__["_compiled"]  # blocks really went through compile
    assert compiled.model.state_dict().keys() == eager.model.state_dict().keys()

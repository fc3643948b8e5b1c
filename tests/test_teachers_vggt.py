"""Our VGGT aggregator: published key layout, RoPE, loading rules, layer semantics."""

from __future__ import annotations

import math

import pytest
import torch

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import TeacherInput
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher
from rocket_vla.teachers.vggt_blocks import apply_rope, patch_positions, rope_tables

TINY = VGGTConfig.tiny()


@pytest.fixture(scope="module")
def tiny() -> VGGTTeacher:
    return VGGTTeacher(TINY, seed=0)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.rand(2, 3, 3, 56, 42, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- key table
def test_vggt_1b_key_table_matches_published_layout() -> None:
    teacher = VGGTTeacher(VGGTConfig.vggt_1b(), materialise=False)  # meta device: no 4 GB
    state = teacher.model.state_dict()
    assert all(t.device.type == "meta" for t in state.values())
    assert len(state) == 1210
    assert all(k.startswith("aggregator.") for k in state)
    params = sum(t.numel() for t in state.values())
    assert round(params / 1e6, 1) == 909.1
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["aggregator.camera_token"] == (1, 2, 1, 1024)
    assert shapes["aggregator.register_token"] == (1, 2, 4, 1024)
    assert shapes["aggregator.patch_embed.pos_embed"] == (1, 1370, 1024)
    assert shapes["aggregator.patch_embed.register_tokens"] == (1, 4, 1024)
    assert shapes["aggregator.patch_embed.cls_token"] == (1, 1, 1024)
    assert shapes["aggregator.patch_embed.mask_token"] == (1, 1024)
    assert shapes["aggregator.patch_embed.patch_embed.proj.weight"] == (1024, 3, 14, 14)
    assert shapes["aggregator.patch_embed.norm.weight"] == (1024,)
    for kind in ("frame_blocks", "global_blocks"):
        for i in range(24):
            p = f"aggregator.{kind}.{i}"
            assert shapes[f"{p}.attn.q_norm.weight"] == (64,)
            assert shapes[f"{p}.attn.k_norm.bias"] == (64,)
            assert shapes[f"{p}.attn.qkv.weight"] == (3072, 1024)
            assert shapes[f"{p}.ls1.gamma"] == (1024,)
            assert shapes[f"{p}.mlp.fc1.weight"] == (4096, 1024)
        assert f"aggregator.{kind}.24.norm1.weight" not in shapes
    # DINOv2 blocks: no qk-norm, layer scale present.
    assert "aggregator.patch_embed.blocks.23.ls2.gamma" in shapes
    assert "aggregator.patch_embed.blocks.0.attn.q_norm.weight" not in shapes
    assert sum(k.startswith("aggregator.patch_embed.") for k in shapes) == 344
    assert teacher.num_layers == 24 and teacher.dim == 2048 and teacher.patch_size == 14
    assert teacher.patch_grid(518, 518) == (37, 37)


# --------------------------------------------------------------------------- RoPE
def test_rope_matches_hand_computed_rotation() -> None:
    head_dim, base = 8, 100.0
    x = torch.randn(1, 1, 1, head_dim, dtype=torch.float64).float()
    row, col = 3, 5
    cos, sin = rope_tables(torch.tensor([[row, col]]), head_dim, base)
    got = apply_rope(x, cos, sin)[0, 0, 0]
    v = x[0, 0, 0].double()
    expected = torch.empty(head_dim, dtype=torch.float64)
    # Each half (row, then column) has two rotation planes: channels (j, j+2), with
    # angle position * base ** (-2j / 4) for j = 0, 1.
    for offset, pos in ((0, row), (4, col)):
        for j in range(2):
            theta = pos * base ** (-2 * j / 4)
            a, b = v[offset + j], v[offset + j + 2]
            expected[offset + j] = a * math.cos(theta) - b * math.sin(theta)
            expected[offset + j + 2] = b * math.cos(theta) + a * math.sin(theta)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_rope_scores_depend_on_relative_position_only() -> None:
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq: tuple[int, int], pk: tuple[int, int]) -> float:
        cq, sq = rope_tables(torch.tensor([pq]), 16, 100.0)
        ck, sk = rope_tables(torch.tensor([pk]), 16, 100.0)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    assert score((2, 7), (5, 1)) == pytest.approx(score((4, 9), (7, 3)), rel=1e-4)


def test_positions_offset_by_one_and_special_tokens_at_zero() -> None:
    pos = patch_positions(2, 3, num_special=5, device=torch.device("cpu"))
    assert pos.shape == (11, 2)
    assert pos[:5].abs().sum() == 0
    assert pos[5].tolist() == [1, 1] and pos[6].tolist() == [1, 2] and pos[8].tolist() == [2, 1]


# --------------------------------------------------------------------------- features
def test_layer_shapes_indices_and_layer_zero(tiny: VGGTTeacher, frames: torch.Tensor) -> None:
    feats = tiny.features(frames, [0, 1, -1])
    assert [tuple(f.shape) for f in feats] == [(2, 3, 4, 3, 128)] * 3
    torch.testing.assert_close(feats[2], tiny.features(frames, [4])[0])
    # Layer 0 is the stream entering block 1, duplicated to the 2C width.
    torch.testing.assert_close(feats[0][..., :64], feats[0][..., 64:])
    with pytest.raises(RocketError, match="out of range"):
        tiny.features(frames, [5])
    with pytest.raises(RocketError, match="multiples of its patch size"):
        tiny.features(torch.rand(1, 1, 3, 50, 56), [1])


def test_frame_half_is_per_view_and_global_half_mixes_views(tiny: VGGTTeacher) -> None:
    a = torch.rand(1, 2, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    b = a.clone()
    b[:, 1] = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(4))
    fa, fb = tiny.features(a, [1])[0], tiny.features(b, [1])[0]
    torch.testing.assert_close(fa[:, 0, ..., :64], fb[:, 0, ..., :64])  # frame attention
    assert not torch.allclose(fa[:, 0, ..., 64:], fb[:, 0, ..., 64:])  # global attention


def test_first_view_uses_its_own_special_tokens(tiny: VGGTTeacher) -> None:
    special = tiny.model.aggregator._special_tokens(2, 3).reshape(2, 3, 5, 64)
    bank = torch.cat([tiny.model.aggregator.camera_token, tiny.model.aggregator.register_token], 2)
    torch.testing.assert_close(special[:, 0], bank[0, 0].expand(2, 5, 64))
    torch.testing.assert_close(special[:, 2], bank[0, 1].expand(2, 5, 64))


def test_compute_stops_at_deepest_requested_layer(tiny: VGGTTeacher, frames: torch.Tensor) -> None:
    calls: list[str] = []
    agg = tiny.model.aggregator
    handles = [
        blk.register_forward_hook(lambda *_, n=name: calls.append(n))
        for name, blocks in (("frame", agg.frame_blocks), ("global", agg.global_blocks))
        for blk in blocks
    ]
    try:
        tiny.features(frames, [2, 1])
        assert calls == ["frame", "global", "frame", "global"]
        calls.clear()
        tiny.features(frames, [0])
        assert calls == []
    finally:
        for h in handles:
            h.remove()


def test_resize_input_and_eval_mode_restored(frames: torch.Tensor) -> None:
    teacher = VGGTTeacher(TINY, TeacherInput(size=(28, 28)), seed=0)
    teacher.model.train()
    out = teacher.features(torch.rand(1, 2, 3, 64, 64), [1])[0]
    assert out.shape == (1, 2, 2, 2, 128)
    assert teacher.model.training  # features() switches to eval and back
    assert not out.requires_grad


def test_patch_embed_matches_transformers_dinov2_with_registers(tiny: VGGTTeacher) -> None:
    """Our DINOv2 patch embedding equals transformers' on the same weights."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Dinov2WithRegistersConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        image_size=56, patch_size=14, num_register_tokens=4, layerscale_value=1.0,
    )
    hf = transformers.Dinov2WithRegistersModel(cfg).eval()
    ours = tiny.model.aggregator.patch_embed
    sd = {
        "embeddings.cls_token": ours.cls_token,
        "embeddings.mask_token": ours.mask_token,
        "embeddings.position_embeddings": ours.pos_embed,
        "embeddings.register_tokens": ours.register_tokens,
        "embeddings.patch_embeddings.projection.weight": ours.patch_embed.proj.weight,
        "embeddings.patch_embeddings.projection.bias": ours.patch_embed.proj.bias,
        "layernorm.weight": ours.norm.weight,
        "layernorm.bias": ours.norm.bias,
    }
    for i, blk in enumerate(ours.blocks):
        p = f"encoder.layer.{i}."
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[p + f"attention.{name}.weight"] = blk.attn.qkv.weight[j * 64:(j + 1) * 64]
            sd[p + f"attention.{name}.bias"] = blk.attn.qkv.bias[j * 64:(j + 1) * 64]
        sd[p + "attention.o_proj.weight"] = blk.attn.proj.weight
        sd[p + "attention.o_proj.bias"] = blk.attn.proj.bias
        sd[p + "layer_scale1.lambda1"] = blk.ls1.gamma
        sd[p + "layer_scale2.lambda1"] = blk.ls2.gamma
        for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            module = blk.get_submodule(n)
            sd[p + f"{n}.weight"], sd[p + f"{n}.bias"] = module.weight, module.bias
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and not [m for m in missing if "mask" not in m]
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state[:, 5:]
        got = ours(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_autocast_setting_follows_device(tiny: VGGTTeacher, frames: torch.Tensor) -> None:
    from rocket_vla.teachers.base import autocast_dtype

    assert autocast_dtype(torch.device("cpu"), "auto") is None  # full precision on CPU
    assert autocast_dtype(torch.device("mps"), "auto") == torch.float16
    assert autocast_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(RocketError, match="autocast"):
        TeacherInput(autocast="fp8")
    bf16 = VGGTTeacher(TINY, TeacherInput(autocast="bfloat16"), seed=0)
    low, full = bf16.features(frames, [-1])[0], tiny.features(frames, [-1])[0]
    assert low.dtype == torch.float32  # features always come back as float32
    assert torch.nn.functional.cosine_similarity(low.flatten(), full.flatten(), dim=0) > 0.99
    assert bf16.fingerprint() != tiny.fingerprint()

"""Teacher-to-student resampling: align_corners semantics, crop boxes, views, pos-embed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rocket_vla.align import resample_teacher, sincos_pos_embed_2d, student_grid
from rocket_vla.errors import RocketError


def grid_maps(feats: torch.Tensor) -> torch.Tensor:
    b, s, h, w, c = feats.shape
    return feats.reshape(b * s, h, w, c).permute(0, 3, 1, 2)


def test_full_frame_equals_interpolate_align_corners_and_views_concatenate() -> None:
    feats = torch.randn(2, 2, 37, 37, 8, dtype=torch.float64)
    out = resample_teacher(feats, (16, 16))
    ref = F.interpolate(grid_maps(feats), size=(16, 16), mode="bilinear", align_corners=True)
    ref = ref.permute(0, 2, 3, 1).reshape(2, 2 * 256, 8)
    torch.testing.assert_close(out, ref)
    # token p of view 1 is row-major position p - 256 of the second camera
    torch.testing.assert_close(out[1, 256 + 17], ref[1, 256 + 17])
    full_box = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).expand(2, 4)
    torch.testing.assert_close(resample_teacher(feats, (16, 16), crop_boxes=full_box), out)


def test_identity_grid_is_exact_token_for_token() -> None:
    feats = torch.randn(1, 1, 4, 5, 3)
    out = resample_teacher(feats, (4, 5))
    torch.testing.assert_close(out[0, 7], feats[0, 0, 1, 2])  # row 1, col 2 -> 1*5 + 2


@settings(max_examples=25, deadline=None)
@given(h=st.integers(3, 9), w=st.integers(3, 9), seed=st.integers(0, 999))
def test_crop_box_on_the_teacher_lattice_equals_cropped_interpolation(h: int, w: int, seed: int):
    """A box spanning teacher patch centres r0..r1, c0..c1 samples exactly that sub-grid."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(1, 1, h, w, 4, generator=g, dtype=torch.float64)
    r0, c0 = int(torch.randint(0, h - 2, (1,), generator=g)), int(torch.randint(0, w - 2, (1,), generator=g))
    r1, c1 = r0 + 2, c0 + 2
    box = torch.tensor([[c0 / (w - 1), r0 / (h - 1), c1 / (w - 1), r1 / (h - 1)]], dtype=torch.float64)
    out = resample_teacher(feats, (5, 4), crop_boxes=box)
    sub = feats[:, :, r0 : r1 + 1, c0 : c1 + 1]
    ref = F.interpolate(grid_maps(sub), size=(5, 4), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, ref.permute(0, 2, 3, 1).reshape(1, 20, 4))


def test_per_view_crop_boxes_are_independent() -> None:
    feats = torch.randn(1, 2, 6, 6, 4, dtype=torch.float64)
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.8, 0.8]]], dtype=torch.float64)
    out = resample_teacher(feats, (3, 3), crop_boxes=boxes)
    first = resample_teacher(feats[:, :1], (3, 3))
    torch.testing.assert_close(out[:, :9], first)
    assert not torch.allclose(out[:, 9:], resample_teacher(feats[:, 1:], (3, 3)))


def test_sincos_embedding_formula_and_scale() -> None:
    emb = sincos_pos_embed_2d(8, 3, 4)
    assert emb.shape == (8, 3, 4)
    r, c = 2, 3
    omega = [1.0, 1.0 / 100.0]  # 10000 ** (-i / 2) for quarter = 2
    expect = [math.sin(r * omega[0]), math.sin(r * omega[1]), math.cos(r * omega[0]),
              math.cos(r * omega[1]), math.sin(c * omega[0]), math.sin(c * omega[1]),
              math.cos(c * omega[0]), math.cos(c * omega[1])]
    torch.testing.assert_close(emb[:, r, c], torch.tensor(expect), rtol=1e-6, atol=1e-6)
    feats = torch.zeros(1, 1, 3, 4, 8)
    out = resample_teacher(feats, (3, 4), pos_embed_scale=0.1)
    torch.testing.assert_close(out[0, r * 4 + c], 0.1 * emb[:, r, c])


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(RocketError, match=r"\[B, S, h, w, C\]"):
        resample_teacher(torch.randn(2, 5, 8), (2, 2))
    with pytest.raises(RocketError, match="one \\(x0, y0, x1, y1\\) box"):
        resample_teacher(torch.randn(2, 2, 4, 4, 8), (2, 2), crop_boxes=torch.zeros(3, 4))
    with pytest.raises(RocketError, match="square"):
        student_grid(10)
    assert student_grid(256) == (16, 16)


@settings(max_examples=15, deadline=None)
@given(layers=st.integers(1, 4), scale=st.sampled_from([0.0, 0.1]), crop=st.booleans(),
       seed=st.integers(0, 10_000))
def test_aligner_targets_equal_one_resample_per_layer(layers: int, scale: float, crop: bool,
                                                      seed: int) -> None:
    """`Aligner.targets` resamples all layers in one call; it must equal a plain loop of
    `resample_teacher` per layer, crop boxes and position embedding included."""
    from rocket_vla.align import AlignConfig, Aligner

    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 2, 4, 5, 8, generator=g) for _ in range(layers)]
    lo = torch.rand(2, 2, 2, generator=g) * 0.3
    boxes = torch.cat([lo, lo + 0.6], dim=-1) if crop else None
    cfg = AlignConfig(student_layers=list(range(1, layers + 1)), teacher_layers=list(range(1, layers + 1)),
                      student_dim=8, teacher_dim=8, pos_embed_scale=scale)
    got = Aligner(cfg).targets(feats, (3, 3), crop_boxes=boxes)
    want = [resample_teacher(f, (3, 3), crop_boxes=boxes, pos_embed_scale=scale) for f in feats]
    assert len(got) == layers
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_targets_take_a_stacked_tensor_or_a_list_and_refuse_anything_else() -> None:
    """The two forms give the same targets as the per-layer reference; a tensor that is not
    ``[L, B, S, h, w, C]`` is refused instead of being iterated over its first dimension."""
    from rocket_vla.align import AlignConfig, Aligner

    g = torch.Generator().manual_seed(3)
    stacked = torch.randn(3, 2, 2, 4, 5, 8, generator=g, dtype=torch.float64)
    cfg = AlignConfig(student_layers=[1, 2, 3], teacher_layers=[1, 2, 3], student_dim=8,
                      teacher_dim=8, pos_embed_scale=0.1)
    aligner = Aligner(cfg)
    want = [resample_teacher(f, (3, 3), pos_embed_scale=0.1) for f in stacked]
    for form in (stacked, list(stacked.unbind(0)), [f.clone() for f in stacked]):
        for a, b in zip(aligner.targets(form, (3, 3)), want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(RocketError, match=r"\[L, B, S, h, w, C\]"):
        aligner.targets(stacked[0], (3, 3))

"""Geometry heads for training a small VGGT teacher: shapes, loss, hand-off to a Teacher."""

from __future__ import annotations

import torch

from rocket_vla.teachers.vggt import VGGTConfig
from rocket_vla.teachers.vggt_heads import GeometryConfig, GeometryModel, geometry_loss


def _model() -> GeometryModel:
    cfg = GeometryConfig(aggregator=VGGTConfig.tiny(depth=2), head_layers=(1, -1), head_dim=16)
    return GeometryModel(cfg, seed=0)


def test_outputs_shapes_and_ranges() -> None:
    model = _model()
    out = model(torch.rand(2, 3, 3, 28, 42))
    assert out["depth"].shape == (2, 3, 28, 42) and (out["depth"] > 0).all()
    assert out["world_points"].shape == (2, 3, 28, 42, 3)
    assert (out["depth_conf"] > 1).all() and (out["world_points_conf"] > 1).all()
    assert any(k.startswith("depth_head.") for k in model.state_dict())


def test_loss_trains_and_empty_mask_is_zero() -> None:
    torch.manual_seed(0)
    model = _model()
    images = torch.rand(1, 2, 3, 28, 28)
    depth = torch.full((1, 2, 28, 28), 2.0)
    points = torch.randn(1, 2, 28, 28, 3) * 0.1
    valid = torch.ones(1, 2, 28, 28, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = geometry_loss(model(images), depth, points, valid)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    empty = geometry_loss(model(images), depth, points, torch.zeros_like(valid))
    assert empty["total"].item() == 0.0


def test_teacher_hand_off_uses_the_trained_aggregator() -> None:
    model = _model()
    teacher = model.teacher()
    images = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        tokens = model.aggregator(images, [2])[2][:, :, 5:].reshape(1, 2, 2, 2, 128)
    assert torch.equal(teacher.features(images, [-1])[0], tokens)

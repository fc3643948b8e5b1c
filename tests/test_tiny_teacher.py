"""The bundled tiny geometry teacher: shipped weights, ground-truth geometry, training, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rocket_vla.cli import main
from rocket_vla.errors import RocketError
from rocket_vla.teachers.geometry import (
    GeometryTrainConfig,
    evaluate_model,
    load_pairs,
    predict,
    relative_transform,
    split_by_episode,
    train_model,
    transform_points,
    unproject_depth,
    view_batch,
)
from rocket_vla.teachers.geometry.card import _judge
from rocket_vla.teachers.tiny import NATIVE_INPUT_SIZE, load_tiny_teacher, tiny_teacher_config

K = np.array([[-50.0, 0.0, 31.0], [0.0, 50.0, 32.0], [0.0, 0.0, 1.0]])


def _rot_z(deg: float, t: tuple[float, float, float]) -> np.ndarray:
    a = np.deg2rad(deg)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = t
    return m


# --------------------------------------------------------------------------- shipped weights
def test_shipped_teacher_loads_offline_with_documented_sizes() -> None:
    cfg = tiny_teacher_config()
    assert cfg["native_input_size"] == NATIVE_INPUT_SIZE == 112
    teacher = load_tiny_teacher()
    assert (teacher.num_layers, teacher.dim, teacher.patch_size) == (4, 192, 14)
    assert teacher.patch_grid(128, 128) == (8, 8)  # any frame is resized to 112 inside
    assert teacher.load_report is not None and teacher.load_report.ignored  # heads skipped
    frames = torch.rand(1, 2, 3, 128, 128)
    feats = teacher.features(frames, [1, -1])
    assert [tuple(f.shape) for f in feats] == [(1, 2, 8, 8, 192)] * 2
    assert all(torch.isfinite(f).all() for f in feats)
    # the training code passes (side, side); 56 px gives the 4x4 grid it was also trained on
    small = load_tiny_teacher(input_size=(56, 56), device="cpu")
    assert small.features(frames, [-1])[0].shape == (1, 2, 4, 4, 192)
    assert small.fingerprint() != teacher.fingerprint()  # input size is part of the identity
    with pytest.raises(RocketError, match="multiple of its patch size"):
        load_tiny_teacher(input_size=50)


def test_shipped_teacher_is_trained_not_random() -> None:
    """Its aggregator differs from the seeded random init of the same config."""
    from rocket_vla.teachers.base import hash_state_dict
    from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

    teacher = load_tiny_teacher()
    random = VGGTTeacher(VGGTConfig(**tiny_teacher_config()["aggregator"]), seed=0)
    assert hash_state_dict(teacher.model) != hash_state_dict(random.model)


# --------------------------------------------------------------------------- geometry
def test_unprojection_matches_a_hand_computed_point() -> None:
    depth = np.full((64, 64), 1.0)
    depth[10, 40] = 2.0  # row v = 10, column u = 40
    cam = unproject_depth(depth, K)
    # x = d (u - cx) / fx = 2 * 9 / -50, y = d (v - cy) / fy = 2 * -22 / 50, z = d
    np.testing.assert_allclose(cam[10, 40], [-0.36, -0.88, 2.0], atol=1e-12)
    np.testing.assert_allclose(cam[32, 31], [0.0, 0.0, 1.0], atol=1e-12)  # principal point
    # camera-to-world: rotate 90 deg about z, then translate (1, 2, 3)
    world = transform_points(cam[10, 40], _rot_z(90, (1.0, 2.0, 3.0)))
    np.testing.assert_allclose(world, [1.0 + 0.88, 2.0 - 0.36, 5.0], atol=1e-12)
    # into a reference camera translated by (1, 0, 0): world minus (1, 0, 0)
    ref = _rot_z(0, (1.0, 0.0, 0.0))
    rel = relative_transform(_rot_z(90, (1.0, 2.0, 3.0)), ref)
    np.testing.assert_allclose(transform_points(cam[10, 40], rel), [0.88, 1.64, 5.0], atol=1e-12)


def _write_episodes(root: Path, n: int, *, depth: bool = True, size: int = 28) -> None:
    from rocket_vla.data.episodes import Episode, EpisodeWriter

    writer = EpisodeWriter(root)
    rng = np.random.default_rng(0)
    frames, steps = 6, 12
    for e in range(n):
        # learnable synthetic geometry: brightness encodes depth
        d_agent = rng.uniform(0.8, 2.0, (frames, 1, 1)) * np.ones((frames, size, size))
        d_wrist = rng.uniform(0.1, 0.4, (frames, 1, 1)) * np.ones((frames, size, size))
        obs = {
            "agentview_rgb": np.repeat(((d_agent - 0.8) / 1.2 * 255)[..., None], 3, -1).astype(np.uint8),
            "eye_in_hand_rgb": np.repeat(((d_wrist - 0.1) / 0.3 * 255)[..., None], 3, -1).astype(np.uint8),
            "agentview_extrinsics": np.tile(_rot_z(0, (0.0, 0.0, 0.2)), (frames, 1, 1)),
            "eye_in_hand_extrinsics": np.tile(_rot_z(90, (0.2, 0.0, 0.5)), (frames, 1, 1)),
            "ee_pos": np.zeros((steps, 3)),
        }
        if depth:
            obs["agentview_depth"] = d_agent.astype(np.float32)
            obs["eye_in_hand_depth"] = d_wrist.astype(np.float32)
        attrs = {"agentview_intrinsics": K, "eye_in_hand_intrinsics": K}
        writer.write(f"ep{e}", Episode(np.zeros((steps, 7), np.float32), obs, "pick",
                                       np.arange(0, steps, 2), attrs))


def test_pairs_targets_and_a_few_steps_lower_the_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _write_episodes(tmp_path / "data", 3)
    cfg = GeometryTrainConfig(embed_dim=32, depth=1, num_heads=2, patch_embed_depth=1,
                              head_dim=8, input_size=28, small_size=14, small_every=0,
                              target_size=14, steps=24, batch_size=4, lr=3e-3, warmup=2,
                              log_every=6, holdout_fraction=0.34)
    frames = load_pairs(tmp_path / "data", cfg)
    assert len(frames) == 18 and frames.images.shape == (18, 2, 3, 28, 28)
    # wrist points in the agent-view frame equal the hand-composed transform of its own points
    pts = frames.points(torch.tensor([0]))
    rel = relative_transform(_rot_z(90, (0.2, 0.0, 0.5)), _rot_z(0, (0.0, 0.0, 0.2)))
    expect = transform_points(frames.cam_points[0, 1].numpy(), rel)
    np.testing.assert_allclose(pts[0, 1].numpy(), expect, atol=1e-5)
    assert torch.equal(pts[0, 0], frames.cam_points[0, 0])  # the agent view is the reference
    # the single-view variant gets the same targets, one camera per sample
    _, depth1, points1, valid1 = view_batch(frames, torch.tensor([0, 1]), 1, 28, 28)
    assert points1.shape == (4, 1, 14, 14, 3)
    assert torch.equal(points1[1, 0], pts[0, 1]) and torch.equal(depth1[1, 0], frames.depth[0, 1])
    train, held, held_ids = split_by_episode(frames, cfg.holdout_fraction, seed=0)
    assert len(held_ids) == 1 and len(held) == 6 and len(train) == 12
    assert not set(train.episode.tolist()) & set(held.episode.tolist())  # split by episode
    _, log = train_model(train, cfg, views=2)
    first, last = log.losses[0][1], log.losses[-1][1]
    assert last < first, log.losses


# --------------------------------------------------------------------------- command errors
def test_command_reports_bad_data_in_one_sentence(tmp_path: Path, capsys) -> None:
    assert main(["train-teacher", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and err.count("\n") == 0
    _write_episodes(tmp_path / "nodepth", 2, depth=False)
    assert main(["train-teacher", "--data", str(tmp_path / "nodepth"), "--out_dir",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "agentview_depth" in err and "rocket collect" in err and err.count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_model_card_reports_the_shipped_metrics() -> None:
    """The card and config.json ship next to the weights and state the three predictors."""
    from importlib import resources

    root = resources.files("rocket_vla").joinpath("assets/tiny_teacher")
    card = root.joinpath("MODEL_CARD.md").read_text()
    metrics = json.loads(root.joinpath("metrics.json").read_text())
    for key in ("constant_depth", "teacher", "single_view"):
        assert key in metrics
    assert f"{metrics['teacher']['heldout']['all']['abs_rel']:.3f}" in card
    teacher, constant = metrics["teacher"]["heldout"]["all"], metrics["constant_depth"]["heldout"]["all"]
    assert teacher["rmse"] < constant["rmse"] and teacher["abs_rel"] < constant["abs_rel"]


def test_heldout_metrics_match_a_plain_per_pixel_loop(tmp_path: Path) -> None:
    """Depth, world-point and scene-depth errors against a per-pixel Python loop."""
    _write_episodes(tmp_path / "data", 2)
    cfg = GeometryTrainConfig(embed_dim=32, depth=1, num_heads=2, patch_embed_depth=1,
                              head_dim=8, input_size=28, small_size=14, small_every=0,
                              target_size=7, eval_batch=5)
    frames = load_pairs(tmp_path / "data", cfg)
    frames.valid[0, 1, 2, 3] = False  # an unsupervised pixel must not count
    model, _ = train_model(frames, GeometryTrainConfig(**{**cfg.__dict__, "steps": 2}), views=2)
    with torch.no_grad():
        out = predict(model, frames.images.float() / 255.0, cfg.target_size)
    target = frames.points(torch.arange(len(frames)))
    got = evaluate_model(model, frames, cfg, views=2)
    for cam, c in (("agentview", 0), ("eye_in_hand", 1)):
        rel_err, sq, pt, s_rel, s_sq, scale = [], [], [], [], [], []
        for n in range(len(frames)):
            ratios = sorted(float(out["depth"][n, c, i, j]) / float(frames.depth[n, c, i, j])
                            for i in range(7) for j in range(7) if frames.valid[n, c, i, j])
            scale.append(abs(np.log(ratios[(len(ratios) - 1) // 2])))  # torch's lower median
            for i in range(7):
                for j in range(7):
                    if not frames.valid[n, c, i, j]:
                        continue
                    p, g = float(out["depth"][n, c, i, j]), float(frames.depth[n, c, i, j])
                    rel_err.append(abs(p - g) / g)
                    sq.append((p - g) ** 2)
                    wp, wt = out["world_points"][n, c, i, j].double(), target[n, c, i, j].double()
                    pt.append(float((wp - wt).norm()))
                    if wt[2] > 0:
                        s_rel.append(abs(float(wp[2] - wt[2])) / float(wt[2]))
                        s_sq.append(float(wp[2] - wt[2]) ** 2)
        m = got[cam]
        assert m["abs_rel"] == pytest.approx(np.mean(rel_err), rel=1e-5)
        assert m["rmse"] == pytest.approx(np.sqrt(np.mean(sq)), rel=1e-5)
        assert m["point_error"] == pytest.approx(np.mean(pt), rel=1e-5)
        assert len(s_rel) > 0  # the fixture's wrist surfaces lie in front of the agent view
        assert m["scene_abs_rel"] == pytest.approx(np.mean(s_rel), rel=1e-5)
        assert m["scene_rmse"] == pytest.approx(np.sqrt(np.mean(s_sq)), rel=1e-5)
        assert m["scale_error"] == pytest.approx(np.mean(scale), rel=1e-4, abs=1e-7)
    assert got["all"]["pixels"] == int(frames.valid.sum())


def test_verdict_words_follow_the_relative_changes() -> None:
    assert _judge([-0.12, -0.30]) == "clearly beats"
    assert _judge([-0.12, -0.04]) == "beats (by less than 10%)"
    assert _judge([0.03, -0.01]) == "ties with (within 5%)"
    assert _judge([0.2, 0.06]) == "does NOT beat"
    assert _judge([-0.2, 0.06]) == "is mixed against"


def test_command_trains_both_models_and_writes_a_consistent_card(tmp_path: Path, capsys) -> None:
    """`rocket train-teacher` end to end on small synthetic episodes: weights of both models,
    metrics, and a card whose numbers are the metrics' and which the teacher loader reads."""
    from safetensors.torch import load_file

    from rocket_vla.teachers.vggt_heads import GeometryModel

    _write_episodes(tmp_path / "data", 3)
    out = tmp_path / "run"
    args = ["train-teacher", "--data", str(tmp_path / "data"), "--out_dir", str(out), "--steps", "3",
            "--embed_dim", "32", "--depth", "1", "--num_heads", "2", "--patch_embed_depth", "1",
            "--head_dim", "8", "--input_size", "28", "--small_size", "14", "--target_size", "14",
            "--holdout_fraction", "0.34", "--threads", "1"]
    assert main(args) == 0  # the single-view variant trains in a second process
    summary = capsys.readouterr().out
    assert "wrist_point_error" in summary and "second process" in summary
    # training both models one after the other gives the same weights and metrics
    assert main([*args[:4], str(tmp_path / "seq"), *args[5:], "--parallel", "false"]) == 0
    for name in ("model.safetensors", "single_view.safetensors"):
        a, b = load_file(out / name), load_file(tmp_path / "seq" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    seq_metrics = json.loads((tmp_path / "seq" / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["single_view"]["heldout"] == seq_metrics["single_view"]["heldout"]
    card = (out / "MODEL_CARD.md").read_text()
    for key in ("teacher", "single_view"):
        wrist = metrics[key]["heldout"]["eye_in_hand"]
        assert f"{wrist['point_error']:.3f}" in card and f"{wrist['scale_error']:.3f}" in card
    assert "What the second view can fix" in card
    # the single-view weights are saved next to the teacher's and reproduce its metrics
    cfg = GeometryTrainConfig(embed_dim=32, depth=1, num_heads=2, patch_embed_depth=1,
                              head_dim=8, input_size=28, small_size=14, target_size=14,
                              holdout_fraction=0.34)
    single = GeometryModel(cfg.geometry_config(), seed=None)
    single.load_state_dict({k: v.float() for k, v in load_file(out / "single_view.safetensors").items()})
    held = split_by_episode(load_pairs(tmp_path / "data", cfg), cfg.holdout_fraction, cfg.seed)[1]
    again = evaluate_model(single, held, cfg, views=1)["eye_in_hand"]["point_error"]
    assert again == pytest.approx(metrics["single_view"]["heldout"]["eye_in_hand"]["point_error"],
                                  rel=2e-2)

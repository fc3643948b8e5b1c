"""The two position embeddings for teacher targets: "sincos" (ours) and "vggt-uv" (VGGT's own).

References are independent of the code under test: values written out by hand for 2x2 and
1x3 grids, a plain Python loop over ``math.sin``/``math.cos`` for any small grid, and
``F.interpolate`` / ``F.grid_sample`` on the loop-built embedding for the targets.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rocket_vla.align import AlignConfig, Aligner, resample_teacher
from rocket_vla.align.resample import (
    POS_EMBEDS,
    pos_embed_2d,
    pos_embed_table,
    resampled_pos_embed,
    sincos_pos_embed_2d,
    uv_pos_embed_2d,
)
from rocket_vla.errors import RocketError


# ------------------------------------------------------------------ plain-loop reference
def loop_embed(kind: str, dim: int, height: int, width: int) -> torch.Tensor:
    """``[dim, h, w]`` by the definitions, one token and one channel at a time.

    sincos: row r, column c (integers), frequencies 10000 ** (-k / q), channels
    [sin(r w_k)..., cos(r w_k)..., sin(c w_k)..., cos(c w_k)...].
    vggt-uv: u, v = patch centres of a frame whose corners are at distance 1 from its centre,
    frequencies 100 ** (-k / q), channels [sin(u w_k)..., cos(u w_k)..., sin(v w_k)..., cos(v w_k)...].
    """
    q = dim // 4
    out = torch.zeros(dim, height, width, dtype=torch.float64)
    for r in range(height):
        for c in range(width):
            if kind == "sincos":
                first, second, base = float(r), float(c), 10000.0
            else:
                diagonal = math.sqrt(width**2 + height**2)  # in patch units: corners at distance 1
                first = (c + 0.5 - width / 2) * 2 / diagonal  # u: x first
                second = (r + 0.5 - height / 2) * 2 / diagonal  # v
                base = 100.0
            values = []
            for pos in (first, second):
                freqs = [base ** (-k / q) for k in range(q)]
                values += [math.sin(pos * f) for f in freqs] + [math.cos(pos * f) for f in freqs]
            out[:, r, c] = torch.tensor(values, dtype=torch.float64)
    return out


# ------------------------------------------------------------------ hand-computed cases
def test_vggt_uv_on_a_2x2_grid_by_hand() -> None:
    """Square 2x2: the corners of the frame are (+-1/sqrt2, +-1/sqrt2), so the patch centres
    sit at +-1/(2 sqrt2) = +-0.35355339 on each axis. dim 4: one frequency, 1."""
    emb = uv_pos_embed_2d(4, 2, 2)
    assert emb.shape == (4, 2, 2) and emb.dtype == torch.float32
    p = 0.35355339059327373
    # row 0, column 1: u = +p (x first), v = -p
    sin, cos = math.sin(p), math.cos(p)
    torch.testing.assert_close(emb[:, 0, 1], torch.tensor([sin, cos, -sin, cos]))
    torch.testing.assert_close(emb[:, 1, 0], torch.tensor([-sin, cos, sin, cos]))
    torch.testing.assert_close(emb[:, 0, 1], torch.tensor([0.34623215, 0.93814752, -0.34623215, 0.93814752]))


def test_vggt_uv_on_a_1x3_grid_by_hand_with_base_100() -> None:
    """1 row x 3 columns: aspect 3, corners at (+-3/sqrt10, +-1/sqrt10); the column centres at
    -2/sqrt10, 0, 2/sqrt10 and the single row at v = 0. dim 8: frequencies 1 and 100^-1/2."""
    emb = uv_pos_embed_2d(8, 1, 3)
    u = 2 / math.sqrt(10)
    f = [1.0, 0.1]
    want = [math.sin(u * f[0]), math.sin(u * f[1]), math.cos(u * f[0]), math.cos(u * f[1]),
            0.0, 0.0, 1.0, 1.0]  # v = 0: sines 0, cosines 1
    torch.testing.assert_close(emb[:, 0, 2], torch.tensor(want))
    torch.testing.assert_close(emb[:, 0, 1], torch.tensor([0.0, 0.0, 1.0, 1.0] * 2))  # the centre: u = v = 0


def test_sincos_on_a_1x3_grid_by_hand() -> None:
    """Integer positions, row first: token (0, 2) of a 1x3 grid at dim 4 is [0, 1, sin 2, cos 2]."""
    emb = sincos_pos_embed_2d(4, 1, 3)
    torch.testing.assert_close(emb[:, 0, 2], torch.tensor([0.0, 1.0, math.sin(2.0), math.cos(2.0)]))


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(POS_EMBEDS), quarter=st.integers(1, 4), height=st.integers(1, 6),
       width=st.integers(1, 6))
def test_both_embeddings_equal_the_plain_loop(kind: str, quarter: int, height: int, width: int) -> None:
    dim = 4 * quarter
    got = pos_embed_2d(kind, dim, height, width)
    assert got.shape == (dim, height, width) and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got.double(), loop_embed(kind, dim, height, width), rtol=0, atol=1e-6)


def test_the_two_differ_and_the_uv_one_ignores_resolution() -> None:
    """Same norm per token (one sin/cos pair per frequency), different directions; the UV
    embedding of a patch depends on where it sits in the frame, not on the grid's size."""
    a, b = sincos_pos_embed_2d(64, 5, 5), uv_pos_embed_2d(64, 5, 5)
    torch.testing.assert_close(a.norm(dim=0), torch.full((5, 5), math.sqrt(32.0)))
    torch.testing.assert_close(b.norm(dim=0), torch.full((5, 5), math.sqrt(32.0)))
    assert (a - b).norm() / b.norm() > 0.1
    # the centre patch of a 3x3 and of a 9x9 grid is the frame's centre for "vggt-uv" only
    torch.testing.assert_close(uv_pos_embed_2d(8, 3, 3)[:, 1, 1], uv_pos_embed_2d(8, 9, 9)[:, 4, 4])
    assert not torch.allclose(sincos_pos_embed_2d(8, 3, 3)[:, 1, 1], sincos_pos_embed_2d(8, 9, 9)[:, 4, 4])


def test_bad_widths_and_kinds_are_clear_errors() -> None:
    with pytest.raises(RocketError, match="divisible by 4"):
        uv_pos_embed_2d(6, 2, 2)
    with pytest.raises(RocketError, match="use one of sincos, vggt-uv"):
        pos_embed_2d("rope", 8, 2, 2)
    with pytest.raises(RocketError, match="set pos_embed to one of 'sincos', 'vggt-uv'"):
        Aligner(AlignConfig(student_layers=[1], teacher_layers=[1], student_dim=4, teacher_dim=8,
                            pos_embed="uv"))


# ------------------------------------------------------------------ cached tables
def test_tables_are_cached_per_kind_at_the_requested_dtype() -> None:
    cpu = torch.device("cpu")
    uv = pos_embed_table(8, 3, 4, cpu, torch.float64, "vggt-uv")
    assert uv is pos_embed_table(8, 3, 4, cpu, torch.float64, "vggt-uv")
    assert uv is not pos_embed_table(8, 3, 4, cpu, torch.float64, "sincos")
    assert uv.shape == (3, 4, 8) and uv.dtype == torch.float64
    torch.testing.assert_close(uv, loop_embed("vggt-uv", 8, 3, 4).permute(1, 2, 0), rtol=0, atol=1e-6)
    small = resampled_pos_embed(8, 3, 4, (2, 3), cpu, torch.float32, "vggt-uv")
    ref = F.interpolate(loop_embed("vggt-uv", 8, 3, 4)[None], size=(2, 3), mode="bilinear",
                        align_corners=True)
    assert small.shape == (2, 3, 8) and small.dtype == torch.float32
    torch.testing.assert_close(small.double(), ref[0].permute(1, 2, 0), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ through Aligner.targets
def reference_targets(feats: torch.Tensor, grid: tuple[int, int], kind: str, scale: float,
                      boxes: torch.Tensor | None) -> torch.Tensor:
    """Loop-built embedding added at the teacher grid, then F.interpolate (full frames) or
    F.grid_sample on the box lattice (border padding, align_corners)."""
    b, s, h, w, c = feats.shape
    gh, gw = grid
    maps = feats.reshape(b * s, h, w, c).permute(0, 3, 1, 2) + scale * loop_embed(kind, c, h, w)
    if boxes is None:
        out = F.interpolate(maps, size=grid, mode="bilinear", align_corners=True)
    else:
        bx = boxes.reshape(b * s, 4).double()
        ty = torch.linspace(0, 1, gh, dtype=torch.float64)
        tx = torch.linspace(0, 1, gw, dtype=torch.float64)
        ys = bx[:, 1:2] + (bx[:, 3:4] - bx[:, 1:2]) * ty
        xs = bx[:, 0:1] + (bx[:, 2:3] - bx[:, 0:1]) * tx
        grid_xy = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1) * 2 - 1
        out = F.grid_sample(maps, grid_xy, mode="bilinear", padding_mode="border", align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(b, s * gh * gw, c)


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(POS_EMBEDS), crop=st.booleans(), stacked=st.booleans(),
       h=st.integers(2, 7), w=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_aligner_targets_add_the_configured_embedding(kind: str, crop: bool, stacked: bool, h: int,
                                                      w: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 2, h, w, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    boxes = None
    if crop:
        lo = torch.rand(2, 2, 2, generator=g, dtype=torch.float64) * 0.3
        boxes = torch.cat([lo, lo + 0.5 + 0.2 * torch.rand(2, 2, 2, generator=g, dtype=torch.float64)], -1)
    cfg = AlignConfig(student_layers=[1, 2], teacher_layers=[1, 2], student_dim=8, teacher_dim=8,
                      pos_embed=kind, pos_embed_scale=0.1)
    aligner = Aligner(cfg)
    got = aligner.targets(torch.stack(feats) if stacked else feats, (3, 4), crop_boxes=boxes)
    for f, out in zip(feats, got, strict=True):
        want = reference_targets(f, (3, 4), kind, 0.1, boxes)
        torch.testing.assert_close(out, want, rtol=0, atol=1e-6)
        plain = resample_teacher(f, (3, 4), crop_boxes=boxes, pos_embed_scale=0.1, pos_embed=kind)
        torch.testing.assert_close(plain, want, rtol=0, atol=1e-6)


def test_the_option_changes_the_targets_and_compile_leaves_them_alone() -> None:
    """The two kinds give different targets; the compiled loss consumes the same targets (the
    embedding is added before the loss, outside the compiled graph)."""
    feats = [torch.zeros(1, 1, 5, 5, 8)]
    kw = dict(student_layers=[1], teacher_layers=[1], student_dim=8, teacher_dim=8)
    ours = Aligner(AlignConfig(**kw)).targets(feats, (3, 3))[0]
    vggt = Aligner(AlignConfig(**kw, pos_embed="vggt-uv"), compile=True).targets(feats, (3, 3))[0]
    want = reference_targets(feats[0].double(), (3, 3), "vggt-uv", 0.1, None)
    torch.testing.assert_close(vggt, want.float())
    assert not torch.allclose(ours, vggt)


# ------------------------------------------------------------------ configs
def test_config_round_trip_old_dicts_and_paper_presets() -> None:
    cfg = AlignConfig(student_layers=[1], teacher_layers=[1], student_dim=4, teacher_dim=8,
                      pos_embed="vggt-uv")
    assert AlignConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["pos_embed"]  # a config written before the option existed ran "sincos"
    assert AlignConfig.from_dict(old).pos_embed == "sincos"
    paper = AlignConfig.preset("rocket", layout="openvla", student_dim=8, teacher_dim=8)
    assert paper.pos_embed == "vggt-uv"
    sf = AlignConfig.preset("spatial_forcing", layout="pi0", student_dim=8, teacher_dim=8)
    assert sf.pos_embed == "vggt-uv"
    assert AlignConfig.preset("rocket", layout="openvla", student_dim=8, teacher_dim=8,
                              pos_embed="sincos").pos_embed == "sincos"
    balanced = AlignConfig.preset("rocket", student_depth=6, teacher_depth=4, student_dim=8, teacher_dim=8)
    assert balanced.pos_embed == "sincos"


def test_train_config_flag_reaches_the_align_config() -> None:
    from types import SimpleNamespace

    from rocket_vla.commands.train import DESCRIPTION
    from rocket_vla.config_cli import build_parser, parse_config
    from rocket_vla.policies import build_student
    from rocket_vla.train.config import TrainConfig
    from rocket_vla.train.loop import build_align_config

    parser = build_parser(TrainConfig, "rocket train", DESCRIPTION)
    cfg, _ = parse_config(parser, TrainConfig, ["--pos_embed", "vggt-uv"])
    assert cfg.pos_embed == "vggt-uv" and TrainConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["pos_embed"]
    assert TrainConfig.from_dict(old).pos_embed is None
    paper, _ = parse_config(parser, TrainConfig, ["--config", "paper_openvla"])
    assert paper.pos_embed == "vggt-uv"
    with pytest.raises(RocketError, match="pass --pos_embed sincos or vggt-uv"):
        TrainConfig(pos_embed="uv").validate()

    student = build_student("minivla", "tiny")
    teacher = SimpleNamespace(dim=8, num_layers=4)
    assert build_align_config(TrainConfig(num_pairs=2), student, teacher).pos_embed == "sincos"
    assert build_align_config(cfg, student, teacher).pos_embed == "vggt-uv"
    baseline = build_align_config(TrainConfig(variant="baseline", pos_embed="vggt-uv"), student, None)
    assert baseline.pos_embed == "vggt-uv" and not baseline.enabled


def test_a_training_run_records_the_choice_and_resume_holds_it(tmp_path, capsys) -> None:
    """`rocket train --pos_embed vggt-uv`: the checkpoint's AlignConfig records it, resuming
    with the same flag continues, resuming with the other one is refused."""
    import json

    import numpy as np
    from minivla_fixtures import make_episodes

    from rocket_vla.cli import main
    from rocket_vla.data.episodes import Episode, EpisodeWriter

    writer = EpisodeWriter(tmp_path / "data")
    for i, e in enumerate(make_episodes(n=2, length=8)):
        writer.write(f"ep{i}", Episode(e.actions, e.obs, e.language, np.arange(8)))
    args = ["train", "--dataset", str(tmp_path / "data"), "--out_dir", str(tmp_path / "run"),
            "--student_preset", "tiny", "--variant", "rocket", "--num_pairs", "2", "--batch_size", "4",
            "--save_every", "1", "--progress", "false", "--tensorboard", "false"]
    assert main([*args, "--steps", "1", "--pos_embed", "vggt-uv"]) == 0
    saved = json.loads(next((tmp_path / "run").rglob("config.json")).read_text())
    assert saved["align"]["pos_embed"] == "vggt-uv" and saved["train"]["pos_embed"] == "vggt-uv"
    assert main([*args, "--steps", "2", "--pos_embed", "vggt-uv", "--resume", "auto"]) == 0
    capsys.readouterr()
    assert main([*args, "--steps", "3", "--pos_embed", "sincos", "--resume", "auto"]) == 2
    assert "pos_embed: 'vggt-uv' -> 'sincos'" in capsys.readouterr().err

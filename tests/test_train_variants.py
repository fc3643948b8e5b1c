"""The five variants on one code path: learning signals and the baseline's independence."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from minivla_fixtures import ConvTeacher, ExplodingTeacher, make_episodes, single_thread, tiny_config

from rocket_vla.train import Trainer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_nano_run_lowers_the_action_loss(tmp_path) -> None:
    cfg = tiny_config(tmp_path, variant="baseline", steps=50, lr=1e-2, log_every=1,
                      save_every=50)
    result = Trainer(cfg, episodes=make_episodes()).fit()
    losses = [h["action"] for h in result.history]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_rocket_run_lowers_every_pair_loss(tmp_path) -> None:
    cfg = tiny_config(tmp_path, variant="rocket", steps=25, lr=3e-3, log_every=1,
                      save_every=25, tensorboard=True)
    result = Trainer(cfg, episodes=make_episodes(), teacher=ConvTeacher()).fit()
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 25
    first, last = result.history[0]["pairs"], result.history[-1]["pairs"]
    assert len(first) == 3
    for i, (a, b) in enumerate(zip(first, last, strict=True)):
        assert b < 0.9 * a, f"pair {i}: {a:.3f} -> {b:.3f}"


def test_baseline_never_builds_or_calls_a_teacher(tmp_path) -> None:
    cfg = tiny_config(tmp_path, variant="baseline", steps=2, teacher="/no/such/teacher.pt")
    trainer = Trainer(cfg, episodes=make_episodes(n=2, length=8), teacher=ExplodingTeacher())
    assert trainer.teacher is None
    assert not trainer.aligner.enabled
    assert sum(p.numel() for p in trainer.aligner.parameters()) == 0
    result = trainer.fit()
    assert result.history[-1]["pairs"] == []


@pytest.mark.parametrize(
    ("variant", "pairs", "projector", "matryoshka"),
    [("spatial_forcing", 1, "independent", False), ("naive", 3, "independent", False),
     ("shared", 3, "shared", False), ("rocket", 3, "shared", True)],
)
def test_variants_are_presets_of_one_path(tmp_path, variant, pairs, projector, matryoshka
                                          ) -> None:
    cfg = tiny_config(tmp_path, variant=variant, steps=1)
    trainer = Trainer(cfg, episodes=make_episodes(n=2, length=8), teacher=ConvTeacher())
    a = trainer.align_config
    assert (a.num_pairs, a.projector, a.matryoshka) == (pairs, projector, matryoshka)
    assert len(trainer.fit().history[-1]["pairs"]) == pairs


def test_explicit_layers_as_select_layers_prints_them(tmp_path) -> None:
    cfg = tiny_config(tmp_path, variant="rocket", steps=1, student_layers=[1, -1],
                      teacher_layers=[2, 4])
    trainer = Trainer(cfg, episodes=make_episodes(n=2, length=8), teacher=ConvTeacher())
    assert trainer.align_config.student_layers == [1, 4]
    assert trainer.align_config.teacher_layers == [2, 4]


def test_disk_cache_gives_the_live_teacher_losses(tmp_path) -> None:
    """`rocket cache-teacher` output read by training == running the teacher live."""
    from rocket_vla.data.dataset import CAMERAS
    from rocket_vla.teachers import TeacherInput, VGGTConfig, VGGTTeacher
    from rocket_vla.teachers.fill import cache_episodes, episode_items

    episodes = make_episodes(n=2, length=6)
    teacher = VGGTTeacher(VGGTConfig.tiny(), TeacherInput(size=(28, 28)), seed=0)
    cache_episodes(teacher, episode_items(episodes, CAMERAS), tmp_path / "cache",
                   layers=[2, 3, 4], cameras=CAMERAS, dataset_fingerprint="fake",
                   frame_size=(32, 32), progress=False)
    cached_cfg = tiny_config(tmp_path / "cached", steps=3, teacher_cache=str(tmp_path / "cache"))
    cached = Trainer(cached_cfg, episodes=episodes)
    assert cached.align_config.teacher_layers == [2, 3, 4]
    cached_run = cached.fit()
    live = Trainer(tiny_config(tmp_path / "live", steps=3), episodes=episodes,
                   teacher=teacher).fit()
    for a, b in zip(live.history, cached_run.history, strict=True):
        assert b["pairs"] == pytest.approx(a["pairs"], abs=2e-3)


@pytest.mark.parametrize("variant", ["rocket", "naive"])
def test_lambda_zero_trains_the_baseline_bit_for_bit(tmp_path, variant: str) -> None:
    """An aligned variant at lambda = 0 is the baseline: same policy weights, bit for bit, after
    several clipped steps (the clip is the one place both groups of gradients meet: the joint
    norm is the hypot of the group norms, and hypot(n, 0) == n exactly)."""
    steps = dict(steps=4, save_every=4, lr=5e-3, grad_clip=0.05)  # every step is clipped
    base = Trainer(tiny_config(tmp_path / "b", variant="baseline", **steps),
                   episodes=make_episodes()).fit()
    zero = Trainer(tiny_config(tmp_path / "z", variant=variant, align_weight=0.0, **steps),
                   episodes=make_episodes(), teacher=ConvTeacher()).fit()
    assert [h["grad_norm"] for h in base.history] == [h["grad_norm"] for h in zero.history]
    assert all(h["grad_norm"] > 0.05 for h in base.history)
    from rocket_vla.weights import read_safetensors

    a = read_safetensors(base.checkpoint / "model.safetensors")
    b = read_safetensors(zero.checkpoint / "model.safetensors")
    policy = [k for k in a if k.startswith("policy.")]
    assert policy and all(a[k].equal(b[k]) for k in policy)

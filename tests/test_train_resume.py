"""Resume equivalence and atomic checkpoints."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from minivla_fixtures import ConvTeacher, make_episodes, single_thread, tiny_config

from rocket_vla.errors import RocketError
from rocket_vla.train import Trainer
from rocket_vla.train import checkpoint as ckpt_io


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly(tmp_path) -> None:
    """6 steps straight == 3 steps, stop, resume to 6 (step decay crossed after resuming,
    gradient accumulation, augmentation and a live teacher all in play)."""
    episodes = make_episodes()
    common = dict(variant="rocket", grad_accum=2, batch_size=4, schedule="step", decay_after=4,
                  save_every=3)
    straight = Trainer(tiny_config(tmp_path / "a", steps=6, **common), episodes=episodes,
                       teacher=ConvTeacher())
    straight.fit()

    first = Trainer(tiny_config(tmp_path / "b", steps=3, **common), episodes=episodes,
                    teacher=ConvTeacher())
    first.fit()
    resumed = Trainer(tiny_config(tmp_path / "b", steps=6, **common), episodes=episodes,
                      teacher=ConvTeacher(), resume=tmp_path / "b" / "run")
    assert resumed.step == 3
    resumed.fit()

    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    assert resumed.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch) -> None:
    episodes = make_episodes(n=2, length=8)
    trainer = Trainer(tiny_config(tmp_path, steps=2, save_every=2, variant="baseline"),
                      episodes=episodes)
    trainer.fit()
    root = tmp_path / "run" / "checkpoints"
    good = ckpt_io.resolve_checkpoint(tmp_path / "run")
    assert good.name == "step_000002"
    before = ckpt_io.load_trainer_state(good)

    def killed(*args, **kwargs):  # the process dies after the weights, before the state
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt_io.torch, "save", killed)
    trainer.cfg.steps = 4
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.undo()
    assert any(p.name.startswith(".tmp-") for p in root.iterdir())  # the half-written one
    assert ckpt_io.resolve_checkpoint(tmp_path / "run") == good
    assert ckpt_io.load_trainer_state(good)["step"] == before["step"] == 2
    resumed = Trainer(tiny_config(tmp_path, steps=4, save_every=2, variant="baseline"),
                      episodes=episodes, resume=tmp_path / "run")
    assert resumed.step == 2
    resumed.fit()
    assert ckpt_io.resolve_checkpoint(tmp_path / "run").name == "step_000004"
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())


def test_weights_of_another_config_are_refused(tmp_path) -> None:
    trainer = Trainer(tiny_config(tmp_path, steps=1, variant="baseline"),
                      episodes=make_episodes(n=2, length=8))
    trainer.fit()
    from rocket_vla.policies.minivla import MiniVLA, MiniVLAConfig

    other = MiniVLA(MiniVLAConfig.preset("tiny", depth=3))
    with pytest.raises(RocketError, match="missing keys"):
        ckpt_io.load_weights(other, ckpt_io.resolve_checkpoint(tmp_path / "run"))

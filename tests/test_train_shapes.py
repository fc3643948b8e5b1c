"""The student's action and proprio widths come from the training data, not LIBERO's 7 and 8."""

from __future__ import annotations

import pytest
from minivla_fixtures import make_episodes, single_thread, tiny_config

from rocket_vla.errors import RocketError
from rocket_vla.train.loop import Trainer


def _narrow(actions: int, proprio_keys: tuple[str, ...] = ()) -> list:
    episodes = make_episodes(n=3, length=10)
    for ep in episodes:
        ep.actions = ep.actions[:, :actions]
        for key in proprio_keys:
            ep.obs.pop(key)
    return episodes


def test_a_six_dim_action_dataset_trains_a_six_dim_student(tmp_path) -> None:
    with single_thread():
        trainer = Trainer(tiny_config(tmp_path, variant="baseline", steps=2), episodes=_narrow(6))
        result = trainer.fit()
    assert trainer.model.policy.action_dim == 6 and trainer.model.policy.proprio_dim == 8
    assert trainer.model.policy.action_head.out_features == 6
    assert result.step == 2


@pytest.mark.fault("refused")
def test_a_student_width_that_differs_from_the_data_is_refused(tmp_path) -> None:
    cfg = tiny_config(tmp_path, variant="baseline", steps=2, student_config={"action_dim": 7})
    with pytest.raises(RocketError, match="the dataset has 6-dim actions but the minivla student takes 7; "
                                          "drop --student_config.action_dim"):
        Trainer(cfg, episodes=_narrow(6))
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything was written

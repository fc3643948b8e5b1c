"""Bad input is a one-sentence RocketError before any training work starts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from minivla_fixtures import ConvTeacher, make_episodes, single_thread, tiny_config

from rocket_vla.errors import RocketError
from rocket_vla.train import TrainConfig, Trainer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_missing_dataset(tmp_path) -> None:
    cfg = tiny_config(tmp_path, dataset=str(tmp_path / "nope.hdf5"))
    with pytest.raises(RocketError, match="does not exist"):
        Trainer(cfg)


def test_unknown_variant_and_half_given_layers(tmp_path) -> None:
    with pytest.raises(RocketError, match="unknown variant"):
        Trainer(tiny_config(tmp_path, variant="rockett"), episodes=make_episodes(n=1))
    with pytest.raises(RocketError, match="both student_layers and teacher_layers"):
        Trainer(tiny_config(tmp_path, student_layers=[1, 2]), episodes=make_episodes(n=1))


def _trained(tmp_path, **kw) -> TrainConfig:
    cfg = tiny_config(tmp_path, steps=2, save_every=2, **kw)
    Trainer(cfg, episodes=make_episodes(n=2, length=8), teacher=ConvTeacher()).fit()
    return cfg


def test_resume_with_changed_hyper_parameters(tmp_path) -> None:
    _trained(tmp_path)
    cfg = tiny_config(tmp_path, steps=4, lr=1e-4)
    with pytest.raises(RocketError, match="changed hyper-parameters.*lr"):
        Trainer(cfg, episodes=make_episodes(n=2, length=8), teacher=ConvTeacher(),
                resume=tmp_path / "run")


def test_resume_from_another_config(tmp_path) -> None:
    _trained(tmp_path)
    cfg = tiny_config(tmp_path, steps=4, variant="naive")
    with pytest.raises(RocketError, match="variant"):
        Trainer(cfg, episodes=make_episodes(n=2, length=8), teacher=ConvTeacher(),
                resume=tmp_path / "run")


def test_teacher_dim_not_matching_the_checkpoint(tmp_path) -> None:
    _trained(tmp_path)
    cfg = tiny_config(tmp_path, steps=4)
    with pytest.raises(RocketError, match="teacher dim"):
        Trainer(cfg, episodes=make_episodes(n=2, length=8), teacher=ConvTeacher(dim=16),
                resume=tmp_path / "run")


def test_resume_from_nothing(tmp_path) -> None:
    with pytest.raises(RocketError, match="no checkpoint found"):
        Trainer(tiny_config(tmp_path), episodes=make_episodes(n=1), teacher=ConvTeacher(),
                resume=tmp_path / "empty")


def _write_dataset(root, episodes) -> None:
    import numpy as np

    from rocket_vla.data.episodes import Episode, EpisodeWriter

    writer = EpisodeWriter(root)
    for i, e in enumerate(episodes):
        writer.write(f"ep{i}", Episode(e.actions, e.obs, e.language,
                                       np.arange(len(e.actions), dtype=np.int64)))


def test_trains_from_a_libero_layout_file(tmp_path) -> None:
    _write_dataset(tmp_path / "data", make_episodes(n=2, length=8))
    cfg = tiny_config(tmp_path, dataset=str(tmp_path / "data"), steps=2, variant="baseline")
    trainer = Trainer(cfg)
    assert len(trainer.dataset) == 16
    trainer.fit()


def test_not_libero_layout(tmp_path) -> None:
    import h5py

    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as h5:
        h5.create_dataset("images", data=[1, 2, 3])
    with pytest.raises(RocketError, match="LIBERO"):
        Trainer(tiny_config(tmp_path, dataset=str(bad)))

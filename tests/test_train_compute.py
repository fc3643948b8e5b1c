"""The compute a run records: cumulative across resumes, and the FLOPs rule by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from minivla_fixtures import make_episodes, single_thread, tiny_config

from rocket_vla.train import Trainer
from rocket_vla.train import checkpoint as ckpt_io
from rocket_vla.train.compute import teacher_flops, training_flops


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_a_resumed_run_counts_the_compute_of_an_uninterrupted_one(tmp_path) -> None:
    episodes = make_episodes(n=2, length=8)
    common = dict(variant="baseline", batch_size=2, grad_accum=2, save_every=2)
    straight = Trainer(tiny_config(tmp_path / "a", steps=4, **common), episodes=episodes).fit()
    Trainer(tiny_config(tmp_path / "b", steps=2, **common), episodes=episodes).fit()
    first = ckpt_io.load_trainer_state(ckpt_io.resolve_checkpoint(tmp_path / "b" / "run"))
    resumed = Trainer(tiny_config(tmp_path / "b", steps=4, **common), episodes=episodes,
                      resume=tmp_path / "b" / "run").fit()

    per_step = 2 * 2  # batch_size x grad_accum, one process
    assert straight.compute["samples_seen"] == resumed.compute["samples_seen"] == 4 * per_step
    assert first["compute"]["samples_seen"] == 2 * per_step
    rows = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples_seen"] for r in rows] == [per_step * s for s in (1, 2, 3, 4)]
    for key in ("train_wall_s", "train_cpu_s"):
        values = [r[key] for r in rows]
        assert values == sorted(values) and values[0] >= 0, key
        # the resumed half starts from the saved totals, not from zero
        assert rows[2][key] >= first["compute"][key] and resumed.compute[key] >= rows[-1][key]
    saved = ckpt_io.read_config(ckpt_io.resolve_checkpoint(tmp_path / "b" / "run"))["compute"]
    assert saved["samples_seen"] == 4 * per_step and saved["processes"] == 1
    assert saved["params_total"] == saved["params_trainable"] == resumed.compute["params_total"] > 0


def test_training_flops_follow_the_six_n_t_rule() -> None:
    # every weight trained: 6 x 10 params x 3 tokens x 2 samples
    assert training_flops(10, 10, tokens_per_sample=3, samples=2) == 360.0
    # 4 of 10 trained: frozen weights skip their weight gradients, (4 x 10 + 2 x 4) x 3 x 2
    assert training_flops(10, 4, tokens_per_sample=3, samples=2) == 288.0
    # a frozen teacher's forward: 2 x 5 params x 7 tokens x 3 frames
    assert teacher_flops(5, tokens_per_frame=7, frames=3) == 210.0

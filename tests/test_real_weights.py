"""From a downloaded checkpoint to a portable, evaluated run (at tiny size, on real files).

A pi0 folder saved by transformers (weights, config, a real tokenizer) trains through
``rocket train --student_path``; the run folder carries the tokenizer, so it evaluates after
being moved with the original folder deleted. Student settings reach the student from the
command line; evaluation picks its device from ``--device``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from minivla_fixtures import make_episodes, single_thread
from test_faults import _write_dataset
from test_student_pi0 import _word_level_tokenizer

from rocket_vla.cli import main
from rocket_vla.errors import RocketError
from rocket_vla.policies.student import build_student, load_student


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", str(data), "--out_dir", str(out), "--student", "pi0",
            "--teacher", "random-tiny", "--teacher_size", "28", "--steps", "1", "--batch_size", "2",
            "--num_pairs", "2", "--projector_hidden", "16", "--progress", "false",
            "--tensorboard", "false", *extra]


def _observation(student) -> dict:
    g = torch.Generator().manual_seed(5)
    size = student.image_size
    return {"images": torch.rand(1, student.num_cameras, 3, size, size, generator=g),
            "proprio": torch.randn(1, 8, generator=g), "instructions": ["open the top drawer"],
            "noise": torch.randn(1, student.chunk, student.model.config.max_action_dim, generator=g)}


def test_a_moved_run_evaluates_without_its_student_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pretrained = tmp_path / "downloads" / "pi0"
    build_student("pi0", "tiny").model.save_pretrained(pretrained)
    _word_level_tokenizer().save_pretrained(pretrained)
    data = _write_dataset(tmp_path / "data", make_episodes(n=2, length=12))
    run = tmp_path / "runs" / "pi0"
    assert main(_train_args(data, run, "--student_path", str(pretrained),
                            "--student_config.max_text_len", "8")) == 0
    step = run / "checkpoints" / "step_000001"
    copied = sorted(p.name for p in (step / "student").iterdir())
    assert "tokenizer.json" in copied and "tokenizer_config.json" in copied
    student, _ = load_student(run)
    assert student.config.max_text_len == 8  # --student_config reached the student
    obs = _observation(student)
    before = student.predict(student.prepare(obs))
    ids_before = student.prepare(obs)["input_ids"]

    moved = tmp_path / "elsewhere" / "pi0"
    shutil.move(str(run), moved)
    shutil.rmtree(tmp_path / "downloads")
    again, saved = load_student(moved)
    assert saved["student"]["config"]["student_path"] == str(pretrained)  # as recorded
    assert torch.equal(again.prepare(obs)["input_ids"], ids_before)  # the same tokenizer
    assert torch.equal(again.predict(again.prepare(obs)), before)

    # a copied tokenizer file changed after saving is refused, not silently used
    tok = moved / "checkpoints" / "step_000001" / "student" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"drawer"', '"drawers"'))
    with pytest.raises(RocketError, match="is not the file saved with the checkpoint"):
        load_student(moved)


def test_student_config_flags_reach_the_student_and_typos_are_refused(tmp_path: Path, capsys) -> None:
    data = _write_dataset(tmp_path / "data", make_episodes(n=2, length=12))
    assert main(_train_args(data, tmp_path / "typo", "--student_config.max_txt_len", "8")) == 2
    err = capsys.readouterr().err
    assert "the pi0 student has no setting 'max_txt_len'; --student_config keys are" in err
    assert "max_text_len" in err and not (tmp_path / "typo" / "checkpoints").exists()
    assert main(_train_args(data, tmp_path / "ok", "--student_config.execute", "3")) == 0
    saved = json.loads((tmp_path / "ok" / "checkpoints" / "step_000001" / "config.json").read_text())
    assert saved["student"]["config"]["execute"] == 3
    assert saved["train"]["student_config"] == {"execute": 3}


def test_eval_device_is_resolved_once_and_contradictions_are_refused() -> None:
    from rocket_vla.envs.policy import factory_kwargs
    from rocket_vla.envs.runner import EvalConfig

    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert factory_kwargs("checkpoint", {}, "RUN", "auto")["device"] == here
    assert factory_kwargs("minivla", {}, "RUN", "cpu")["device"] == "cpu"
    assert "device" not in factory_kwargs("expert", {}, None, "auto")  # the expert has no model
    with pytest.raises(RocketError, match="contradicts --device"):
        factory_kwargs("checkpoint", {"device": "cuda"}, "RUN", "cpu")
    with pytest.raises(RocketError, match="unknown --device 'gpu'"):
        EvalConfig(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RocketError, match="torch sees no CUDA device"):
            factory_kwargs("checkpoint", {}, "RUN", "cuda")

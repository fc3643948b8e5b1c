"""End to end on the real simulator: collect one expert demo, train, evaluate closed-loop."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from minivla_fixtures import single_thread

from rocket_vla.cli import main

pytest.importorskip("libero.libero")
pytestmark = pytest.mark.libero


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_collect_train_evaluate(tmp_path, capsys) -> None:
    data, run, evals = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    assert main(["collect", "--suites", "libero_spatial", "--tasks", "0", "--init_states", "1",
                 "--frame_stride", "8", "--image_size", "64", "--depth", "false", "--workers", "1",
                 "--out_dir", str(data), "--quiet"]) == 0
    assert main(["train", "--dataset", str(data), "--out_dir", str(run), "--student_preset", "tiny",
                 "--variant", "baseline", "--steps", "80", "--batch_size", "8", "--lr", "3e-3",
                 "--log_every", "1", "--save_every", "80", "--progress", "false",
                 "--tensorboard", "false"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["action"] for r in rows[:5]) / 5
    last = sum(r["action"] for r in rows[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    capsys.readouterr()
    assert main(["eval", "--suites", "libero_spatial", "--tasks", "0", "--trials", "1",
                 "--policy", "checkpoint",
                 "--checkpoint", str(run), "--image_size", "64", "--max_steps", "16",
                 "--workers", "1", "--out_dir", str(evals), "--quiet"]) == 0
    episode = json.loads((evals / "episodes.jsonl").read_text().splitlines()[0])
    assert episode["task_id"] == 0 and episode["success"] in (True, False)

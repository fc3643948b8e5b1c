"""Several processes through Accelerate: `accelerate launch` of `rocket train` on the CPU (gloo).

Why `--multi_gpu` with ACCELERATE_USE_CPU: `accelerate launch --cpu` alone starts ONE process
(its simple launcher); `--multi_gpu` starts one per `--num_processes` through torchrun, and
ACCELERATE_USE_CPU=true makes every rank run on the CPU with the gloo backend (MULTI_CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from minivla_fixtures import make_episodes

from rocket_vla.train.loop import sample_order

BATCH, SEED = 2, 0
#: A tiny pi0 (transformers' PI0ForConditionalGeneration from a config), the paper's student.
STUDENT = ["--student", "pi0", "--student_preset", "tiny"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _train(args: list[str], processes: int, port: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    if processes > 1:
        bin_dir = Path(sys.executable).parent
        cmd = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "-m", "rocket_vla.cli", "train", *args]
    else:
        cmd = [sys.executable, "-m", "rocket_vla.cli", "train", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.timeout(240)
def test_two_cpu_processes_split_the_data_and_resume_with_one(tmp_path) -> None:
    from rocket_vla.data.episodes import Episode, EpisodeWriter

    writer = EpisodeWriter(tmp_path / "data")
    for i, e in enumerate(make_episodes(n=2, length=8)):
        writer.write(f"ep{i}", Episode(e.actions, e.obs, e.language, np.arange(8)))
    run = tmp_path / "run"
    args = ["--dataset", str(tmp_path / "data"), "--out_dir", str(run), *STUDENT,
            "--variant", "rocket", "--teacher", "random-tiny", "--batch_size", str(BATCH),
            "--save_every", "2", "--log_every", "1", "--progress", "false", "--tensorboard", "false",
            "--log_samples", "--seed", str(SEED)]
    out = _train([*args, "--steps", "2"], processes=2, port=29500 + os.getpid() % 1000)
    assert out.count("[rocket train]") == 1 and "2 process(es) (MULTI_CPU)" in out  # main rank only

    # Each rank took its own slice of the same global batch: disjoint, together the stream's
    # first 2 steps x 2 ranks x BATCH samples, in order.
    ranks = [_rows(run / "samples" / f"rank{r}.jsonl") for r in (0, 1)]
    stream = sample_order(16, SEED, 0, 2 * 2 * BATCH)
    for step in (0, 1):
        a, b = (rows[step]["indices"] for rows in ranks)
        assert not set(a) & set(b)
        assert a + b == stream[step * 2 * BATCH:(step + 1) * 2 * BATCH].tolist()

    # The checkpoint was written once, by the main process, and completely.
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000002"]
    assert (ckpts / "latest").read_text() == "step_000002"
    assert len(_rows(run / "metrics.jsonl")) == 2

    # Resume with ONE process: it continues the same data stream after the 8 samples used.
    _train([*args, "--steps", "3", "--resume", "auto"], processes=1, port=0)
    resumed = _rows(run / "samples" / "rank0.jsonl")[2:]
    assert [r["step"] for r in resumed] == [2] and resumed[0]["processes"] == 1
    assert resumed[0]["indices"] == sample_order(16, SEED, 8, BATCH).tolist()
    assert [r["step"] for r in _rows(run / "metrics.jsonl")] == [1, 2, 3]
    assert (ckpts / "latest").read_text() == "step_000003"
    import torch

    state = torch.load(ckpts / "step_000003" / "trainer_state.pt", weights_only=True)
    assert state["data_position"] == 8 + BATCH

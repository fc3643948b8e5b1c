"""`rocket profile ...` end to end on MiniVLA checkpoints written by the Trainer (no
training steps: the profiles only need a loadable checkpoint), plus bad-input errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rocket_vla.commands import profile
from rocket_vla.errors import RocketError


@dataclass
class _Episode:
    actions: np.ndarray
    obs: dict
    language: str


def _episodes(n: int = 3, steps: int = 6, size: int = 56) -> list[_Episode]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        obs = {
            "agentview_rgb": rng.integers(0, 255, (steps, size, size, 3), dtype=np.uint8),
            "eye_in_hand_rgb": rng.integers(0, 255, (steps, size, size, 3), dtype=np.uint8),
            "ee_pos": rng.normal(size=(steps, 3)).astype(np.float32),
            "ee_ori": rng.normal(size=(steps, 3)).astype(np.float32),
            "gripper_states": rng.normal(size=(steps, 2)).astype(np.float32),
        }
        out.append(_Episode(rng.normal(size=(steps, 7)).astype(np.float32), obs, "pick it up"))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("accelerate")
    from rocket_vla.train import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("runs")
    eps = _episodes()
    out = {}
    for variant in ("naive", "baseline"):
        cfg = TrainConfig(out_dir=str(root / variant), student_preset="tiny", variant=variant,
                          teacher="random-tiny", teacher_size=56, num_pairs=3, steps=1,
                          progress=False, tensorboard=False, projector_hidden=32)
        trainer = Trainer(cfg, episodes=eps)
        out[variant] = trainer.save(0)
    return out


@pytest.fixture(autouse=True)
def _in_memory_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's dataset path is fake; serve the same synthetic episodes instead."""
    eps = _episodes()
    monkeypatch.setattr("rocket_vla.train.loop.load_episodes", lambda path: eps)


def _run(argv: list[str]) -> int:
    assert argv[0] == "profile"
    return profile.main(argv[1:])


def test_profile_cka_writes_map_and_prints_pairs(runs: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["profile", "cka", "--checkpoint", str(runs["naive"]), "--samples", "12",
                 "--batch_size", "6", "--out_dir", str(tmp_path), "--progress", "false"]) == 0
    data = json.loads((tmp_path / "cka.json").read_text())
    assert (tmp_path / "cka.png").stat().st_size > 0
    assert len(data["debiased"]) == 4 and len(data["debiased"][0]) == 4  # blocks 1..4 x 1..4
    assert data["num_samples"] == 12 and data["num_batches"] == 2
    printed = capsys.readouterr().out
    mono = data["pairs"]["monotone"]
    flags = f"--student_layers [{','.join(map(str, mono['student_layers']))}]"
    assert flags in printed and "student_layers: [" in printed


def test_profile_grad_projector_importance_write_results(runs: dict[str, Path],
                                                         tmp_path: Path) -> None:
    ckpt = str(runs["naive"])
    assert _run(["profile", "grad", "--checkpoint", ckpt, "--batches", "2", "--batch_size", "4",
                 "--out_dir", str(tmp_path)]) == 0
    grad = json.loads((tmp_path / "grad.json").read_text())["checkpoints"][0]
    assert grad["names"][-1] == "action" and len(grad["cosine"]) == 4
    run_folder = str(runs["naive"].parent.parent)  # <out_dir>/checkpoints/step_000000
    assert _run(["profile", "grad", "--checkpoint", run_folder, "--all_steps", "--batches", "1",
                 "--batch_size", "4", "--out_dir", str(tmp_path / "all")]) == 0
    labels = [r["label"] for r in
              json.loads((tmp_path / "all" / "grad.json").read_text())["checkpoints"]]
    assert labels == ["naive@0"]
    assert _run(["profile", "grad", "--checkpoint", ckpt, "--params", "block", "--block", "0",
                 "--batches", "1", "--batch_size", "4", "--out_dir", str(tmp_path / "b")]) == 0
    assert _run(["profile", "projector", "--checkpoint", ckpt, "--samples", "8",
                 "--out_dir", str(tmp_path)]) == 0
    proj = json.loads((tmp_path / "projector.json").read_text())["checkpoints"][0]
    assert len(proj["fit"]) == 3 and (tmp_path / "projector_outputs.png").exists()
    assert _run(["profile", "importance", "--checkpoint", ckpt, "--samples", "8",
                 "--windows", "1,2", "--out_dir", str(tmp_path)]) == 0
    imp = json.loads((tmp_path / "importance.json").read_text())
    assert imp["windows"] == [1, 2] and imp["matrix"][3][1] is None
    assert (tmp_path / "importance.png").exists()


def test_bad_input_gives_one_sentence_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    naive, baseline = str(runs["naive"]), str(runs["baseline"])
    with pytest.raises(RocketError, match="student layer index 9 is out of range"):
        _run(["profile", "cka", "--checkpoint", naive, "--student_layers", "1,9",
              "--samples", "8", "--out_dir", str(tmp_path), "--progress", "false"])
    with pytest.raises(RocketError, match="teacher layer index -7 is out of range"):
        _run(["profile", "cka", "--checkpoint", naive, "--teacher_layers", "-7",
              "--samples", "8", "--out_dir", str(tmp_path), "--progress", "false"])
    with pytest.raises(RocketError, match="at least 4 samples"):
        _run(["profile", "cka", "--checkpoint", naive, "--samples", "3", "--out_dir", str(tmp_path)])
    with pytest.raises(RocketError, match="no projector"):
        _run(["profile", "projector", "--checkpoint", baseline, "--out_dir", str(tmp_path)])
    with pytest.raises(RocketError, match="without alignment"):
        _run(["profile", "grad", "--checkpoint", baseline, "--out_dir", str(tmp_path)])
    with pytest.raises(RocketError, match="both must be at least 1"):
        _run(["profile", "grad", "--checkpoint", naive, "--batches", "0", "--out_dir", str(tmp_path)])
    with pytest.raises(RocketError, match="raise --batch_size"):
        _run(["profile", "cka", "--checkpoint", naive, "--samples", "8", "--batch_size", "2",
              "--out_dir", str(tmp_path), "--progress", "false"])
    with pytest.raises(RocketError, match="no checkpoint found"):
        _run(["profile", "importance", "--checkpoint", str(tmp_path / "nope")])

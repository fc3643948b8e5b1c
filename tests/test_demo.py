"""`rocket demo --preset smoke`: every stage of the end-to-end demo on the real simulator, tiny sizes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from minivla_fixtures import single_thread

from rocket_vla.cli import main
from rocket_vla.demo import pipeline
from rocket_vla.demo.config import DemoConfig
from rocket_vla.errors import RocketError
from rocket_vla.pipeline import data as pipeline_data

pytest.importorskip("libero.libero")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.mark.libero
def test_smoke_demo_runs_every_stage_and_writes_the_report(tmp_path, capsys) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["demo", "--preset", "smoke", "--out_dir", str(run), "--cache_dir", str(cache)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["variants"]) == {"baseline", "rocket"}
    layers = summary["probe_layers"]
    assert layers, "the ROCKET run's aligned layers are probed"
    for variant, res in summary["variants"].items():
        suite = res["eval"]["suites"][0]
        assert suite["episodes"] == 1 and 0.0 <= suite["success_rate"] <= 1.0
        assert math.isfinite(res["action_l1"]) and res["action_l1"] >= 0
        assert {str(k) for k in layers} == set(res["probe"])
        assert all(math.isfinite(p["r2"]) for p in res["probe"].values())
        pairs = [row["pairs"] for row in map(json.loads, (run / "train" / variant / "metrics.jsonl")
                                             .read_text().splitlines())]
        assert all(p == [] for p in pairs) if variant == "baseline" else all(pairs)
    table = (run / "summary.md").read_text()
    assert "held-out action L1" in table and "spatial probe R^2" in table
    for name in summary["plots"]:
        assert (run / name).stat().st_size > 1000

    # The demo trained both variants at once, one process each; training them in turn in
    # this process gives bit-identical weights.
    import os

    from safetensors.torch import load_file

    assert ("at the same time" in capsys.readouterr().out) == ((os.cpu_count() or 1) >= 2)
    cfg = DemoConfig.preset("smoke", cache_dir=str(cache), parallel_train=False)
    train_dir = pipeline_data.dataset_dirs(cfg.data, cfg.cache_dir)[0]
    features = pipeline_data.cache_teacher(cfg.train.teacher, cfg.train.teacher_size, train_dir,
                                           cfg.data.image_size, log=lambda m: None)  # reused
    assert features is not None and features.parent == train_dir.parent
    seq = pipeline.train_all(cfg, train_dir, tmp_path / "seq", log=lambda m: None, teacher_cache=features)
    for variant, res in summary["variants"].items():
        a = load_file(f"{res['train']['checkpoint']}/model.safetensors")
        b = load_file(f"{seq[variant]['checkpoint']}/model.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_a_run_folder_holds_one_configuration(tmp_path) -> None:
    """Reruns reuse finished stages, so other settings in the same folder are refused before
    any work, and the folder is left as it was; run-only settings (workers) may differ."""
    from rocket_vla.demo.run import check_resumable, run_demo, run_identity

    run = tmp_path / "run"
    run.mkdir()
    saved = DemoConfig.preset("smoke", out_dir=str(run), cache_dir=str(tmp_path / "cache"))
    identity = run_identity(saved)
    assert identity["teacher_fingerprint"]  # the smoke preset aligns with the bundled teacher
    (run / "demo_config.json").write_text(json.dumps(identity))
    check_resumable(run, DemoConfig.preset("smoke", out_dir=str(run), workers=2))
    # a folder made with other teacher weights behind the same name is refused too
    other = run / "other"
    other.mkdir()
    (other / "demo_config.json").write_text(json.dumps({**identity, "teacher_fingerprint": "old"}))
    with pytest.raises(RocketError, match=r"other settings or code \(teacher_fingerprint\)"):
        check_resumable(other, DemoConfig.preset("smoke", out_dir=str(other)))
    with pytest.raises(RocketError, match=r"other settings or code \(train.seed, train.steps\)"):
        run_demo(DemoConfig.preset("smoke", out_dir=str(run), cache_dir=str(tmp_path / "cache"),
                                   train={"seed": 1, "steps": 9}))
    assert sorted(p.name for p in run.iterdir()) == ["demo_config.json", "other"]
    assert json.loads((run / "demo_config.json").read_text()) == identity
    assert not (tmp_path / "cache").exists()


def test_demo_presets_keep_evaluation_and_demonstrations_apart() -> None:
    for name in DemoConfig.PRESETS:
        cfg = DemoConfig.preset(name)
        assert cfg.data.demo_first_init >= cfg.eval_trials
    with pytest.raises(RocketError, match="do not overlap"):
        DemoConfig.preset("default", data={"demo_first_init": 3})
    with pytest.raises(RocketError, match="unknown demo preset"):
        DemoConfig.preset("huge")

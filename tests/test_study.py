"""`rocket reproduce` end to end at smoke size on the real LIBERO simulator: every stage runs,
a rerun reuses finished runs, and runs made by other code or another teacher are refused
(untouched) until ``--overwrite`` redoes exactly those."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from minivla_fixtures import single_thread

from rocket_vla.cli import main

pytest.importorskip("libero.libero")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.libero
def test_smoke_study_runs_resumes_and_refuses_stale_runs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "study"
    argv = ["reproduce", "--preset", "smoke", "--out_dir", str(out), "--cache_dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["variants"]) == ["baseline", "rocket"]
    assert results["curve_steps"] == [2, 4] and results["init_states"]["evaluated"] == [0, 0]
    for row in results["variants"].values():
        assert row["final"]["trials"] == 2 and row["final"]["seeds"] == 2  # 1 task x 1 trial x 2 seeds
        assert set(row["curve"]) == {"2", "4"} and set(row["per_seed"]) == {"0", "1"}
        assert 0.0 <= row["final"]["mean"] <= 1.0 and row["action_l1"]["mean"] > 0
    assert results["grad"]["checkpoints"][0]["label"].startswith("rocket")
    report = (out / "report.md").read_text()
    assert "Evaluated split: **test**" in report and "| rocket |" in report
    for name in ("success.png", "curves.png", "grad/grad.png"):
        assert (out / name).stat().st_size > 1000

    # A rerun reuses every finished run: no result is rewritten.
    results_before = {p: p.stat().st_mtime_ns for p in out.rglob("result-*.json")}
    capsys.readouterr()
    assert main(argv) == 0
    assert "4 runs (2 variants x 2 seeds), 4 already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result-*.json")} == results_before

    # A run made by other code is refused, naming the fix, and left as it was.
    stale = out / "runs" / "rocket-seed1"
    identity = json.loads((stale / "identity.json").read_text())
    identity["code"]["source"] = "made-by-other-code"
    (stale / "identity.json").write_text(json.dumps(identity))
    before = _snapshot(stale)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "rocket-seed1" in err and "rocket-vla code" in err and "--overwrite" in err
    assert _snapshot(stale) == before
    # So is a run whose teacher differs (the baseline, which has none, still matches).
    assert main([*argv, "--teacher", "random-tiny"]) == 2
    assert "rocket-seed0" in capsys.readouterr().err

    # --overwrite redoes exactly the stale run.
    others = {p: p.stat().st_mtime_ns for p in out.rglob("result-*.json") if stale not in p.parents}
    assert main([*argv, "--overwrite"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result-*.json") if stale not in p.parents} == others
    assert json.loads((stale / "identity.json").read_text())["code"]["source"] != "made-by-other-code"

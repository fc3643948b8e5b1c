"""`rocket reproduce` end to end at smoke size on the real LIBERO simulator: the budget search
on validation states, training, test evaluation along each run, the control and the report run;
a rerun reuses finished runs, and a run made by other code is refused
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
    # the budget was searched on the validation state (init state 1) before any test episode
    budget = json.loads((out / "budget.json").read_text())
    assert [c["step"] for c in budget["checks"]] == [2, 4] and budget["budget"] == 4
    assert all(c["trials"] == 1 for c in budget["checks"])
    assert sorted(p.name for p in (out / "runs" / "baseline-seed0" / "eval").iterdir()) == [
        "test-from0-t1-step2", "test-from0-t1-step4",
        "validation-from1-t1-step2", "validation-from1-t1-step4"]
    assert results["points"] == [2, 4] and results["init_states"]["validation"] == [1, 1]
    summary = results["compute"]["samples"]
    assert list(summary["variants"]) == ["baseline", "rocket"]
    for row in summary["variants"].values():
        curve = row["curve"]["0"]
        assert [p["compute"] for p in curve] == [8.0, 16.0]  # samples seen: steps x batch 4
    run = json.loads((out / "runs" / "rocket-seed0" / "result-test-t1-2-4.json").read_text())
    assert [p["samples"] for p in run["points"]] == [8, 16] and run["points"][-1]["cpu_s"] > 0
    assert run["action_l1"] > 0 and results["variants"]["rocket"]["per_seed"] == {"0": list(
        (run["points"][-1]["successes"], 1))}
    assert results["control"]["teacher"] == "random-tiny" and results["control"]["converged"]["trials"] == 1
    assert results["grad"]["checkpoints"][0]["label"].startswith("rocket")
    report = (out / "report.md").read_text()
    assert "**Budget: 4 steps**" in report and "| rocket |" in report and "**Control**" in report
    for name in ("success_vs_samples.png", "grad/grad.png"):
        assert (out / name).stat().st_size > 1000

    # A rerun reuses everything: no result, checkpoint or budget record is rewritten.
    kept = {p: p.stat().st_mtime_ns for p in [*out.rglob("result-*.json"), *out.rglob("model.safetensors"),
                                              out / "budget.json"]}
    capsys.readouterr()
    assert main(argv) == 0
    assert "budget search: step" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in kept} == kept

    # A run made by other code is refused, naming the fix, and left as it was.
    stale = out / "runs" / "rocket-seed0"
    identity = json.loads((stale / "identity.json").read_text())
    identity["code"]["source"] = "made-by-other-code"
    (stale / "identity.json").write_text(json.dumps(identity))
    before = _snapshot(stale)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "rocket-seed0" in err and "rocket-vla code" in err and "--overwrite" in err
    assert _snapshot(stale) == before

    # --overwrite redoes exactly the stale run.
    others = {p: p.stat().st_mtime_ns for p in out.rglob("result-*.json") if stale not in p.parents}
    assert main([*argv, "--overwrite"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result-*.json") if stale not in p.parents} == others
    assert json.loads((stale / "identity.json").read_text())["code"]["source"] != "made-by-other-code"

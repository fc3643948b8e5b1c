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


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, dict]:
    """One uninterrupted smoke study (shared: it is the costliest case of the suite): its
    command line, its cache and the results it wrote before any test changed its folder."""
    root = tmp_path_factory.mktemp("smoke")
    out = root / "study"
    argv = ["reproduce", "--preset", "smoke", "--out_dir", str(out), "--cache_dir", str(root / "cache")]
    with single_thread():
        assert main(argv) == 0
    return argv, root / "cache", json.loads((out / "results.json").read_text())


@pytest.mark.libero
def test_smoke_study_runs_resumes_and_refuses_stale_runs(smoke_study, capsys) -> None:
    argv, _, results = smoke_study
    out = Path(argv[argv.index("--out_dir") + 1])
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

    # A run trained on other CPU kernels is refused, naming run.sh's pin, and left as it was.
    stale = out / "runs" / "rocket-seed0"
    identity = json.loads((stale / "identity.json").read_text())
    kernels = {**identity["code"]["kernels"], "aten": "AVX9"}
    moved = {**identity, "code": {**identity["code"], "kernels": kernels}}
    (stale / "identity.json").write_text(json.dumps(moved))
    before = _snapshot(stale)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "rocket-seed0" in err and "other CPU kernels" in err and "AVX9" in err and "./run.sh" in err
    assert _snapshot(stale) == before

    # A run made by other code is refused, naming the fix, and left as it was.
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


def _records_script():
    """benchmarks/study_records.py, loaded by path (benchmarks/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "study_records.py"
    spec = importlib.util.spec_from_file_location("study_records", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.libero
def test_a_study_split_by_only_and_carried_without_checkpoints_finishes_the_same(
        smoke_study, tmp_path: Path, capsys) -> None:
    """Session one runs only ROCKET seed 0; its records (no checkpoint) go to a new folder on
    a "new machine" (an empty cache: the demonstrations are collected again), where the rest
    finishes without retraining ROCKET; the results equal those of one uninterrupted study."""
    records = _records_script()
    _, cache, want = smoke_study
    base = ["reproduce", "--preset", "smoke"]
    first = tmp_path / "first"
    assert main([*base, "--out_dir", str(first), "--cache_dir", str(cache), "--only", "[rocket-seed0]"]) == 0
    out = capsys.readouterr().out
    assert "still to do baseline-seed0, rocket-random-tiny-seed0" in out and "--only" in out
    assert not (first / "report.md").exists()
    assert not (first / "runs" / "rocket-random-tiny-seed0" / "train").exists()
    assert (first / "grad" / "record.json").is_file()  # made while ROCKET's checkpoint was there

    saved = tmp_path / "saved"
    assert records.main(["save", str(first), str(saved)]) == 0
    assert not [p for p in saved.rglob("*") if p.suffix in (".safetensors", ".pt", ".hdf5")]
    second = tmp_path / "second"
    assert records.main(["restore", str(saved), str(second)]) == 0
    assert main([*base, "--out_dir", str(second), "--cache_dir", str(tmp_path / "cache2")]) == 0
    assert not (second / "runs" / "rocket-seed0" / "train").exists()  # reused, not retrained
    got = json.loads((second / "results.json").read_text())
    for key in ("variants", "control", "points"):
        assert got[key] == want[key]
    assert got["grad"]["checkpoints"][0]["cosine"] == want["grad"]["checkpoints"][0]["cosine"]

    # Restoring onto other records is refused, naming the file, and changes nothing.
    identity = saved / "rocket-seed0" / "identity.json"
    identity.write_text(identity.read_text().replace('"seed": 0', '"seed": 0, "edited": 1', 1))
    before = _snapshot(second)
    with pytest.raises(SystemExit, match="identity.json already holds another record"):
        records.main(["restore", str(saved), str(second)])
    assert _snapshot(second) == before
    # An --only naming no run is refused before any work.
    assert main([*base, "--out_dir", str(tmp_path / "x"), "--cache_dir", str(cache),
                 "--only", "[rocket-seed7]"]) == 2
    assert "--only names no run of this study: rocket-seed7" in capsys.readouterr().err
    assert not (tmp_path / "x" / "runs").exists()

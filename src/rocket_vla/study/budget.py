"""The study's training budget, found on the validation init states before any test evaluation.

Why a search: the paper's comparison is against a baseline trained until it stops improving,
and how long that takes on this data is not known in advance. The first seed's baseline is
trained ``check_every`` steps at a time (one run, resumed; the schedule is constant, so this
is the same run as one trained straight to the end) and evaluated on the validation states
after each chunk, until :func:`~rocket_vla.study.convergence.budget_reached` says its success
stopped rising, or ``max_budget``. Every check is recorded in ``budget.json`` as it finishes,
so a stopped search resumes where it was; the record carries the identity of what it was
found with and is redone (or refused) when that changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError
from rocket_vla.pipeline.log import Log
from rocket_vla.records import write_json_atomic
from rocket_vla.study.config import StudyConfig
from rocket_vla.study.convergence import budget_reached
from rocket_vla.study.runs import changes, saved_identity

BUDGET_FILE = "budget.json"


def budget_identity(cfg: StudyConfig, run_identity: dict[str, Any]) -> dict[str, Any]:
    """What the search's answer depends on: the searching run's identity and the rule's
    settings (the validation states included)."""
    return {"run": run_identity, "val_first": cfg.eval_trials, "val_trials": cfg.val_trials,
            "check_every": cfg.check_every, "patience": cfg.patience, "min_gain": cfg.min_gain,
            "max_budget": cfg.max_budget}


def _load(path: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """What a previous search of the same identity recorded (its checks, and its budget once
    it finished); an empty record for a new search."""
    old = saved_identity(path)
    if old is None:
        return {}
    if old.get("identity") == identity:
        return old
    if not overwrite:
        differing = ", ".join(changes(old.get("identity") or {}, identity)) or "an unreadable record"
        raise RocketError(f"{path} was found with other settings ({differing}); pass --overwrite true "
                          "to search the budget again, or use a new --out_dir.")
    return {}


def find_budget(cfg: StudyConfig, identity: dict[str, Any], train_to: Callable[[int], None],
                validate_at: Callable[[int], tuple[int, int]], log: Log) -> dict[str, Any]:
    """Search (or resume the search for) the budget; returns the record written to
    ``budget.json``: ``{"identity", "checks": [{"step", "successes", "trials"}], "budget",
    "reason"}``.

    ``train_to(step)`` trains the searching run to ``step``; ``validate_at(step)`` evaluates
    its checkpoint there on the validation states and returns ``(successes, trials)``."""
    path = Path(cfg.out_dir) / BUDGET_FILE
    old = _load(path, identity, cfg.overwrite)
    if old.get("budget") is not None:
        return old
    checks = list(old.get("checks", []))
    last = cfg.max_budget // cfg.check_every * cfg.check_every  # the last checkpoint step allowed
    while True:
        rates = [c["successes"] / c["trials"] for c in checks]
        step = checks[-1]["step"] if checks else 0
        if checks and budget_reached(rates, cfg.patience, cfg.min_gain):
            reason = (f"validation success did not rise by more than {cfg.min_gain:.2f} in "
                      f"{cfg.patience} checks")
            break
        if step >= last:
            reason = f"max_budget {cfg.max_budget} reached while validation success was still rising"
            break
        step += cfg.check_every
        train_to(step)
        successes, trials = validate_at(step)
        checks.append({"step": step, "successes": successes, "trials": trials})
        log(f"budget search: step {step}, validation success {successes}/{trials}")
        write_json_atomic(path, {"identity": identity, "checks": checks, "budget": None})
    record = {"identity": identity, "checks": checks, "budget": step, "reason": reason}
    write_json_atomic(path, record)
    log(f"budget: {step} steps ({reason})")
    return record

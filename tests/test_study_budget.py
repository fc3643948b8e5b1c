"""The budget search: it stops by the rule on validation success, resumes a stopped search from
its record, reuses a finished one and refuses (untouched) a record of other settings. The run
being trained and evaluated is replaced by a scripted validation curve; the search, its record
and the rule are the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rocket_vla.errors import RocketError
from rocket_vla.study.budget import find_budget
from rocket_vla.study.config import StudyConfig


class Curve:
    """Validation successes (of 10 trials) by step; records what the search asked for."""

    def __init__(self, successes: dict[int, int], fail_at: int | None = None) -> None:
        self.successes, self.fail_at = successes, fail_at
        self.trained: list[int] = []
        self.validated: list[int] = []

    def train_to(self, step: int) -> None:
        self.trained.append(step)

    def validate_at(self, step: int) -> tuple[int, int]:
        if step == self.fail_at:
            raise KeyboardInterrupt  # the search is stopped mid-way
        self.validated.append(step)
        return self.successes[step], 10


def _cfg(tmp_path: Path, **overrides) -> StudyConfig:
    values = dict(out_dir=str(tmp_path / "study"), check_every=100, patience=2, min_gain=0.05,
                  max_budget=1000)
    values.update(overrides)
    return StudyConfig(**values)


RISING_THEN_FLAT = {100: 0, 200: 3, 300: 6, 400: 7, 500: 7, 600: 6, 700: 9}


def test_the_search_stops_when_validation_success_stops_rising(tmp_path: Path) -> None:
    curve = Curve(RISING_THEN_FLAT)
    record = find_budget(_cfg(tmp_path), {"id": 1}, curve.train_to, curve.validate_at, log=print)
    # after 600 the last two checks (0.7, 0.6) do not beat the best before them (0.7) by > 0.05
    assert record["budget"] == 600 and curve.trained == [100, 200, 300, 400, 500, 600]
    assert json.loads((tmp_path / "study" / "budget.json").read_text()) == record


def test_max_budget_ends_a_search_that_is_still_rising(tmp_path: Path) -> None:
    curve = Curve({100 * k: k for k in range(1, 11)})
    record = find_budget(_cfg(tmp_path, max_budget=450), {"id": 1}, curve.train_to, curve.validate_at,
                         log=print)
    assert record["budget"] == 400 and "still rising" in record["reason"]


@pytest.mark.fault("survived")
def test_a_stopped_search_resumes_and_a_finished_one_is_reused(tmp_path: Path) -> None:
    first = Curve(RISING_THEN_FLAT, fail_at=300)
    with pytest.raises(KeyboardInterrupt):
        find_budget(_cfg(tmp_path), {"id": 1}, first.train_to, first.validate_at, log=print)
    saved = json.loads((tmp_path / "study" / "budget.json").read_text())
    assert [c["step"] for c in saved["checks"]] == [100, 200] and saved["budget"] is None
    again = Curve(RISING_THEN_FLAT)
    record = find_budget(_cfg(tmp_path), {"id": 1}, again.train_to, again.validate_at, log=print)
    assert again.validated[0] == 300  # the recorded checks are not redone
    straight = Curve(RISING_THEN_FLAT)
    other = tmp_path / "straight"
    assert find_budget(_cfg(other), {"id": 1}, straight.train_to, straight.validate_at,
                       log=print)["checks"] == record["checks"]
    reused = Curve(RISING_THEN_FLAT)
    assert find_budget(_cfg(tmp_path), {"id": 1}, reused.train_to, reused.validate_at, log=print) == record
    assert reused.trained == [] and reused.validated == []


@pytest.mark.fault("refused")
def test_a_record_of_other_settings_is_refused_untouched_and_redone_on_overwrite(tmp_path: Path) -> None:
    curve = Curve(RISING_THEN_FLAT)
    find_budget(_cfg(tmp_path), {"id": 1}, curve.train_to, curve.validate_at, log=print)
    path = tmp_path / "study" / "budget.json"
    before = path.read_bytes()
    with pytest.raises(RocketError, match=r"found with other settings \(id\); pass --overwrite true"):
        find_budget(_cfg(tmp_path), {"id": 2}, curve.train_to, curve.validate_at, log=print)
    assert path.read_bytes() == before
    redo = Curve(RISING_THEN_FLAT)
    record = find_budget(_cfg(tmp_path, overwrite=True), {"id": 2}, redo.train_to, redo.validate_at,
                         log=print)
    assert record["identity"] == {"id": 2} and redo.validated[0] == 100


@pytest.mark.fault("refused")
@pytest.mark.parametrize("overrides,message", [
    (dict(train={"schedule": "step"}), "use --train.schedule constant"),
    (dict(data={"demo_first_init": 26}), r"trained on init states 40-49 of libero_spatial, which the "
                                         r"demonstrations 26-47 overlap"),
    (dict(variants=["rocket"]), "add baseline to --variants"),
    (dict(max_budget=100, check_every=500), "raise --max_budget"),
    (dict(levels=[0.0]), "levels are fractions"),
])
def test_study_settings_that_would_mislead_are_refused(overrides: dict, message: str) -> None:
    """A schedule that depends on the run's length (checkpoints along a run would not be runs
    stopped there), held-out demonstrations the teacher was trained on, no baseline to compare
    with: each is refused with one sentence naming the fix."""
    with pytest.raises(RocketError, match=message):
        StudyConfig.preset("default", **overrides)


def test_the_default_layout_keeps_every_split_apart() -> None:
    """Test 0-7, validation 8-17, demonstrations 18-39 (held out: 38-39), the tiny teacher's
    own states 40-49: pairwise disjoint."""
    cfg = StudyConfig.preset("default")
    data = cfg.data
    test = set(range(cfg.eval_trials))
    val = set(range(cfg.eval_trials, cfg.eval_trials + cfg.val_trials))
    demos = set(range(data.demo_first_init, data.demo_first_init + data.train_demos + data.heldout_demos))
    teacher = set(range(40, 50))
    assert not (test & val or test & demos or val & demos or demos & teacher)
    assert max(demos) == 39

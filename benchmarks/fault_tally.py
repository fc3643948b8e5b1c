"""The tally of a full fault pass: every fault case run, counted by verdict and outcome.

Each fault case (most in ``tests/test_faults*.py``, the rest beside the feature they test)
carries ``@pytest.mark.fault("refused")`` (the fault must be refused with one clear sentence)
or ``@pytest.mark.fault("survived")`` (the run must end with the right result and nothing
lost). A case whose test fails did not reach
its verdict: it is listed as open, with the test's name, so the tally never hides one.
Parametrised cases count once per parameter set (each is a distinct bad input).

Run:  python benchmarks/fault_tally.py [--no-libero] [pytest args...]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Tally:
    """A pytest plugin that records (verdict, outcome) for every test marked ``fault``."""

    def __init__(self) -> None:
        self.cases: dict[str, tuple[str, str]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):  # noqa: ARG002
        report = (yield).get_result()
        marker = item.get_closest_marker("fault")
        if marker is None:
            return
        verdict = marker.args[0]
        # setup, call and teardown each report: a failure anywhere wins, then a skip
        rank = {"passed": 0, "skipped": 1, "failed": 2}
        outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
        previous = self.cases.get(item.nodeid, (verdict, "passed"))[1]
        self.cases[item.nodeid] = (verdict, max(previous, outcome, key=rank.__getitem__))

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-libero", action="store_true", help="leave out the real-simulator cases")
    args, extra = parser.parse_known_args()
    # every test marked ``fault``, wherever it lives (most are in tests/test_faults*.py)
    select = "fault and not libero" if args.no_libero else "fault"
    pytest_args = ["-q", "-p", "no:cacheprovider", str(ROOT / "tests"), "-m", select, *extra]
    tally = Tally()
    code = pytest.main(pytest_args, plugins=[tally])
    counts = Counter(tally.cases.values())
    refused = counts[("refused", "passed")]
    survived = counts[("survived", "passed")]
    skipped = sum(n for (_, o), n in counts.items() if o == "skipped")
    open_cases = sorted(node for node, (_, o) in tally.cases.items() if o == "failed")
    print("\n| cases | refused clearly | survived | open (test failed) | skipped |")
    print("|---|---|---|---|---|")
    print(f"| {len(tally.cases)} | {refused} | {survived} | {len(open_cases)} | {skipped} |")
    for node in open_cases:
        print(f"open: {node}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

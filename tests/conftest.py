"""Shared test settings: deterministic, single-threaded torch for stable timings on CI."""

import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


FAULT_VERDICTS = ("refused", "survived")


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ARG001
    """A fault case must say which verdict it proves, so the fault tally cannot miscount it."""
    for item in items:
        marker = item.get_closest_marker("fault")
        if marker is not None and (len(marker.args) != 1 or marker.args[0] not in FAULT_VERDICTS):
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.fault takes one of {FAULT_VERDICTS}")

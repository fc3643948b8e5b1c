"""The CPU kernel path is recorded with the code, pinned by run.sh, and a resume on another
path is refused like one by other code (src/rocket_vla/kernels.py says why)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import check_same_code, compared_code_version
from rocket_vla.kernels import PINNED, cpu_kernels


def _kernels_in_child(env: dict[str, str]) -> dict:
    """``cpu_kernels()`` of a fresh interpreter (ATen reads its variable once per process)."""
    code = "import json; from rocket_vla.kernels import cpu_kernels; print(json.dumps(cpu_kernels()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pin is an x86 instruction set")
def test_the_pinned_variables_select_avx2_kernels() -> None:
    """With run.sh's three variables, torch itself reports AVX2 kernels, whatever the CPU
    offers beyond; the record names MKL's and oneDNN's settings."""
    base = {k: v for k, v in os.environ.items() if k not in PINNED}
    pinned = _kernels_in_child({**base, **PINNED})
    assert pinned == {"torch": cpu_kernels()["torch"], "aten": "AVX2", "mkl_cbwr": "AVX2",
                      "onednn_isa": "AVX2"}
    free = _kernels_in_child(base)
    assert free["mkl_cbwr"] is None and free["onednn_isa"] is None and free["aten"] in ("AVX2", "AVX512")


def test_code_version_records_the_kernels_and_compares_them() -> None:
    recorded = compared_code_version()
    assert recorded["kernels"] == cpu_kernels()
    check_same_code(json.loads(json.dumps(recorded)), "the run folder runs/x", "use a new folder.")
    other = {**recorded, "kernels": {**recorded["kernels"], "aten": "SOME_OTHER"}}
    pattern = (r"runs/x was computed on other CPU kernels .*'SOME_OTHER'.*"
               r"\./run\.sh.*ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2.*use a new folder")
    with pytest.raises(RocketError, match=pattern):
        check_same_code(other, "the run folder runs/x", "use a new folder.")
    older = {k: v for k, v in recorded.items() if k != "kernels"}  # recorded before kernels were
    with pytest.raises(RocketError, match="computed on other CPU kernels"):
        check_same_code(older, "the run folder runs/x", "use a new folder.")
    both = {**other, "source": "0" * 24}
    with pytest.raises(RocketError, match=r"made by other rocket-vla code \(source .*kernels"):
        check_same_code(both, "the run folder runs/x", "use a new folder.")

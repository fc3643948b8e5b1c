"""Which CPU kernels compute a run, and the pinned choice that makes runs equal across machines.

On a CPU, torch picks its kernels by the instruction set it finds: ATen's vectorised ops
(AVX2 or AVX512), MKL's BLAS (its own dispatch) and oneDNN's convolutions and matmuls (up
to AVX512 and AMX). The kernels round differently, so the same training on an AVX512 machine
and on an AVX2 machine ends with other weights (retraining the study's baseline for 500 steps
with ATen forced to AVX2 moved weights by up to 0.19 -- docs/results.md), and closed-loop
success, which amplifies any difference, follows. Within one kernel path a run is
bit-for-bit deterministic.

So ``run.sh`` pins all three to AVX2 (:data:`PINNED`), the newest path every x86 machine
of the last decade has, and :func:`cpu_kernels` is part of every run folder's code record
(:mod:`rocket_vla.fingerprint`): a resume on another kernel path is refused like a resume
by other code, instead of mixing two numerics in one run.
"""

from __future__ import annotations

import os
from typing import Any

#: What ``run.sh`` exports (unless already set): one kernel path on every x86 CPU.
PINNED: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PIN_FIX = ("run through ./run.sh, which pins the CPU kernels (" +
           " ".join(f"{k}={v}" for k, v in PINNED.items()) + "), or export the same variables")


def cpu_kernels() -> dict[str, Any]:
    """The kernel path this process computes with: torch's version, ATen's CPU capability
    as torch reports it, and the MKL and oneDNN settings (None: the library's own choice,
    which depends on the machine)."""
    import torch

    return {"torch": torch.__version__, "aten": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR") or None,
            "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or None}


def pinned() -> bool:
    """Whether this process runs on :data:`PINNED` (ATen as reported, the others as set)."""
    now = cpu_kernels()
    return (now["aten"] == PINNED["ATEN_CPU_CAPABILITY"].upper() and now["mkl_cbwr"] == PINNED["MKL_CBWR"]
            and now["onednn_isa"] == PINNED["ONEDNN_MAX_CPU_ISA"])


def kernel_line() -> str:
    """One log line: the kernel path, and what a run on it is comparable with."""
    k = cpu_kernels()
    line = (f"CPU kernels: torch {k['torch']}, ATen {k['aten']}, MKL_CBWR={k['mkl_cbwr']}, "
            f"ONEDNN_MAX_CPU_ISA={k['onednn_isa']}")
    if pinned():
        return line + " (pinned, as run.sh sets it on every x86 CPU)"
    return line + f" -- NOT the pinned path; runs compare only with runs on this kind of CPU ({PIN_FIX})"

#!/usr/bin/env bash
# One GPU session's checks for issue 13 (pi0 at its default size on one GPU), also runnable
# on a CPU at tiny size as a dry run:  bash benchmarks/gpu_pi0.sh OUT_DIR [cpu]
#   1. the CUDA sync-debug and compile tests of the ROCKET hot path (tests/test_align_perf.py);
#   2. benchmarks/train_step.py --student pi0: baseline vs cached ROCKET vs live VGGT-1B at
#      224 and 518 px, with the overhead breakdown (JSON + markdown tables in OUT_DIR).
set -uo pipefail
out="${1:?usage: gpu_pi0.sh OUT_DIR [cpu]}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
if [ "${2:-cuda}" = "cpu" ]; then
  args=(--size tiny --device cpu --rounds 2 --steps 1 --part-repeats 2)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  args=(--size default --device cuda --rounds 9 --steps 2 --part-repeats 10)
fi
"$py" -m pytest -q -p no:cacheprovider tests/test_align_perf.py 2>&1 | tail -5 | tee "$out/tests.txt"
"$py" benchmarks/train_step.py --student pi0 "${args[@]}" --json "$out/pi0_step.json" 2>&1 \
  | tee "$out/pi0_step.txt"

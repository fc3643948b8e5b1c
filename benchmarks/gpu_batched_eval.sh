#!/usr/bin/env bash
# One GPU session's check of batched evaluation: pi0 at its default size (bf16, random
# weights) in the main process serving 1, 4, 8 and 14 LIBERO simulator workers; episodes/min,
# the 2,000-episode projection and peak GPU memory (JSON + markdown in OUT_DIR).
# Dry run on a CPU at tiny size (1 and 2 workers, 2 short episodes each):
#   bash benchmarks/gpu_batched_eval.sh OUT_DIR cpu
set -uo pipefail
out="${1:?usage: gpu_batched_eval.sh OUT_DIR [cpu]}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
py="${PYTHON:-python3}"
if [ "${2:-cuda}" = "cpu" ]; then
  args=(--size tiny --device cpu --workers 1,2 --episodes 2,2 --tasks 1 --max_steps 8 --image_size 64)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  args=(--size default --device cuda --workers "${WORKERS:-1,4,8,14}" --episodes "${EPISODES:-8,24,48,200}")
fi
"$py" benchmarks/batched_eval.py gpu --out "$out" "${args[@]}" 2>&1 | tee "$out/batched_eval.txt"
exit "${PIPESTATUS[0]}"

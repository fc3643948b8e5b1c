#!/usr/bin/env bash
# One entry point that creates its own environment, then runs a job in it.
#   ./run.sh demo [args]   the offline end-to-end job (default arguments embedded)
#   ./run.sh test [args]   the test suite (pytest) and ruff
#   ./run.sh rocket ...    any `rocket` command inside the environment
set -euo pipefail
cd "$(dirname "$0")"
VENV="${ROCKET_VENV:-.venv}"
PY="${PYTHON:-python3}"
stamp="$VENV/.rocket-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "[run.sh] creating the environment in $VENV (first run only)" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[all,dev]"
  touch "$stamp"
fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"
# One CPU kernel path on every x86 machine (src/rocket_vla/kernels.py): torch's AVX512 and
# AVX2 kernels round differently, so the same run trained on two CPUs would differ.
if [ "$(uname -m)" = x86_64 ]; then
  export ATEN_CPU_CAPABILITY="${ATEN_CPU_CAPABILITY:-avx2}" MKL_CBWR="${MKL_CBWR:-AVX2}"
  export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"
  # torch.compile's on-disk cache does not tell the two paths apart: kernels it compiled
  # unpinned are reused pinned and return NaN, so the pinned path keeps its own cache.
  export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/torchinductor_$(id -un)_$ATEN_CPU_CAPABILITY}"
fi
job="${1:-demo}"; shift || true
case "$job" in
  test)
    "$VENV/bin/ruff" check src tests benchmarks
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  demo)
    exec "$VENV/bin/rocket" demo "$@" ;;
  rocket)
    exec "$VENV/bin/rocket" "$@" ;;
  *)
    echo "usage: ./run.sh {demo|test|rocket} [args]" >&2; exit 2 ;;
esac

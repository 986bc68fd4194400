#!/usr/bin/env bash
# The GPU check of issue 18 (benchmarks/gpu_check.py: its docstring has the method and the time plan).
#   bash benchmarks/gpu_check.sh                 # on one H100/H200, ~6.5 min; "no GPU: skipped" elsewhere
#   bash benchmarks/gpu_check.sh --dry-run-cpu   # every step at toy size on the CPU (~1 min on 2 cores)
# Runs the project's venv (.venv/bin/python; SKD_TUNE_PYTHON names another, python3 where there is no
# venv) on skd_tune from this checkout; downloads nothing. Writes benchmarks/out/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${SKD_TUNE_PYTHON:-.venv/bin/python}"
if [[ -z "${SKD_TUNE_PYTHON:-}" && ! -x "$python" ]]; then
    python=python3
    echo "gpu_check.sh: no .venv here, using $(command -v python3)" >&2
fi
exec "$python" benchmarks/gpu_check.py "$@"

"""benchmarks/gpu_check.sh --dry-run-cpu: every step of the GPU check at toy size on the CPU, so the script
(run for real only on a GPU machine) cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = ("data", "teacher", "student", "trials", "packed", "search")


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "SKD_TUNE_PYTHON": sys.executable, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run-cpu", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    payload = json.loads(out.read_text())
    assert payload["dry_run_cpu"] is True and payload["complete"] is True, payload.get("errors")
    assert set(STEPS) <= set(payload["elapsed_s"])
    figures = payload["summary"]
    missing = [k for k, v in figures.items() if not (isinstance(v, (int, float)) and v > 0)]
    assert not missing, f"figures missing or not positive: {missing}\n{proc.stdout[-3000:]}"
    for key in payload["targets"]:
        assert key in figures
    for key in ("teacher_trial_over_bare", "student_trial_over_bare", "packed_over_one_per_gpu", "search_wall_s"):
        assert key in figures
    assert "packed_over_one_per_gpu" in proc.stdout  # the table was printed

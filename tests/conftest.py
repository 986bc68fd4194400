"""Shared fixtures: tiny specs written to disk and the CLI run as a real subprocess."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# A digits search small enough for a test: seconds of training, the real Ray/Optuna/Parquet path.
TINY_SPEC = {
    "name": "tiny",
    "storage": "runs",
    "seed": 0,
    "data": {"source": "digits"},
    "teacher": {"model": "cnn_small", "epochs": 3, "batch_size": 128, "lr": 3e-3, "resources": {"cpu": 1}},
    "student": {"model": "mlp_tiny", "epochs": 3, "batch_size": 128, "lr": 1e-2, "resources": {"cpu": 1}},
    "search": {
        "metric": "val_f1",
        "mode": "max",
        "num_samples": 4,
        "max_concurrent": 2,
        "sampler": "tpe",
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "space": {
            "temperature": {"loguniform": [1.0, 10.0]},
            "w_skd": {"uniform": [0.0, 1.0]},
            "w_kd": {"uniform": [0.0, 1.0]},
            "lr": {"loguniform": [3e-3, 3e-2]},
        },
    },
    "methods": {"seeds": 0},  # no method table unless a test asks for one (it retrains 3 x seeds students)
}


def deep_update(base: dict, changes: dict) -> dict:
    """`base` with `changes` merged in, key by key; a `space` given in `changes` replaces the whole space."""
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space":
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


@pytest.fixture
def write_spec(tmp_path):
    """write_spec(changes=None, name="spec.yaml") -> path of a YAML spec (TINY_SPEC updated with `changes`)."""

    def _write(changes: dict | None = None, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(deep_update(TINY_SPEC, changes or {}), sort_keys=False))
        return path

    return _write


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`skd-tune ARGS` as a user runs it, in `cwd`; returns the completed process (text output)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "skd_tune", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_spec(cwd: Path, raw: dict) -> tuple[Path, subprocess.CompletedProcess]:
    """Write the spec `raw` into `cwd` and run it to the end with `skd-tune run` (which must succeed);
    returns (the experiment directory, the finished process)."""
    spec_path = cwd / f"{raw['name']}.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run_cli("run", str(spec_path), cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd / raw.get("storage", "runs") / raw["name"], proc


class Barrier:
    """The trainables' test-only barrier (`SKD_TUNE_TEST_BARRIER`, see skd_tune/tune/trainables.py): every
    trial of `stage` that reaches `epoch` (the teacher-logits computation: stage "teacher_logits", epoch 0)
    writes `reached-<pid>-<epoch>` here and waits until `release()`. A test stops the run there, at a known
    point, instead of polling its output."""

    def __init__(self, directory: Path, stage: str, epoch: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = {"SKD_TUNE_TEST_BARRIER": f"{self.dir}:{stage}:{epoch}"}

    def reached(self) -> list[int]:
        """The pids waiting (or that waited) at the barrier."""
        return sorted(int(p.name.split("-")[1]) for p in self.dir.glob("reached-*"))

    def wait(self, proc: subprocess.Popen, n: int = 1, timeout: float = 300, log: Path | None = None) -> list[int]:
        """Wait until `n` processes reached the barrier; fail if `proc` ends first."""
        deadline = time.monotonic() + timeout
        while len(self.reached()) < n:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before the barrier:\n{log.read_text() if log else ''}")
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the barrier was never reached:\n{log.read_text() if log else ''}")
            time.sleep(0.05)
        return self.reached()

    def release(self) -> None:
        (self.dir / "release").touch()


def start_cli(*args: str, cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`skd-tune ARGS` started in the background, its output into `log`."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "skd_tune", *args], cwd=cwd, env=full, stdout=f, stderr=subprocess.STDOUT, text=True
        )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A real mlp_tiny student trained on digits and exported: (experiment dir, dataset, spec). Shared
    by the serve tests (trained once per session)."""
    from .serve_helpers import one_thread, train_and_export

    with one_thread():
        return train_and_export(tmp_path_factory)


@pytest.fixture(scope="session")
def reference(trained):
    """The exported student loaded back: (model, meta, a function giving its (subclass, class) logits)."""
    from .serve_helpers import reference_logits

    exp, _, _ = trained
    return reference_logits(exp / "export")

"""One driver per experiment: the local file lock between real processes, and the lease on a storage
(pyarrow's local filesystem standing in for S3 here; tests/test_experiment_storage.py runs it on moto)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pytest

from skd_tune.errors import ExperimentLocked
from skd_tune.experiment import Experiment, hold
from skd_tune.experiment.storage import Remote

HOLDER = """
import sys, time
from pathlib import Path
from skd_tune.experiment import Experiment, hold
with hold(Experiment(Path(sys.argv[1]))):
    print("holding", flush=True)
    time.sleep(600)
"""


def _holder(root) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_driver_is_refused_naming_the_holder_and_a_killed_one_blocks_nothing(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(
            ExperimentLocked, match=rf"being run by another skd-tune driver \(host .*, pid {proc.pid}, since "
        ):
            with hold(Experiment(tmp_path)):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with hold(Experiment(tmp_path)):  # the kernel released the killed driver's lock
        pass
    with hold(Experiment(tmp_path)):  # and this one released its own
        pass


def _remote(tmp_path) -> Experiment:
    path = (tmp_path / "storage" / "exp").as_posix()
    pafs.LocalFileSystem().create_dir(path)
    return Experiment(tmp_path / "mirror", Remote(pafs.LocalFileSystem(), path, f"s3://bucket/{path}"))


def _write_lease(exp: Experiment, **lease) -> None:
    with exp.remote.fs.open_output_stream(exp.remote.child(".lease.json")) as f:
        f.write(json.dumps(lease).encode())


def _lease(exp: Experiment):
    try:
        with exp.remote.fs.open_input_stream(exp.remote.child(".lease.json")) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def test_a_live_lease_is_respected_and_released_on_exit(tmp_path):
    exp = _remote(tmp_path)
    with hold(exp, ttl_s=30):
        lease = _lease(exp)
        assert lease["pid"] > 0 and lease["host"] == socket.gethostname()
        with pytest.raises(ExperimentLocked, match=r"being run by another skd-tune driver .*last heartbeat \d+ s ago"):
            with hold(Experiment(tmp_path / "other-mirror", exp.remote)):
                pass
    assert _lease(exp) is None


def test_the_heartbeat_keeps_a_lease_alive(tmp_path):
    exp = _remote(tmp_path)
    with hold(exp, ttl_s=0.8):
        first = _lease(exp)["heartbeat"]
        time.sleep(1.0)
        assert _lease(exp)["heartbeat"] > first
        with pytest.raises(ExperimentLocked):
            with hold(Experiment(tmp_path / "m2", exp.remote)):
                pass


def test_expired_leases_another_host_needs_force_this_host_s_dead_driver_does_not(tmp_path):
    exp = _remote(tmp_path)
    stale = {
        "host": "other-host",
        "pid": 4242,
        "since": "2026-11-30T01:00:00",
        "heartbeat": time.time() - 600,
        "ttl_s": 60,
    }
    _write_lease(exp, **stale, token="x")
    with pytest.raises(ExperimentLocked, match=r"another host \(host other-host, pid 4242.*expired \d+ s ago.*--force"):
        with hold(exp):
            pass
    said = []
    with hold(exp, force=True, say=said.append):
        assert _lease(exp)["host"] == socket.gethostname()
    assert said and "took over the lease" in said[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # A driver of this host that is gone (killed) with a heartbeat still fresh: taken over without --force.
    _write_lease(exp, **{**stale, "host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time()}, token="y")
    with hold(exp):
        pass

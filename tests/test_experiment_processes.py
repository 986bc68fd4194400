"""Local Ray processes left by a killed driver: recorded by the driver, stopped by the next one.
Real processes stand in for Ray's: a "driver" that starts two sleeping children, records them, and is
SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from skd_tune.experiment import clear_local_ray, record_local_ray, stop_orphans

DRIVER = """
import subprocess, sys, time
from pathlib import Path
from skd_tune.experiment import record_local_ray
children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)]
record_local_ray(Path(sys.argv[1]))
print(" ".join(str(c.pid) for c in children), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _start_driver(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    children = [int(p) for p in driver.stdout.readline().split()]
    assert len(children) == 2 and all(_alive(p) for p in children)
    return driver, children


def test_the_processes_of_a_killed_driver_are_stopped_and_only_those(tmp_path):
    driver, children = _start_driver(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert stop_orphans(tmp_path) == 0  # its driver still runs: not orphans
        assert all(_alive(p) for p in children)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert stop_orphans(tmp_path) == 2
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in children)
        assert _alive(bystander.pid)  # a process the record does not name is never touched
        assert not (tmp_path / ".driver.json").exists()
        assert stop_orphans(tmp_path) == 0  # nothing recorded any more
    finally:
        bystander.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_reused_pid_is_recognised_by_its_start_time(tmp_path):
    record_local_ray(tmp_path)  # this process as the driver, with no children yet
    record = (tmp_path / ".driver.json").read_text()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        data = json.loads(record)
        data["driver"] = [data["driver"][0], data["driver"][1] + 1]  # "this pid" started at another time: gone
        data["processes"] = [[sleeper.pid, 1]]  # the sleeper's pid, but recorded with another start time
        (tmp_path / ".driver.json").write_text(json.dumps(data))
        assert stop_orphans(tmp_path) == 0 and _alive(sleeper.pid)
    finally:
        sleeper.kill()
    record_local_ray(tmp_path)
    clear_local_ray(tmp_path)  # a driver that shut its Ray down forgets the record
    assert not (tmp_path / ".driver.json").exists()

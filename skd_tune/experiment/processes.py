"""Local Ray processes left behind by a killed driver, found and stopped on the next run.

A driver that starts local Ray and is then SIGKILLed leaves some of Ray's processes running (seen
here: `ray::DashboardAgent`, `ray::RuntimeEnvAgent`). After starting local Ray, the driver records
its own pid and its descendants (pid + start time, from /proc) in the experiment directory; the next
run stops those that are still alive when the recorded driver is gone. Only processes this record
names are touched, and a pid reused by another process is recognised by its different start time.
Linux only (elsewhere this is a no-op).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from .layout import DRIVER_RECORD as RECORD

__all__ = ["clear_local_ray", "record_local_ray", "stop_orphans", "terminate"]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None (gone, or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _descendants(root: int) -> list[tuple[int, int]]:
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
                starts[int(entry)] = st[1]
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append((pid, starts[pid]))
        todo.extend(children.get(pid, []))
    return out


def record_local_ray(experiment_dir: Path) -> None:
    """Write this driver's pid and its descendant processes (local Ray) into the experiment directory."""
    me = os.getpid()
    st = _stat(me)
    if st is None:
        return
    record = {"driver": [me, st[1]], "processes": _descendants(me)}
    (Path(experiment_dir) / RECORD).write_text(json.dumps(record))


def clear_local_ray(experiment_dir: Path) -> None:
    """Forget the recorded processes: the driver that recorded them shut its local Ray down."""
    (Path(experiment_dir) / RECORD).unlink(missing_ok=True)


def terminate(pids: list[int], grace_s: float = 3.0) -> int:
    """SIGTERM the processes `pids`, SIGKILL those still alive (not zombies) after `grace_s`; how many were alive."""
    alive = [pid for pid in set(pids) if _stat(pid) is not None]
    stopped = len(alive)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if _stat(pid) is not None]
        if not alive:
            break
    return stopped


def stop_orphans(experiment_dir: Path, grace_s: float = 3.0) -> int:
    """Stop the recorded local-Ray processes of a previous driver that is no longer alive; how many."""
    path = Path(experiment_dir) / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    driver_pid, driver_start = record.get("driver", [0, 0])
    st = _stat(driver_pid)
    if st is not None and st[1] == driver_start:
        return 0  # that driver still runs: its processes are not orphans
    alive = [pid for pid, start in record.get("processes", []) if (s := _stat(pid)) is not None and s[1] == start]
    stopped = terminate(alive, grace_s)
    path.unlink(missing_ok=True)
    return stopped

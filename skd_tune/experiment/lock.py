"""One driver per experiment.

A second `skd-tune run` on an experiment that a driver is running (a job resubmitted while the first
still runs, a second terminal) exits with a `ExperimentLocked` paragraph: who holds the experiment,
since when, and what to do. `status` and `report` take no lock and work beside a running driver.

- A local experiment: an OS file lock (`fcntl.flock`) on `<experiment>/.lock`, which also holds the
  holder's host, pid and start time for that message. The kernel releases it when the driver dies,
  SIGKILL included, so a killed driver never blocks the resume.
- An experiment on a URI storage (no file locks there): a lease object `<experiment>/.lease.json`
  with the owner's host, pid and start time, and a heartbeat rewritten every `ttl_s / 4` seconds by a
  daemon thread. Another driver respects a lease whose heartbeat is younger than `ttl_s`. An expired
  lease of a process on this host that is gone is taken over at once (a killed driver, resumed here);
  an expired lease of another host is taken over only with `--force` (that host may be cut off from
  the storage but still running). Object stores have no compare-and-swap: after writing its lease a
  driver reads it back, so of two drivers racing for a free experiment the later writer wins and the
  other one stops.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from ..errors import ExperimentLocked
from . import layout
from .experiment import Experiment

__all__ = ["DEFAULT_TTL_S", "hold"]

DEFAULT_TTL_S = 60.0
_READ_BACK_S = 0.5


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _holder_text(holder: dict[str, Any]) -> str:
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {holder.get('since', '?')}"


@contextmanager
def hold(
    exp: Experiment, *, force: bool = False, ttl_s: float = DEFAULT_TTL_S, say: Callable[[str], None] = lambda _: None
) -> Iterator[None]:
    """Hold the experiment for this driver while the block runs; raise ExperimentLocked if another holds it."""
    if exp.remote is None:
        with _file_lock(exp):
            yield
    else:
        with _lease(exp, force, ttl_s, say):
            yield


@contextmanager
def _file_lock(exp: Experiment) -> Iterator[None]:
    import fcntl

    exp.root.mkdir(parents=True, exist_ok=True)
    path = exp.path(layout.LOCK)
    f: IO[str] = open(path, "a+")  # noqa: SIM115 - held open for the lifetime of the lock
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            raise ExperimentLocked(
                f"{exp.root} is being run by another skd-tune driver ({_holder_text(holder)}); two drivers would "
                "write the same Tune experiments and tables. Wait for it to finish, or stop that driver (Ctrl-C, or "
                f"`kill {holder.get('pid', 'PID')}` on {holder.get('host', 'its host')}) and run the same command to "
                "resume. `skd-tune status` and `skd-tune report` work beside it"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_me()))
        f.flush()
        yield
    finally:
        f.close()  # closing the file releases the lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lease:
    """The lease object on the storage: read, write, delete."""

    def __init__(self, exp: Experiment):
        self.fs, self.path = exp.remote.fs, exp.remote.child(layout.LEASE)

    def read(self) -> dict[str, Any] | None:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return json.loads(f.read().decode())
        except (FileNotFoundError, ValueError):
            return None
        except OSError as e:  # pyarrow raises OSError subclasses for a missing object on some stores
            if "not found" in str(e).lower() or "does not exist" in str(e).lower():
                return None
            raise

    def write(self, lease: dict[str, Any]) -> None:
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps(lease).encode())

    def delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            pass  # already gone: released by a driver that took it over with --force


@contextmanager
def _lease(exp: Experiment, force: bool, ttl_s: float, say: Callable[[str], None]) -> Iterator[None]:
    lease = _Lease(exp)
    mine = {**_me(), "token": os.urandom(8).hex(), "ttl_s": ttl_s}
    current = lease.read()
    if current is not None:
        age = time.time() - float(current.get("heartbeat", 0))
        same_host = current.get("host") == mine["host"]
        gone_here = same_host and not _pid_alive(int(current.get("pid", 0)))
        if age < float(current.get("ttl_s", ttl_s)) and not gone_here:
            raise ExperimentLocked(
                f"{exp.location} is being run by another skd-tune driver ({_holder_text(current)}, last heartbeat "
                f"{age:.0f} s ago, in its lease {exp.remote.uri.rstrip('/')}/{layout.LEASE}). Wait for it to finish, "
                "or stop that driver and run the same command to resume. `skd-tune status` and `skd-tune report` "
                "work beside it"
            )
        if not gone_here and not force:
            raise ExperimentLocked(
                f"{exp.location} is held by a driver on another host ({_holder_text(current)}) whose lease expired "
                f"{age:.0f} s ago: that driver stopped sending heartbeats (killed, or cut off from the storage). If it "
                "is no longer running, run the same command with --force to take the experiment over"
            )
        say(f"took over the lease of a driver that stopped ({_holder_text(current)})")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(ttl_s / 4):
            lease.write({**mine, "heartbeat": time.time()})

    lease.write({**mine, "heartbeat": time.time()})
    time.sleep(_READ_BACK_S)
    back = lease.read() or {}
    if back.get("token") != mine["token"]:
        raise ExperimentLocked(
            f"{exp.location}: another skd-tune driver ({_holder_text(back)}) took the experiment at the same moment; "
            "this one stops. Wait for that driver to finish, or stop it and run the same command to resume"
        )
    thread = threading.Thread(target=beat, name="skd-tune-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        if (lease.read() or {}).get("token") == mine["token"]:
            lease.delete()

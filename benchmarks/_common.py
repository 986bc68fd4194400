"""Helpers shared by the benchmark scripts: a timed `skd-tune run`, Ray's processes and their memory,
JSON output with the load average, a plain table.

`timed_run(spec)` runs the CLI (`skd_tune.cli.main(["run", SPEC])`) in a fresh process and reads
back the wall-clock time of each pipeline stage that the pipeline records in the experiment's state
(`"ran": [t_start, t_end]` in each stage's record), so a benchmark can read the student search's own
wall time (Tuner construction, the trials, Tune's teardown) apart from Ray's start, the teacher and
the export. Run as a script, this file is that child process.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
PYTHON = sys.executable


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def context() -> dict[str, Any]:
    """What a reader needs to judge a figure: when, where, how loaded."""
    import torch

    return {
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_1_5_15": loadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_json(script: str, payload: dict[str, Any], suffix: str = "") -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{Path(script).stem}{suffix}.json"
    path.write_text(json.dumps(payload, indent=2, default=_plain))
    print(f"wrote {path.relative_to(REPO)}")
    return path


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)


def print_table(rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> None:
    if not rows:
        return
    columns = list(columns or rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return "" if v is None else str(v)


def tempdir(prefix: str) -> Path:
    # short: Ray's unix sockets live under it (RAY_TMPDIR) and socket paths are limited to ~107 bytes
    return Path(tempfile.mkdtemp(prefix=f"skdb-{prefix}-", dir="/tmp"))


def write_spec(directory: Path, name: str, spec: dict[str, Any]) -> Path:
    """A spec YAML in `directory`, storing its experiment there too (`storage` defaults to `directory`)."""
    import yaml

    spec = {"name": name, "storage": str(directory / "runs"), **spec}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def timed_run(
    spec_path: Path,
    address: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 600,
    on_start=None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Run `skd-tune run SPEC` (in a child process) and return its stage timings:

    {"rc", "wall_s" (the whole command, process start to exit), "stages": {name: [t_start, t_end]}
    (time.time() of each stage that ran, by its name in `skd_tune.stages.STAGE_NAMES`: teacher,
    teacher_logits, student, export, methods; plus "cli_main", the whole `cli.main` call), "stdout"}.
    `on_start(proc)` is called once the child is started (e.g. to sample its processes)."""
    timings = spec_path.with_suffix(".timings.json")
    cmd = [PYTHON, __file__, str(spec_path), str(timings)] + (["--address", address] if address else [])
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault(
        "RAY_TMPDIR", str(spec_path.parent / "ray")
    )  # our own Ray session dirs, removed with the temp dir
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if on_start is not None:
        on_start(proc)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        raise RuntimeError(f"{spec_path.name}: skd-tune run exceeded {timeout_s:.0f} s:\n{out[-3000:]}") from None
    wall = time.perf_counter() - t0
    if not quiet:
        print(out)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec_path.name}: skd-tune run failed with exit code {proc.returncode}:\n{out[-3000:]}")
    stages = json.loads(timings.read_text())
    return {"rc": proc.returncode, "wall_s": wall, "stages": stages, "stdout": out}


def stage_seconds(run: dict[str, Any], stage: str = "student") -> float:
    """Wall seconds of one stage of a `timed_run` (a name of `skd_tune.stages.STAGE_NAMES`)."""
    t0, t1 = run["stages"][stage]
    return t1 - t0


def experiment_of(spec_path: Path):
    """The `skd_tune.experiment.Experiment` that `skd-tune run SPEC_PATH` runs."""
    from skd_tune.experiment import Experiment, location_of, resolve_spec

    return Experiment.open(location_of(resolve_spec(spec_path)))


def read_results(spec_path: Path, table: str = "student"):
    """(trials, epochs) DataFrames of a stage's results tables (student, teacher, methods) of the
    experiment a spec ran."""
    exp = experiment_of(spec_path)
    return exp.trials(table), exp.epochs(table)


# --------------------------------------------------------------------------------------------------
# The same training as a student trial, in a plain torch loop (no Ray)


def plain_student(
    spec, data, teacher_logits, params: dict[str, Any], seed: int | None = None, device=None, epochs: int | None = None
) -> list[float]:
    """Train one student as a trial does (`skd_tune.recipes.build_student_run`: the same splits on the
    device, model, loss, optimiser, curriculum, `train.fit` epochs with validation), keeping the best
    epoch's weights in memory but writing no checkpoint and reporting to nobody. `epochs` overrides the
    student's epochs. Returns each epoch's `epoch_time_s`."""
    from skd_tune.recipes import build_student_run

    student = spec.student_for(params)
    if epochs is not None:
        student = student.model_copy(update={"epochs": epochs})
    run = build_student_run(student, spec, data, teacher_logits, spec.seed if seed is None else seed, device)
    return [metrics["epoch_time_s"] for metrics, _ in run.epochs()]


def plain_teacher(spec, data, device=None) -> list[float]:
    """Train the teacher as its trial does (`skd_tune.recipes.build_teacher_run`, the spec's own teacher
    parameters), without Ray and without a checkpoint; returns each epoch's `epoch_time_s`."""
    from skd_tune.recipes import build_teacher_run

    return [metrics["epoch_time_s"] for metrics, _ in build_teacher_run(spec, data, {}, device).epochs()]


# --------------------------------------------------------------------------------------------------
# Processes and their memory (Linux /proc; psutil not needed)


def proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_tree() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := proc_stat(int(entry))) is not None and st[1] not in ("Z", "X"):
            out[int(entry)] = st[0]
    return out


def descendants(roots: Iterable[int], tree: dict[int, int] | None = None) -> list[int]:
    tree = tree if tree is not None else process_tree()
    children: dict[int, list[int]] = {}
    for pid, ppid in tree.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [r for r in roots]
    while todo:
        pid = todo.pop()
        for c in children.get(pid, []):
            out.append(c)
            todo.append(c)
    return out


def memory_mb(pid: int) -> dict[str, float] | None:
    """RSS, PSS and USS (private clean + dirty) of a process in MB, from /proc/PID/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            kb[parts[0].rstrip(":")] = int(parts[1])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {"rss": kb.get("Rss", 0) / 1024, "pss": kb.get("Pss", 0) / 1024, "uss": uss / 1024}


class CpuSampler:
    """Samples, every `every_s` in a thread, the CPU time (user + system) of a process and all its
    descendants, so the CPU each kind of process used inside a time window can be read afterwards:
    `cpu_between(t0, t1)` -> {"driver", "trial_workers" (`ray::` processes that ran ImplicitFunc),
    "other_ray" (GCS, raylet, agents, idle workers, ...)} in CPU seconds."""

    def __init__(self, root_pid: int, every_s: float = 0.25):
        import threading

        self.root, self.every_s = root_pid, every_s
        self.series: dict[int, list[tuple[float, float]]] = {}
        self.kind: dict[int, str] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            now = time.time()
            for pid in [self.root, *descendants([self.root])]:
                try:
                    text = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                f = text[text.rindex(")") + 2 :].split()
                self.series.setdefault(pid, []).append((now, (int(f[11]) + int(f[12])) / self.tick))
                if pid == self.root:
                    self.kind[pid] = "driver"
                elif self.kind.get(pid) != "trial_workers":
                    self.kind[pid] = "trial_workers" if "ImplicitFunc" in cmdline(pid) else "other_ray"
            self.done.wait(self.every_s)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def cpu_between(self, t0: float, t1: float) -> dict[str, float]:
        out = {"driver": 0.0, "trial_workers": 0.0, "other_ray": 0.0}
        for pid, series in self.series.items():
            before = [c for t, c in series if t <= t0]
            upto = [c for t, c in series if t <= t1]
            if upto:
                out[self.kind[pid]] += upto[-1] - (before[-1] if before else 0.0)
        return out


def kill_tree(pids: Iterable[int], grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after `grace_s`, the given processes (ours, by pid); how many were alive."""
    from skd_tune.experiment.processes import terminate

    return terminate(list(pids), grace_s)


def cleanup(path: Path, keep: bool = False) -> None:
    if keep:
        print(f"kept {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The child process of `timed_run`


def _child(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("timings")
    p.add_argument("--address", default=None)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from skd_tune import cli
    from skd_tune.stages import STAGE_NAMES

    t0 = time.time()
    rc = cli.main(["run", args.spec] + (["--address", args.address] if args.address else []))
    marks: dict[str, list[float]] = {"cli_main": [t0, time.time()]}
    try:
        state = experiment_of(Path(args.spec)).state()
    except Exception as e:  # noqa: BLE001 -- a failed run may leave no experiment; rc tells the parent
        print(f"no experiment state to read the stage times from: {e}", file=sys.stderr)
    else:
        for name in STAGE_NAMES:
            record = state.done(name)
            ran = (record or {}).get("ran")
            if ran is not None and ran[0] >= t0:  # a stage this run ran (not one done by an earlier run)
                marks[name] = list(ran)
    Path(args.timings).write_text(json.dumps(marks))
    return rc


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))

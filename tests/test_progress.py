"""Progress a person can read: plain lines for a log (a finished trial each, a summary at most every 30 s,
the summary at the end) and a live display redrawn in place on a terminal (`skd_tune.progress`)."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console

from skd_tune.progress import LiveDisplay, PlainDisplay, Snapshot, Terminal, display_for
from skd_tune.tune.callbacks import ProgressCallback

FINAL = "[student] trials 4/4 done, 0 running, 0 pending, 0 errored | best val_f1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trial(trial_id: str, status: str = "RUNNING", **config):
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, error_file=None)


def test_plain_display_prints_finished_trials_and_a_summary_at_most_every_30_s():
    lines: list[str] = []
    clock = FakeClock()
    display = PlainDisplay(lines.append, clock=clock)
    display.start("student", 16)
    picture = Snapshot("student", 16, done=1, running=2, pending=13, best="val_f1 0.9000 (t1: lr=0.01)")
    for t in (1, 10, 29.9):  # changes within the first 30 s: no line
        clock.now = 1000 + t
        display.update(picture)
    assert lines == []
    clock.now = 1030
    display.update(picture)
    assert lines == ["[student] trials 1/16 done, 2 running, 13 pending, 0 errored | best val_f1 0.9000 (t1: lr=0.01)"]
    clock.now = 1045
    display.update(picture, finished="[student] trial t2 done: val_f1 0.9100 (lr=0.02)")
    assert lines[1:] == ["[student] trial t2 done: val_f1 0.9100 (lr=0.02)"]  # the trial, not a summary yet
    clock.now = 1059.9
    display.update(picture)
    assert len(lines) == 2
    clock.now = 1060
    display.update(picture)
    assert len(lines) == 3 and lines[2].startswith("[student] trials 1/16 done")
    display.finish(Snapshot("student", 16, done=16, best="val_f1 0.9500 (t9: lr=0.03)"))
    assert (
        lines[-1] == "[student] trials 16/16 done, 0 running, 0 pending, 0 errored | best val_f1 0.9500 (t9: lr=0.03)"
    )


def test_callback_lines_for_finished_and_errored_trials_then_the_summary():
    lines: list[str] = []
    best = {"trial_id": "t1", "best_val_loss": 0.25, "lr": 0.01}
    cb = ProgressCallback("student", 2, "val_loss", ["lr"], lambda: best, lines.append, mode="min")
    trials = [_trial("t1", lr=0.01), _trial("t2", lr=0.5)]
    cb.setup()
    for value in (0.4, 0.25, 0.3):
        cb.on_trial_result(0, trials, trials[0], {"val_loss": value})
    trials[0].status = "TERMINATED"
    cb.on_trial_complete(0, trials, trials[0])
    trials[1].status = "ERROR"
    cb.on_trial_error(0, trials, trials[1])
    cb.on_experiment_end(trials)
    assert lines == [
        "[student] trial t1 done: val_loss 0.2500 (lr=0.01)",  # its best epoch, by the mode
        "[student] trial t2 errored (lr=0.5)",
        "[student] trials 1/2 done, 0 running, 0 pending, 1 errored | best val_loss 0.2500 (t1: lr=0.01)",
    ]


def test_display_for_a_plain_printer_and_for_a_terminal():
    assert isinstance(display_for(print), PlainDisplay)
    terminal = Terminal(Console(file=io.StringIO()))
    assert isinstance(display_for(terminal), LiveDisplay)


def _live_frame(width: int = 120) -> str:
    clock = FakeClock()
    display = LiveDisplay(Console(file=io.StringIO()), clock=clock)
    display.snapshot, display._t0, display._done0 = Snapshot("student", 16), clock.now, 0
    display._last_finished = "[student] trial 63ea2_00006 done: val_f1 0.9778 (temperature=3.1, w_skd=0.51, lr=0.012)"
    clock.now += 20
    display.snapshot = Snapshot(
        "student", 16, done=7, running=2, pending=7, best="val_f1 0.9815 (63ea2_00004: temperature=18.76, lr=0.01422)"
    )
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(display)
    return console.export_text()


def test_live_frame_shows_counts_times_and_the_best():
    frame = _live_frame()
    assert "[student]" in frame and "7/16 trials done, 2 running, 7 pending, 0 errored" in frame
    assert "0:20 elapsed" in frame and "ETA 0:25" in frame  # 7 done in 20 s: 9 left take 25.7 s
    assert "best val_f1 0.9815 (63ea2_00004: temperature=18.76, lr=0.01422)" in frame
    assert "last: [student] trial 63ea2_00006 done" in frame


def test_terminal_lines_go_above_the_live_display_which_gives_way_to_the_summary():
    out = io.StringIO()
    terminal = Terminal(Console(file=out, force_terminal=True, width=120))
    cb = ProgressCallback("student", 2, "val_f1", ["lr"], lambda: None, terminal)
    trials = [_trial("t1", lr=0.01)]
    cb.setup()
    cb.on_trial_start(0, trials, trials[0])
    terminal("[student] a line while the display is up")
    trials[0].status = "TERMINATED"
    cb.on_trial_complete(0, trials, trials[0])
    cb.on_experiment_end(trials)
    terminal.close()
    text = out.getvalue()
    assert "\x1b[2K" in text  # the live region was erased and redrawn
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "[student] a line while the display is up" in plain
    assert plain.rstrip().endswith("[student] trials 1/2 done, 0 running, 1 pending, 0 errored")


# -- end to end: `skd-tune run` with and without a terminal ----------------------------------------

_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "TERM": "xterm-256color"}


def _progress_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"\[\w+\] trials? ", line)]


def _finished_trials(exp) -> dict[str, list[str]]:
    tables = {"teacher": "teacher_trials.parquet", "student": "trials.parquet"}
    return {stage: list(pd.read_parquet(exp / "results" / name)["trial_id"]) for stage, name in tables.items()}


@pytest.mark.slow
def test_run_without_a_terminal_prints_finished_trials_and_summaries_only(write_spec, tmp_path):
    spec = write_spec()
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "skd_tune", "run", str(spec)],
        cwd=tmp_path,
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\x1b[" not in out
    finished = _finished_trials(tmp_path / "runs" / "tiny")
    for stage, ids in finished.items():
        for trial_id in ids:
            assert re.search(rf"^\[{stage}\] trial {trial_id} done: val_f1 \d\.\d{{4}}", out, re.M), out
    assert "[teacher] trials 1/1 done, 0 running, 0 pending, 0 errored | best val_f1" in out
    assert FINAL in out
    n_trials = sum(len(ids) for ids in finished.values())
    bound = n_trials + 2 + 2 * int(seconds // 30)  # finished trials, the two final summaries, one per 30 s
    assert len(_progress_lines(out)) <= bound, out


def _run_in_pty(args: list[str], cwd, columns: int = 120, timeout: float = 600) -> tuple[int, str]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=_ENV, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break  # ended, and nothing more comes (a leftover process may hold the terminal open)
        else:
            proc.kill()
            pytest.fail("the run under a terminal did not end")
    finally:
        os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_run_on_a_terminal_redraws_one_display_per_stage(write_spec, tmp_path):
    spec = write_spec()
    rc, out = _run_in_pty([sys.executable, "-m", "skd_tune", "run", str(spec)], cwd=tmp_path)
    assert rc == 0, out
    assert "\x1b[2K" in out and "\x1b[1A" in out  # the live region: erase line, cursor up, redraw
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r\n", "\n")
    lines = [line.split("\r")[-1] for line in plain.split("\n")]  # what is left of each line after redraws
    assert "[teacher] trials 1/1 done, 0 running, 0 pending, 0 errored | best val_f1" in plain
    assert FINAL in plain
    assert "trials done," in plain and "elapsed" in plain and "ETA" in plain  # the live display was drawn
    # no line per state change or per trial in the scrollback: the final summaries only
    assert [line[:24] for line in _progress_lines("\n".join(lines))] == [
        "[teacher] trials 1/1 don",
        "[student] trials 4/4 don",
    ]
    assert "[export] best student" in plain and "done in" in plain

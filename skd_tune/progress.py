"""How a Tune stage's progress reaches a person: a `Display` that `tune.callbacks.ProgressCallback` drives.

A display is told when the stage starts (`start`), on every change of the picture (`update`, with the
trial that just finished, if one did) and when the stage ends (`finish`); it ends with the stage's summary
line ("[student] trials 16/16 done, 0 running, 0 pending, 0 errored | best val_f1 ...").

- `PlainDisplay` (a log file, CI, a pipe) writes through a plain `printer(line)`: one line per finished
  trial, the summary line at most every `every_s` (30 s), and the summary line at the end.
- `LiveDisplay` (a terminal) redraws one live region in place with rich: done of total, running,
  errored, elapsed, ETA and the best trial so far; at the end the region gives way to the summary line,
  so the scrollback keeps one line per stage.

`Terminal` is the printer a CLI on a terminal passes down (`pipeline.run(printer=Terminal())`): a
callable that prints lines on its rich console (above a live region while one is up) and makes live
displays on that console. `display_for(printer)` picks the display a printer asks for: a `Terminal`'s
live one, else a `PlainDisplay` over the printer, so `run()` keeps working with any plain callable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Display", "LiveDisplay", "PlainDisplay", "Snapshot", "Terminal", "display_for"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Snapshot:
    """The picture of a stage at one moment: trials by status, and the best so far (`best`: the text
    after "best", e.g. "val_f1 0.9815 (t3: lr=0.01)", or "" before any result)."""

    label: str
    total: int
    done: int = 0
    running: int = 0
    pending: int = 0
    errored: int = 0
    best: str = ""

    def line(self) -> str:
        """The stage's summary line (the format the final line of every stage keeps)."""
        return (
            f"[{self.label}] trials {self.done}/{self.total} done, {self.running} running, {self.pending} pending, "
            f"{self.errored} errored" + (f" | best {self.best}" if self.best else "")
        )


class Display(Protocol):
    def start(self, label: str, total: int) -> None: ...

    def update(self, snapshot: Snapshot, finished: str | None = None) -> None:
        """The picture changed; `finished`: a line about the trial that just finished, if one did."""

    def finish(self, snapshot: Snapshot) -> None: ...


class PlainDisplay:
    """Lines for a log: each finished trial, the summary at most every `every_s`, the summary at the end."""

    def __init__(self, printer: Callable[[str], None], every_s: float = 30.0, clock: Clock = time.monotonic):
        self.printer, self.every_s, self.clock = printer, every_s, clock
        self._last_summary: float | None = None

    def start(self, label: str, total: int) -> None:
        self._last_summary = self.clock()  # the first summary comes `every_s` after the start

    def update(self, snapshot: Snapshot, finished: str | None = None) -> None:
        if self._last_summary is None:
            self.start(snapshot.label, snapshot.total)
        if finished:
            self.printer(finished)
        now = self.clock()
        if now - self._last_summary >= self.every_s:
            self.printer(snapshot.line())
            self._last_summary = now

    def finish(self, snapshot: Snapshot) -> None:
        self.printer(snapshot.line())
        self._last_summary = None


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class LiveDisplay:
    """One live region on a rich console, redrawn in place (4 times a second, so the clock ticks)."""

    def __init__(self, console: Any, clock: Clock = time.monotonic):
        self.console, self.clock = console, clock
        self.live: Any = None
        self.snapshot: Snapshot | None = None
        self._t0 = 0.0
        self._done0 = 0  # trials already done when this run picked the stage up (a resume)
        self._last_finished = ""

    def start(self, label: str, total: int) -> None:
        from rich.live import Live

        if self.live is not None:
            return
        self.snapshot, self._t0, self._done0 = Snapshot(label, total, pending=total), self.clock(), -1
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=True)
        self.live.start()

    def update(self, snapshot: Snapshot, finished: str | None = None) -> None:
        if self.live is None:
            self.start(snapshot.label, snapshot.total)
        if self._done0 < 0:
            self._done0 = snapshot.done
        self.snapshot = snapshot
        if finished:
            self._last_finished = finished
        self.live.refresh()

    def finish(self, snapshot: Snapshot) -> None:
        self.close()
        self.console.print(snapshot.line(), markup=False, highlight=False, emoji=False, soft_wrap=True)

    def close(self) -> None:
        """Take the live region down (without a summary line); safe to call twice."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def eta(self) -> str:
        s = self.snapshot
        elapsed = self.clock() - self._t0
        gained = s.done + s.errored - max(self._done0, 0)
        left = s.total - s.done - s.errored
        if left <= 0:
            return "0:00"
        return _duration(elapsed / gained * left) if gained > 0 else "?"

    def __rich__(self) -> Any:
        """The region: the bar with the counts and times, the best trial so far, the latest finished trial."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        s = self.snapshot
        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(f"[{s.label}]", style="bold"),
            ProgressBar(total=max(s.total, 1), completed=s.done + s.errored, width=30),
            Text(
                f"{s.done}/{s.total} trials done, {s.running} running, {s.pending} pending, {s.errored} errored · "
                f"{_duration(self.clock() - self._t0)} elapsed · ETA {self.eta()}"
            ),
        )
        lines: list[Any] = [head, Text(f"  best {s.best}" if s.best else "  best: no result yet", style="green")]
        if self._last_finished:
            lines.append(Text(f"  last: {self._last_finished}", style="dim", overflow="ellipsis", no_wrap=True))
        return Group(*lines)


class Terminal:
    """The printer for a terminal: lines on one rich console, and live displays on the same console (a
    line printed while a display is up goes above it). `close()` takes down a display left up (a run
    stopped by an exception)."""

    def __init__(self, console: Any = None):
        if console is None:
            from rich.console import Console

            console = Console()
        self.console = console
        self._displays: list[LiveDisplay] = []

    def __call__(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def display(self) -> LiveDisplay:
        display = LiveDisplay(self.console)
        self._displays.append(display)
        return display

    def close(self) -> None:
        for display in self._displays:
            display.close()
        self._displays.clear()


def display_for(printer: Callable[[str], None]) -> Display:
    """The display a printer asks for: its own (`printer.display()`, a `Terminal`'s), else plain lines."""
    make = getattr(printer, "display", None)
    return make() if callable(make) else PlainDisplay(printer)

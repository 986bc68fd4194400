"""SIGINT and SIGTERM during a run: Tune's graceful stop, remembered, with the old handlers restored.

`Interruption` is a context manager around the stages of one run. While it is active, SIGINT and
SIGTERM (a scheduler's preemption) set `interrupted` and hand over to Ray Tune's own graceful stop,
which saves the experiment state and returns from `fit()` with partial results; the stage then sees
`interrupted` and stops instead of marking itself done. A second SIGTERM stops at once
(KeyboardInterrupt), and so does a signal outside a Tune stage. On exit, the handlers that were there before (and the SIGUSR1 handler that Tune
leaves installed) are put back.

Tune installs its SIGINT handler when `fit()` starts; `SignalCallback.setup` (called right after) puts
ours back in front of it and forwards to it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from ray import tune

__all__ = ["Interruption", "SignalCallback"]

_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)


class Interruption:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._saved: dict[int, Any] = {}
        self._forward: Callable | None = None

    @property
    def interrupted(self) -> bool:
        return self._event.is_set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._event.is_set() and signum == signal.SIGTERM:
            raise KeyboardInterrupt  # a second SIGTERM: stop now
        self._event.set()
        if not callable(self._forward):
            raise KeyboardInterrupt  # outside a Tune stage: nothing to stop gracefully, stop now
        self._forward(signal.SIGINT, frame)

    def chain(self) -> None:
        """Put our handlers in front of the SIGINT handler installed now (Tune's), forwarding to it."""
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGINT)
        if current is not self._on_signal:
            self._forward = current if callable(current) else None
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def stage_ended(self) -> None:
        """A Tune stage returned: its handler is no longer one to forward to."""
        self._forward = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)

    def __enter__(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.getsignal(s) for s in _SIGNALS}
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._saved = {}


class SignalCallback(tune.Callback):
    """Chains the run's `Interruption` in front of Tune's SIGINT handler when a stage's `fit()` starts.

    Pickled into the Tune experiment with the other callbacks: it pickles to nothing (a restored
    stage gets the current run's callbacks again, see stage.py)."""

    def __init__(self, interruption: Interruption | None = None):
        self.interruption = interruption

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.interruption = None

    def setup(self, **info: Any) -> None:
        if self.interruption is not None:
            self.interruption.chain()

"""How the command line stops when asked to: Ctrl-C (SIGINT) and SIGTERM alike.

SIGTERM is what ``timeout``, ``docker stop``, Kubernetes and SLURM send first, so it is treated as
a Ctrl-C: the first stops a run at once if it is computing a batch (that batch is dropped:
Score-CAM's can take minutes) or else after the image in hand; everything finished is written,
the CSV and ``run.json`` are complete, the summary is printed. A second stops at once.
The exit code says which signal it was: 130 for SIGINT, 143 for SIGTERM (128 + the signal's
number, as shells report it). Only the command line installs these handlers: library use leaves
the process's signals alone.
"""

from __future__ import annotations

import signal
import threading

from camcli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """Raised by a SIGTERM handler: everything that handles a Ctrl-C handles it, and its exit code is 143."""


def exit_code(interrupt: BaseException | int | None) -> int:
    """143 for SIGTERM (or :class:`Terminated`), else 130."""
    term = isinstance(interrupt, Terminated) or interrupt == signal.SIGTERM
    return EXIT_TERMINATED if term else EXIT_INTERRUPTED


def _raise_for(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


class _Handlers:
    """Install ``handler`` for SIGINT and SIGTERM while inside the block (main thread only)."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:  # pragma: no cover - replaced by subclasses
        _raise_for(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in _STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()
        return False


class InterruptOnTerm(_Handlers):
    """SIGTERM raises :class:`Terminated` as SIGINT raises ``KeyboardInterrupt`` (commands without a run to stop)."""


class GracefulStop(_Handlers):
    """While a run goes, the first SIGINT or SIGTERM asks it to stop after the image in hand; a second
    interrupts at once. ``signum`` is the first signal received (None if none)."""

    def __init__(self, run) -> None:
        super().__init__()
        self.run = run
        self.signum: int | None = None

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:
            _raise_for(signum)
        self.signum = signum
        self.run.request_stop()
        if self.run.computing:  # drop the batch in hand rather than wait for it; finished images are written
            from camcli.run.run import StopRequested
            raise StopRequested()

"""Progress for logs: a line every N seconds when stderr is not a terminal.

In a terminal, rich draws a live bar; in a pipe, a CI log or a cluster's output file a bar is
invisible until the end, so a long run would say nothing for minutes. :class:`ProgressLines`
prints ``explaining: 120/1000 images (12%), 3.2 images/s, eta 4 min 35 s`` instead, at most
once every ``every`` seconds (``--progress-every``; 0 turns it off).
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: --progress-every's default: a line every 30 seconds off a terminal
DEFAULT_EVERY = 30.0


class ProgressLines:
    """``update(done, total)`` as work finishes; prints when ``every`` seconds have passed since the last line."""

    def __init__(self, what: str, unit: str, every: float, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.unit, self.every, self.log, self.clock = what, unit, every, log, clock
        self.started = clock()
        self._last = self.started

    def update(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self.every <= 0 or now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * done / total:.0f}%)" if total else ""
        eta = f", eta {duration((total - done) / rate)}" if total and rate > 0 else ""
        self.log(f"{self.what}: {done}/{total if total is not None else '?'} {self.unit}{share}, "
                 f"{rate:.2f} {self.unit}/s{eta}")


def duration(seconds: float) -> str:
    """``4 min 35 s``, ``2 h 05 min``, ``12 s``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"

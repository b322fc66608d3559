"""Progress that tells the truth: a bar on a terminal, lines in a pipe, both on their own clock.

A thread polls the run's :class:`~camcli.engine.work.WorkMeter` while the run works, so the
display moves within a Score-CAM image (its masked passes are counted as they finish) and a
log hears from a run that is busy for minutes on one image. Off a terminal (a pipe, a CI log,
a cluster's output file) a line comes as soon as the first image is done, then at least every
``every`` seconds while explaining goes on (``--progress-every``; 0 turns lines off)::

    explaining: 3/24 images (12%), 2.4 s/image, eta 51 s; 1,024 passes into the next image

Rate and ETA are measured from the time explaining started, not from start-up (loading torch
and the model), and are shown once an image has finished.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from camcli.engine.work import WorkState, images_per_second, seconds_left

#: --progress-every's default: a line every 30 seconds off a terminal
DEFAULT_EVERY = 30.0

#: how often the bar on a terminal is brought up to date (seconds)
BAR_TICK = 0.25

#: the shortest wait between two looks at the state (a tiny --progress-every must not spin a core)
MIN_TICK = 0.05


def progress_line(what: str, unit: str, state: WorkState, now: float) -> str:
    """``explaining: 3/24 images (12%), 2.4 s/image, eta 51 s; 1,024 passes into the next image``."""
    done, total = state.already + state.done, state.total
    share = f" ({100 * done / total:.0f}%)" if total else ""
    return (f"{what}: {done}/{total if total is not None else '?'} {unit}{share}"
            + "".join(f", {part}" for part in pace(unit, state, now)) + passes_text(unit, state))


def pace(unit: str, state: WorkState, now: float) -> list[str]:
    """``["2.4 s/image", "eta 51 s"]`` once an image is done; ``["12 s in"]`` before."""
    speed = images_per_second(state)
    if speed is None:
        return [f"{duration(now - state.started)} in"] if state.started is not None else []
    left = seconds_left(state, now)
    done = state.total is not None and state.already + state.done >= state.total
    return [speed_text(speed, unit)] + ([] if left is None or done else [f"eta {duration(left)}"])


def passes_text(unit: str, state: WorkState) -> str:
    """``; 1,024 passes into the next image`` while a many-pass method works on one."""
    if not state.passes:
        return ""
    return f"; {state.passes:,} passes into the {'first' if state.done == 0 else 'next'} {singular(unit)}"


def speed_text(per_second: float, unit: str) -> str:
    """``3.2 images/s``, or ``2.4 s/image`` below one a second (``0.04 images/s`` reads as nothing)."""
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    return f"{1 / per_second:.1f} s/{singular(unit)}" if per_second > 0 else f"0 {unit}/s"


class Heartbeat:
    """Polls ``state()`` on a thread while in its ``with`` block.

    ``lines``: log a :func:`progress_line` when the first image is done, then every ``every``
    seconds while explaining (``every`` 0: never). ``bar``: called with the state every
    :data:`BAR_TICK` seconds (a terminal's live bar).
    """

    def __init__(self, state: Callable[[], WorkState], what: str, unit: str, *, every: float = 0,
                 log: Callable[[str], None] = lambda msg: None, bar: Callable[[WorkState, float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state, self.what, self.unit, self.every, self.log = state, what, unit, every, log
        self.bar, self.clock = bar, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="camcli-progress", daemon=True)
        self._last_line: float | None = None
        self._first_said = False

    def __enter__(self) -> Heartbeat:
        if self.every > 0 or self.bar is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        tick = max(MIN_TICK, min(BAR_TICK, self.every) if self.every > 0 else BAR_TICK)
        while not self._stop.wait(tick):
            self.tick()

    def tick(self) -> None:
        """One look at the state: draw the bar, say a line if one is due."""
        state, now = self.state(), self.clock()
        if self.bar is not None:
            self.bar(state, now)
        if self.every <= 0 or state.started is None:
            return
        first = state.done > 0 and not self._first_said
        due = now - (self._last_line if self._last_line is not None else state.started) >= self.every
        if first or due:
            self._first_said = self._first_said or state.done > 0
            self._last_line = now
            self.log(progress_line(self.what, self.unit, state, now))


class ProgressLines:
    """``update(done, total)`` as work finishes, for work that is not a run (evaluate's phases):
    a line when ``every`` seconds have passed since the last, rated from the first update on
    (the first step's time holds the start-up)."""

    def __init__(self, what: str, unit: str, every: float, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.unit, self.every, self.log, self.clock = what, unit, every, log, clock
        self._first: tuple[float, int] | None = None
        self._last = clock()

    def update(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self._first is None:
            self._first, self._last = (now, done), now
        if self.every <= 0 or now - self._last < self.every:
            return
        self._last = now
        started, before = self._first
        self.log(progress_line(self.what, self.unit, WorkState(started, done - before, before, total, 0, now), now))


def singular(unit: str) -> str:
    """``images`` -> ``image``, ``explanation passes`` -> ``explanation pass``."""
    return unit[:-2] if unit.endswith("sses") else unit[:-1] if unit.endswith("s") else unit


def duration(seconds: float) -> str:
    """``4 min 35 s``, ``2 h 05 min``, ``12 s``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"

"""Progress that tells the truth: a bar on a terminal, lines in a pipe, both on their own clock.

A thread polls the run's :class:`~camcli.engine.work.WorkMeter` while the run works, so the
display moves within a Score-CAM image (its masked passes are counted as they finish) and a
log hears from a run that is busy for minutes on one image. Off a terminal (a pipe, a CI log,
a cluster's output file) a line comes as soon as the first image is done, then at least every
``every`` seconds while explaining goes on (``--progress-every``; 0 turns lines off)::

    explaining: 3/24 images (12%), 2.4 s/image, eta 51 s; 1,024 passes into the next image

Rate and ETA are measured from the time explaining started, not from start-up (loading torch
and the model), and are shown once an image has finished. ``camcli evaluate`` shows its phases
(explaining, then the sanity checks' explanation passes) the same way, each with its own meter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from camcli.engine.work import WorkMeter, WorkState, images_per_second, seconds_left

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
    """Polls the work's meter on a thread while in its ``with`` block.

    ``meter()`` gives the :class:`~camcli.engine.work.WorkMeter` of the work under way, or None
    (nothing under way: the model loads); a new meter is a new phase, with its own first line.
    ``lines``: log a :func:`progress_line` when the phase's first unit is done, then every ``every``
    seconds while it goes on (``every`` 0: never). ``bar``: called with the meter and its state
    every :data:`BAR_TICK` seconds (a terminal's live bar).
    """

    def __init__(self, meter: Callable[[], WorkMeter | None], *, every: float = 0,
                 log: Callable[[str], None] = lambda msg: None,
                 bar: Callable[[WorkMeter, WorkState, float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.meter, self.every, self.log, self.bar, self.clock = meter, every, log, bar, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="camcli-progress", daemon=True)
        self._phase: WorkMeter | None = None
        self._last_line: float | None = None
        self._said: tuple[int, int | None] | None = None  # the count the phase's latest line gave

    def __enter__(self) -> Heartbeat:
        if self.every > 0 or self.bar is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self._finish()

    def _finish(self) -> None:
        """A phase that said something ends with a line of its final count (the log's last word on it)."""
        phase = self._phase
        if phase is None or self.every <= 0 or self._last_line is None:
            return
        state = phase.state()
        if state.done and self._said != (state.done, state.total):
            self.log(progress_line(phase.what, phase.unit, state, self.clock()))
        self._last_line = None

    def _beat(self) -> None:
        tick = max(MIN_TICK, min(BAR_TICK, self.every) if self.every > 0 else BAR_TICK)
        while not self._stop.wait(tick):
            self.tick()

    def tick(self) -> None:
        """One look at the work: draw the bar, say a line if one is due."""
        meter = self.meter()
        if meter is not self._phase:
            self._finish()
            self._phase, self._last_line, self._said = meter, None, None
        if meter is None:
            return
        state, now = meter.state(), self.clock()
        if self.bar is not None:
            self.bar(meter, state, now)
        if self.every <= 0 or state.started is None:
            return
        first = state.done > 0 and (self._said is None or self._said[0] == 0)  # its first image: said at once
        due = now - (self._last_line if self._last_line is not None else state.started) >= self.every
        if first or due:
            self._last_line, self._said = now, (state.done, state.total)
            self.log(progress_line(meter.what, meter.unit, state, now))


def bar_view(bar):
    """A rich ``Progress`` (columns: description, bar, M/N, ``{task.fields[detail]}``) drawn from the
    meters it is given: a task per phase, its count, rate, ETA and passes."""
    tasks: dict[int, object] = {}

    def show(meter: WorkMeter, state: WorkState, now: float) -> None:
        if state.started is None:
            return
        if id(meter) not in tasks:
            tasks[id(meter)] = bar.add_task(meter.what, total=state.total, detail="")
        bar.update(tasks[id(meter)], description=meter.what, completed=state.already + state.done,
                   total=state.total, detail=", ".join(pace(meter.unit, state, now)) + passes_text(meter.unit, state))
    return show


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

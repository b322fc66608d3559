"""How far a run's work has got, readable from another thread while the work goes on.

A run counts the images it finishes; the methods that run many forward passes per image
(the Score-CAM family's masked inputs, Ablation-CAM's ablated channels) count each pass as it
finishes through :func:`count_passes`. A progress display polls :class:`WorkMeter` on its own
clock, so a line can say how far a Score-CAM image has got minutes before the image is done.
The clock starts when explaining starts, not when the model starts loading: a rate measured
over start-up would promise hours for a run that needs seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class WorkState:
    """A snapshot of :class:`WorkMeter`; times are on the meter's clock (``time.monotonic``)."""

    started: float | None  # when explaining started; None while the model loads
    done: int  # images this run finished (written, or failed)
    already: int  # images an earlier run finished (a resumed run's): no measure of this run's speed
    total: int | None  # images the run explains, ``already`` included, once known
    passes: int  # forward passes counted since the last image finished
    last_done: float | None = None  # when the latest image finished


class WorkMeter:
    """Counts a run's finished images and the passes of the image in hand; thread-safe to read.

    ``what`` and ``unit`` name the work for a display (``explaining``, ``images``; evaluate's
    sanity checks: ``sanity``, ``explanation passes``).
    """

    def __init__(self, what: str = "explaining", unit: str = "images", clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.unit = what, unit
        self.clock = clock
        self._lock = threading.Lock()
        self._state = WorkState(None, 0, 0, None, 0)

    def start(self, total: int | None, already: int = 0) -> None:
        """Explaining starts now (the model is loaded); ``already`` of ``total`` were done before."""
        with self._lock:
            self._state = WorkState(self.clock(), 0, already, total, 0)

    def image_done(self) -> None:
        with self._lock:
            self._state = replace(self._state, done=self._state.done + 1, passes=0, last_done=self.clock())

    def add_passes(self, count: int) -> None:
        with self._lock:
            self._state = replace(self._state, passes=self._state.passes + count)

    def state(self) -> WorkState:
        with self._lock:
            return self._state


_counting: list[WorkMeter] = []


@contextmanager
def counting(meter: WorkMeter) -> Iterator[WorkMeter]:
    """Passes counted inside go to ``meter`` (the innermost, when runs nest)."""
    _counting.append(meter)
    try:
        yield meter
    finally:
        _counting.remove(meter)


def current() -> WorkMeter | None:
    """The meter of the work under way (the innermost, when work nests), or None: what a display
    that does not hold the run itself (``camcli evaluate``'s) polls."""
    return _counting[-1] if _counting else None


def count_passes(count: int) -> None:
    """``count`` forward passes of the image in hand have finished (a no-op outside a run)."""
    if _counting:
        _counting[-1].add_passes(count)


def images_per_second(state: WorkState) -> float | None:
    """This run's speed: images finished over the time from the start of explaining to the latest
    of them (steady while the next image is under way), or None until an image has finished."""
    if state.started is None or state.done < 1 or state.last_done is None:
        return None
    return state.done / max(state.last_done - state.started, 1e-9)


def seconds_left(state: WorkState, now: float) -> float | None:
    """The time the images not yet done need at :func:`images_per_second`, less the time the
    next one has already had (a countdown between images, not a number that grows), or None."""
    speed = images_per_second(state)
    if speed is None or state.total is None:
        return None
    left = max(0, state.total - state.already - state.done)
    return max(0.0, left / speed - (now - state.last_done)) if left else 0.0

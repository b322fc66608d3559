"""Decoding processes that live and die with the process that started them.

A DataLoader worker is a fork of the run. Left to itself it outlives a run killed with
SIGKILL (nothing tells it), holding whatever the run had open. :func:`bind_to_parent` runs first
in every worker: on Linux the kernel kills the worker the moment its parent ends
(``PR_SET_PDEATHSIG``); elsewhere a watchdog thread notices the new parent within half a second.
Workers also ignore SIGINT and SIGTERM: a Ctrl-C in a terminal reaches the whole process group,
and the run, not its workers, decides how to stop (it finishes what is in flight, then shuts
them down).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCH_INTERVAL_S = 0.5


def bind_to_parent(parent_pid: int, _worker_id: int | None = None) -> None:
    """Make this process (a worker forked by ``parent_pid``) end when its parent ends.

    Called as a DataLoader ``worker_init_fn`` through ``functools.partial(bind_to_parent, os.getpid())``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not _kill_me_with_parent():
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="camcli-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent ended before the line above took effect
        os._exit(1)


def _kill_me_with_parent() -> bool:
    """Ask Linux to send SIGKILL to this process when its parent ends; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(_WATCH_INTERVAL_S)

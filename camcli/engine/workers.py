"""Decoding processes that live and die with the process that started them.

A DataLoader worker is a fork of the run. Left to itself it outlives a run killed with
SIGKILL (nothing tells it), holding whatever the run had open. :func:`bind_to_parent` runs first
in every worker: on Linux the kernel kills the worker the moment its parent ends
(``PR_SET_PDEATHSIG``); elsewhere a watchdog thread notices the new parent within half a second.
Workers also ignore SIGINT and SIGTERM: a Ctrl-C in a terminal reaches the whole process group,
and the run, not its workers, decides how to stop (it finishes what is in flight, then shuts
them down: :func:`shut_down`). Because they ignore SIGTERM, multiprocessing's own exit handler,
which ends daemon children with SIGTERM and then waits for them, would wait for ever on a worker
nobody shut down; :func:`_kill_daemon_children` ends them with SIGKILL first.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # its exit handler is registered first, so ours runs before it
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


def shut_down(iterator) -> None:
    """Shut a DataLoader iterator's workers down now (they get their stop message and are joined),
    whatever state an interrupted ``next()`` left it in; a no-op for an iterator without workers."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _kill_daemon_children() -> None:
    """At interpreter exit: SIGKILL the daemon children still alive (decoding workers ignore the
    SIGTERM multiprocessing would send them, and it would then wait for them for ever)."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if not children:
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGCHLD"):
        # torch's SIGCHLD handler raises for a worker killed by a signal: these are killed on purpose
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
    for child in children:
        try:
            child.join(timeout=5)
        except RuntimeError:  # a handler installed again meanwhile; the child is dead all the same
            pass


atexit.register(_kill_daemon_children)

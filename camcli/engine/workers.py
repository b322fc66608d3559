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

The workers hand decoded tensors over through sockets in a temporary folder multiprocessing
makes (``pymp-*`` in the system's temporary folder), removed at a normal exit but left behind by
a killed run. :func:`own_temp_dir` makes that folder ``camcli-PID-HOST-*`` instead, and removes
those of runs on this host that have ended; where ``TMPDIR`` is so long that a socket path in it
would not bind (a worker then fails and the run waits for it for ever), in ``/tmp``.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.process
import multiprocessing.util  # its exit handler is registered first, so ours runs before it
import os
import re
import shutil
import signal
import sys
import tempfile
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


_OWN_TEMP = re.compile(r"camcli-(\d+)-([0-9a-f]{8})-[^.]+")
#: the longest path of a Unix socket (sun_path less its terminating zero), and what multiprocessing
#: adds to the folder's for a socket (``/listener-`` and 8 random characters)
_SOCKET_PATH_MAX, _LISTENER = 107, 18


def own_temp_dir() -> None:
    """Before the first worker starts: multiprocessing's temporary folder, named by this process and
    host (``multiprocessing.util.get_temp_dir`` takes the one its process config names), and the
    folders of runs on this host that were killed, removed."""
    from camcli.output.tempfiles import host_id, process_alive

    config = multiprocessing.process.current_process()._config  # where get_temp_dir looks first
    if config.get("tempdir") is not None:
        return
    me = host_id()
    prefix = f"camcli-{os.getpid()}-{me}-"
    # a long TMPDIR makes the workers' sockets too long to bind, and the run would wait for them for ever
    root = next((r for r in (tempfile.gettempdir(), "/tmp")
                 if len(r) + 1 + len(prefix) + 8 + _LISTENER <= _SOCKET_PATH_MAX and os.path.isdir(r)), None)
    if root is None:
        return
    try:
        names = os.listdir(root)
    except OSError:
        names = []
    for name in names:
        match = _OWN_TEMP.fullmatch(name)
        if match and match.group(2) == me and not process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=prefix, dir=root)
    config["tempdir"] = folder
    # as multiprocessing does for its own folder: removed at a normal exit, after the workers
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True},
                                  exitpriority=-100)


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

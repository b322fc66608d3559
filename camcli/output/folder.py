"""Whether an output folder may be written, and one writer per folder at a time.

A run takes an exclusive lock (:class:`OutputLock`, ``fcntl.flock`` on a hidden lock file, one
per shard part) *before* it looks at the folder, so two runs started together cannot both
find it empty. The operating system drops the lock when its process ends, however it ends,
provided no other process shares the descriptor: a forked child (a decoding worker) closes its
copy at once, so a killed run never blocks ``--resume``. A lock still held while the run named in
it has provably ended (the same host, and its process is gone or is another process since) is
held by that run's leftover processes: a new run takes it over, with a log line. The temporary
files a killed run was writing are removed by the next run (:func:`remove_leftovers`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import shutil
import socket
import time
from pathlib import Path

from camcli import tasks
from camcli.errors import UsageError
from camcli.output.tempfiles import host_id, leftover_writer, process_alive, temp_path

#: what camcli writes into an output folder besides each task's CSV and folders (camcli/tasks/);
#: --overwrite removes these and nothing else
_COMMON_OUTPUTS = ("overlays", "heatmaps", "panels", "grid", "run.json", "run-settings.json", "index.html",
                   "evaluation.csv")
#: what the shards of one run write besides their CSV parts and their task's folders
_COMMON_SHARD_OUTPUTS = ("run.part-", "run-settings", "overlays", "heatmaps", "panels")


def own_outputs() -> tuple[str, ...]:
    """The names camcli writes into an output folder, every task's included."""
    return (*_COMMON_OUTPUTS, *(f"{t.csv_stem}.csv" for t in tasks.all_tasks()),
            *(f for t in tasks.all_tasks() for f in t.folders))


def _shard_outputs() -> tuple[str, ...]:
    return (*_COMMON_SHARD_OUTPUTS, *(f"{stem}.part-" for stem in tasks.csv_stems()),
            *(f for t in tasks.all_tasks() for f in t.folders))


def is_camcli_output(name: str) -> bool:
    return name in own_outputs() or (name.startswith(tuple(f"{s}.part-" for s in tasks.csv_stems()))
                                     and name.endswith(".csv")) or \
        (name.startswith("run.part-") and name.endswith(".json")) or \
        (name.startswith(".") and name.endswith(".tmp"))  # our interrupted temporary files only


def prepare_out_dir(out: Path) -> Path:
    """Create the output folder; refuse a path that exists and is not a folder."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out` {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {out}: {e.strerror or e}") from e
    return out


def claim_out_dir(out: Path, csv_name: str, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds other outputs unless resuming; with ``overwrite``, clear camcli's own.

    ``csv_name`` is this run's CSV: a shard (``predictions.part-...``) may start in a folder where
    only other shards of the same run have written. Call it holding this run's lock:
    a folder another live run or shard is writing is refused (see :func:`check_out_dir`).
    """
    check_out_dir(out, csv_name, resume, overwrite)
    if overwrite and not resume:
        for p in _present(out):
            if is_camcli_output(p.name):
                if p.is_symlink() or not p.is_dir():
                    p.unlink()  # a link is removed, never followed
                else:
                    shutil.rmtree(p)


def remove_leftovers(out: Path, log=None) -> int:
    """Remove the temporary files of writers that have ended (a run killed while it wrote a PNG).

    Only names from :func:`~camcli.output.tempfiles.temp_path` are touched, and only those written on
    this host by a process that is gone: the temporary files of another shard still writing into
    the same folder stay. Returns how many were removed; ``log`` gets one line when any were.
    """
    removed = 0
    me = host_id()
    for folder, _dirs, names in os.walk(out):
        for name in names:
            writer = leftover_writer(name)
            if writer is None or writer[1] != me or process_alive(writer[0]):
                continue
            try:
                os.unlink(os.path.join(folder, name))
                removed += 1
            except FileNotFoundError:
                pass
    if removed and log:
        log(f"output folder {out}: removed {removed} temporary file(s) left by a run that was killed while writing")
    return removed


def check_out_dir(out: Path, csv_name: str, resume: bool, overwrite: bool) -> None:
    """Refuse what :func:`claim_out_dir` would refuse, changing nothing: the command line asks this
    before it loads torch, so a wrong folder is reported at once.

    Another run or shard still writing into the folder is respected whatever the options: a
    whole run (or ``overwrite``, which would delete the others' parts) is refused while any is
    alive; a shard may start or resume beside the other shards of its run.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out` {out} exists and is not a folder")
    part = csv_name[csv_name.find(".part-"):].removesuffix(".csv") if ".part-" in csv_name else ""
    for other in _lock_parts(out):
        if other != part and (not part or overwrite):
            OutputLock(out, other).refuse_if_held()
    existing = _present(out)
    if not existing or resume or overwrite:
        return
    mine = [out / f"{stem}{part}.csv" for stem in tasks.csv_stems()]  # whatever the task: asked before it is known
    if part and not any(p.exists() for p in mine) and all(p.name.startswith(_shard_outputs()) for p in existing):
        return  # another shard of the same run already started here
    raise UsageError(f"output folder {out} is not empty: use `resume` to continue the run there, `overwrite` to "
                     "replace camcli's outputs in it, or another `out`")


LOCK_NAME = ".camcli-lock"


def _lock_parts(out: Path) -> list[str]:
    """The shard suffixes (``""`` for a whole run) of the lock files in ``out``."""
    if not out.is_dir():
        return []
    return sorted(p.name[len(LOCK_NAME):] for p in out.iterdir() if p.name.startswith(LOCK_NAME)
                  and leftover_writer(p.name) is None)


def _present(out: Path) -> list[Path]:
    """What the folder holds besides camcli's own bookkeeping (its lock files and temporary files):
    a folder holding only a user's hidden files (``.git``, ``.env``) is not empty."""
    if not out.is_dir():
        return []
    return [p for p in out.iterdir()
            if not (p.name.startswith(LOCK_NAME) or leftover_writer(p.name) is not None)]


#: descriptors of the locks this process holds; a forked child closes its copies (see :func:`_close_in_child`)
_HELD: set[int] = set()


def _close_in_child() -> None:
    """In a forked child: drop the inherited lock descriptors, so that only the run itself holds its lock."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class OutputLock:
    """An exclusive lock on an output folder (or on one shard's part of it), held while a run writes.

    >>> with OutputLock(Path("runs/demo")):     # doctest: +SKIP
    ...     ...                                 # a second run into runs/demo gets a UsageError here

    ``log`` receives one line when the lock of a run that has ended is taken over.
    """

    def __init__(self, out: Path, part: str = "", log=None) -> None:
        self.out = out
        self.path = out / f"{LOCK_NAME}{part}"
        self.log = log or (lambda msg: None)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, as before
            return
        for _attempt in range(5):
            fd = open_plain_file(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip()
                os.close(fd)
                if not _owner_has_ended(holder):
                    raise self._in_use(holder) from None
                self._replace_file(holder)
                continue
            if not _same_file(fd, self.path):  # taken over and replaced while we waited for it
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, _owner_text().encode())
            self._fd = fd
            _HELD.add(fd)
            return
        raise UsageError(f"output folder {self.out}: could not take its lock file {self.path.name} (other runs keep "
                         "replacing it); try again")

    def refuse_if_held(self) -> None:
        """The in-use error :meth:`acquire` would give, now, without taking the lock (the command
        line's early checks: a folder being written is "in use", not "not empty")."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        if not os.path.lexists(self.path):
            return  # no lock file: nobody holds it
        fd = open_plain_file(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            if not _owner_has_ended(holder):
                raise self._in_use(holder) from None
        finally:
            os.close(fd)

    def _in_use(self, holder: str) -> UsageError:
        return UsageError(f"output folder {self.out} is in use by another camcli run ({holder or 'another process'}); "
                          "wait for it to finish or choose another `out`")

    def _replace_file(self, holder: str) -> None:
        """Put a fresh lock file in place of one whose owner has ended (its leftovers keep the old one)."""
        fresh = temp_path(self.path)
        fresh.write_bytes(b"")
        os.replace(fresh, self.path)
        self.log(f"output folder {self.out}: taking over the lock of a run that has ended ({holder}); processes it "
                 "left behind still hold the old lock file")

    def release(self) -> None:
        """Unlock; the file stays (removing it would race with a run taking it)."""
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def open_plain_file(path: Path, flags: int) -> int:
    """``os.open`` that never follows a link and never opens anything but a plain file (a FIFO would
    block, a device or a link planted in the output folder would be written through): those are
    refused with a one-line ``UsageError``, as are files this user may not open."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise UsageError(f"{path} is a symbolic link; camcli writes only plain files of its own in an output "
                             "folder: remove the link") from None
        raise UsageError(f"cannot open {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path} is not a plain file (a folder, a FIFO or a device); camcli keeps its own files "
                         "there: remove it")
    return fd


def _owner_text() -> str:
    start = _process_start(os.getpid())
    return (f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
            + (f", start {start}" if start else ""))


_OWNER = re.compile(r"pid (\d+) on (\S+), since [^,]+(?:, start (\d+))?")


def _owner_has_ended(holder: str) -> bool:
    """Whether the run that wrote ``holder`` into the lock file has provably ended: it ran on this
    host and its process is gone, or the pid now belongs to a process started at another time."""
    match = _OWNER.fullmatch(holder)
    if not match or match.group(2) != socket.gethostname():
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    if not process_alive(pid):
        return True
    start = _process_start(pid)
    return bool(match.group(3) and start and start != match.group(3))


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

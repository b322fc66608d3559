"""Whether an output folder may be written, and one writer per folder at a time.

A run takes an exclusive lock (:class:`OutputLock`, ``fcntl.flock`` on a hidden lock file, one
per shard part) *before* it looks at the folder, so two runs started together cannot both
find it empty. The operating system drops the lock when its process ends, however it ends:
a killed run never blocks ``--resume``.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from camcli.errors import UsageError

#: what camcli writes into an output folder; --overwrite removes these and nothing else
OWN_OUTPUTS = ("overlays", "heatmaps", "panels", "grid", "predictions.csv", "run.json", "run-settings.json",
               "index.html", "evaluation.csv")
#: what the shards of one run write; a shard may start in a folder holding only these
_SHARD_OUTPUTS = ("predictions.part-", "run.part-", "run-settings", "overlays", "heatmaps", "panels")


def is_camcli_output(name: str) -> bool:
    return name in OWN_OUTPUTS or (name.startswith("predictions.part-") and name.endswith(".csv")) or \
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

    ``csv_name`` is this run's predictions file: a shard (``predictions.part-...``) may start in a
    folder where only other shards of the same run have written.
    """
    existing = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    if not existing or resume:
        return
    if overwrite:
        for p in existing:
            if is_camcli_output(p.name):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        return
    if csv_name != "predictions.csv" and not (out / csv_name).exists() and all(
            p.name.startswith(_SHARD_OUTPUTS) for p in existing):
        return  # another shard of the same run already started here
    raise UsageError(f"output folder {out} is not empty: use `resume` to continue the run there, `overwrite` to "
                     "replace camcli's outputs in it, or another `out`")


class OutputLock:
    """An exclusive lock on an output folder (or on one shard's part of it), held while a run writes.

    >>> with OutputLock(Path("runs/demo")):     # doctest: +SKIP
    ...     ...                                 # a second run into runs/demo gets a UsageError here
    """

    def __init__(self, out: Path, part: str = "") -> None:
        self.out = out
        self.path = out / f".camcli-lock{part}"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, as before
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UsageError(f"output folder {self.out} is in use by another camcli run ({holder}); wait for it "
                             "to finish or choose another `out`") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                 .encode())
        self._fd = fd

    def release(self) -> None:
        """Unlock; the file stays (removing it would race with a run taking it)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

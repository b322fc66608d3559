"""Temporary file names that say which process wrote them.

Every file camcli writes goes to a temporary name beside it first and is renamed into place.
The name carries the writer's pid and host, so that the next run into a folder can remove
what a killed run was writing (:func:`camcli.output.folder.remove_leftovers`) and leave alone
what a live one (another shard) still writes. No torch here: the command line's early checks
import this.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from pathlib import Path


def host_id() -> str:
    """This machine, in eight hex digits (a temporary name must stay short)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_path(path: Path) -> Path:
    """``.cat.png.camcli-4242-1a2b3c4d-9f8e7d.tmp`` beside ``path``: hidden, and naming the writing
    process and host, so that only the temporary files of runs that have ended are ever removed."""
    return path.with_name(f".{path.name}.camcli-{os.getpid()}-{host_id()}-{secrets.token_hex(3)}.tmp")


_TEMP = re.compile(r"\..+\.camcli-(\d+)-([0-9a-f]{8})-[0-9a-f]{6}\.tmp")


def leftover_writer(name: str) -> tuple[int, str] | None:
    """The (pid, host) that wrote a temporary file named by :func:`temp_path`; ``None`` for any other name."""
    match = _TEMP.fullmatch(name)
    return (int(match.group(1)), match.group(2)) if match else None


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (ours counts; someone else's too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        pass
    return True

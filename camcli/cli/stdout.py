"""Stdout carries camcli's data and nothing else.

Libraries print to stdout while a model loads (torch.hub writes ``Downloading: "https://..."``
there), which breaks ``camcli explain --json | jq``. While a command that loads a model runs,
:class:`DataStdout` sends everything written to stdout (Python's ``sys.stdout`` and, where stdout
is a real file descriptor, descriptor 1 itself, so C code too) to stderr, and keeps the real stdout
for camcli's own data: :attr:`DataStdout.stream`.
"""

from __future__ import annotations

import io
import os
import sys


class DataStdout:
    """``with DataStdout() as data: print(record, file=data.stream)``; anything else that prints goes to stderr."""

    def __init__(self) -> None:
        self.stream = sys.stdout
        self._saved_sys = None
        self._saved_fd: int | None = None

    def __enter__(self) -> DataStdout:
        self._saved_sys = sys.stdout
        if _writes_fd_1(sys.stdout):
            sys.stdout.flush()
            self._saved_fd = os.dup(1)
            os.dup2(2, 1)  # descriptor 1 now reaches stderr; the data keep their own copy
            self.stream = io.TextIOWrapper(io.FileIO(self._saved_fd, "w", closefd=False),
                                           encoding=sys.stdout.encoding or "utf-8", line_buffering=True,
                                           errors="replace")
        else:  # stdout is no descriptor (a test runner's capture): the Python level alone
            self.stream = sys.stdout
        sys.stdout = sys.stderr
        return self

    def __exit__(self, *exc) -> bool:
        sys.stdout = self._saved_sys
        if self._saved_fd is not None:
            self.stream.flush()
            sys.stderr.flush()
            os.dup2(self._saved_fd, 1)
            os.close(self._saved_fd)
            self._saved_fd = None
        self.stream = self._saved_sys
        return False


def _writes_fd_1(stream) -> bool:
    try:
        return stream.fileno() == 1
    except (AttributeError, OSError, ValueError):
        return False

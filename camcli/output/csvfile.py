"""Reading and writing a run's CSV (``predictions.csv``, ``detections.csv``, ...) as typed rows
(:mod:`camcli.output.rows`).

Rows are appended and flushed as images finish, so a killed run keeps what it finished; a
reader takes only complete records (a killed run may leave half of one). A record is read as
the csv module parses it, never by lines: a file name may hold a newline, a carriage return or
U+2028, which the writer quotes. Rewrites (resume, sorting, merging shards) go through a
temporary file and a rename.

Cells a spreadsheet would run as a formula (text starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return: a file or label named ``=HYPERLINK(...)``) are written with a
leading ``'``, as OWASP advises, and so is text that starts with ``'`` itself; the reader takes
one ``'`` off again, so names read back exactly as they were.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path

from camcli.errors import OutputError, UsageError
from camcli.output.tempfiles import temp_path
from camcli.output.rows import PredictionRow, Row


#: the first characters that make a spreadsheet read a cell as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs: a leading ``'`` before a formula's first character
    (numbers such as ``-0.5`` stay as they are) and before a leading ``'``."""
    if text.startswith("'") or (text.startswith(_FORMULA_START) and not _is_number(text)):
        return "'" + text
    return text


def from_cell(text: str) -> str:
    """The text :func:`spreadsheet_safe` was given."""
    return text[1:] if text.startswith("'") else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _safe_cells(cells: dict[str, str]) -> dict[str, str]:
    return {k: spreadsheet_safe(v) for k, v in cells.items()}


class PredictionsCSV:
    """A predictions file being written: the header once, then rows appended and flushed.

    ``keep`` rows (from a resumed run) are written first, through a temporary file and a rename,
    so that a half-written last line of the killed run never survives.
    """

    def __init__(self, path: Path, columns: list[str], keep: Iterable[PredictionRow] = ()) -> None:
        self.path = path
        self.columns = columns
        write_rows(path, columns, keep)
        self._file = open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW), "a", newline="",
                          encoding="utf-8")
        self._identity = _identity(os.fstat(self._file.fileno()))
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")

    def write(self, row: PredictionRow) -> None:
        self._writer.writerow(_safe_cells(row.cells()))
        self._file.flush()

    def check_in_place(self) -> None:
        """Refuse to go on writing rows nobody will read: the file (or the whole output folder) was
        removed or replaced while the run wrote it."""
        try:
            now = _identity(os.stat(self.path, follow_symlinks=False))
        except OSError:
            now = None
        if now != self._identity:
            raise OutputLost(f"{self.path} was {'replaced' if now else 'removed'} while the run wrote it (was the "
                             "output folder deleted?): the rows of the images explained since are lost; rerun with "
                             "`resume` into a folder that stays")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class OutputLost(OutputError):
    """The run's CSV is gone from its place: what the run explains from now on would be lost."""


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def write_rows(path: Path, columns: list[str], rows: Iterable[PredictionRow]) -> None:
    """Write a whole predictions file atomically."""
    tmp = temp_path(path)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", restval="")
        w.writeheader()
        for row in rows:
            w.writerow(_safe_cells(row.cells()))
    os.replace(tmp, path)


def write_table(path: Path, header: Iterable[str], rows: Iterable[Iterable]) -> None:
    """A CSV of plain values (evaluation.csv), each spelled as camcli spells a cell, written atomically."""
    from camcli.output.rows import cell

    tmp = temp_path(path)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(header))
        for row in rows:
            w.writerow([spreadsheet_safe(cell(v)) for v in row])
    os.replace(tmp, path)


def read_rows(path: Path, row_type: type[Row] | None = None) -> tuple[list[str], list[Row]]:
    """Header and the completely written rows of a run's CSV (``[], []`` if it is missing), as
    ``row_type`` (by default the row of the task whose CSV the file's name is).

    A file that is not camcli's (unreadable cells, missing columns) is a ``UsageError``.
    """
    if row_type is None:
        from camcli import tasks

        task = tasks.by_csv(path.name.split(".")[0])
        row_type = task.row_type if task is not None else PredictionRow
    if os.path.lexists(path) and not path.is_file():
        raise UsageError(f"{path} is not a file (a folder, a link or a device): move it away, or use `overwrite`")
    if not path.is_file():
        return [], []
    try:
        text = path.read_bytes().decode("utf-8")
        records = list(csv.reader(io.StringIO(text, newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if records and not text.endswith("\n"):
        records.pop()  # the unfinished last record of a killed run (every record ends with a line break)
    header = records[0] if records else []
    rows = []
    for number, values in enumerate(records[1:], start=2):
        if len(values) != len(header):
            continue  # a short or long record: not written completely
        try:
            rows.append(row_type.from_cells({k: from_cell(v) for k, v in zip(header, values)}))
        except (KeyError, ValueError, TypeError) as e:
            raise UsageError(f"{path} is not a camcli predictions file (record {number}: {e})") from None
    return header, rows


def sort_by_index(path: Path) -> None:
    """Rewrite a predictions file in input order (rows of one image keep their order)."""
    header, rows = read_rows(path)
    write_rows(path, header, sorted(rows, key=lambda r: r.index))  # stable

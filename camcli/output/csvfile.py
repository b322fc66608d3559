"""Reading and writing ``predictions.csv`` files as :class:`~camcli.output.rows.PredictionRow` records.

Rows are appended and flushed as images finish, so a killed run keeps what it finished; a
reader takes only complete lines (a killed run may leave half of one). Rewrites (resume,
sorting, merging shards) go through a temporary file and a rename.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from camcli.errors import UsageError
from camcli.output.tempfiles import temp_path
from camcli.output.rows import PredictionRow


class PredictionsCSV:
    """A predictions file being written: the header once, then rows appended and flushed.

    ``keep`` rows (from a resumed run) are written first, through a temporary file and a rename,
    so that a half-written last line of the killed run never survives.
    """

    def __init__(self, path: Path, columns: list[str], keep: Iterable[PredictionRow] = ()) -> None:
        self.path = path
        self.columns = columns
        write_rows(path, columns, keep)
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")

    def write(self, row: PredictionRow) -> None:
        self._writer.writerow(row.cells())
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def write_rows(path: Path, columns: list[str], rows: Iterable[PredictionRow]) -> None:
    """Write a whole predictions file atomically."""
    tmp = temp_path(path)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", restval="")
        w.writeheader()
        for row in rows:
            w.writerow(row.cells())
    os.replace(tmp, path)


def write_table(path: Path, header: Iterable[str], rows: Iterable[Iterable]) -> None:
    """A CSV of plain values (evaluation.csv), each spelled as camcli spells a cell, written atomically."""
    from camcli.output.rows import cell

    tmp = temp_path(path)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(header))
        for row in rows:
            w.writerow([cell(v) for v in row])
    os.replace(tmp, path)


def read_rows(path: Path) -> tuple[list[str], list[PredictionRow]]:
    """Header and the completely written rows of a predictions file (``[], []`` if it is missing).

    A file that is not camcli's (unreadable cells, missing columns) is a ``UsageError``.
    """
    if not path.is_file():
        return [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from e
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # drop the unfinished last line
    reader = csv.DictReader(text.splitlines())
    header = list(reader.fieldnames or [])
    rows = []
    try:
        for cells in reader:
            if None in cells.values() or None in cells:
                continue  # a short or long line: not written completely
            rows.append(PredictionRow.from_cells(cells))
    except (KeyError, ValueError, TypeError) as e:
        raise UsageError(f"{path} is not a camcli predictions file (line {reader.line_num}: {e})") from None
    return header, rows


def sort_by_index(path: Path) -> None:
    """Rewrite a predictions file in input order (rows of one image keep their order)."""
    header, rows = read_rows(path)
    write_rows(path, header, sorted(rows, key=lambda r: r.index))  # stable

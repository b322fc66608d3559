"""Writing images in background threads while handing them back in input order.

Overlays are coloured, blended, encoded and written by two threads (OpenCV and zlib release
the GIL) while the next batch is computed. Results are handed back, and their CSV rows
written, strictly in submission order whatever the timing, and at most ``limit`` images are
in flight, so memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from camcli.engine.stream import ImageResult
from camcli.output.csvfile import PredictionsCSV
from camcli.output.image_writer import write_image
from camcli.output.rows import PredictionRow
from camcli.settings import ExplainSettings

Written = tuple[ImageResult, list[PredictionRow]]


class OrderedWriter:
    """At most ``limit`` images and ``max_bytes`` of decoded originals wait to be written
    (always at least one); ``threads`` write them."""

    def __init__(self, out: Path, settings: ExplainSettings, csv: PredictionsCSV, limit: int,
                 max_bytes: int | None = None, threads: int = 2, write=write_image) -> None:
        self.out, self.settings, self.csv, self.limit = out, settings, csv, max(1, limit)
        self.write = write  # one image's files and rows (the run's task: camcli/tasks/)
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="camcli-write")
        self._pending: deque[tuple[ImageResult, Future]] = deque()
        self._bytes = 0

    def submit(self, result: ImageResult) -> Iterator[Written]:
        """Queue ``result``; hand back the images that are finished, oldest first."""
        self._pending.append((result, self._pool.submit(self.write, result, self.out, self.settings)))
        self._bytes += _nbytes(result)
        while self._pending and (len(self._pending) > self.limit or self._over_budget()
                                 or self._pending[0][1].done()):
            yield self._finish_one()

    def _over_budget(self) -> bool:
        return self.max_bytes is not None and len(self._pending) > 1 and self._bytes > self.max_bytes

    def drain(self) -> Iterator[Written]:
        """Wait for everything in flight (also after Ctrl-C)."""
        while self._pending:
            yield self._finish_one()

    def _finish_one(self) -> Written:
        result, future = self._pending.popleft()
        rows = future.result()
        self._bytes -= _nbytes(result)
        for row in rows:
            self.csv.write(row)
        self.csv.check_in_place()  # once an image: its rows are on disk, not in a deleted folder
        return result, rows

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.csv.close()


def _nbytes(result: ImageResult) -> int:
    return result.image.nbytes if result.image is not None else 0

"""A whole ``explain`` run: settings and inputs in; results out, and files when writing.

:class:`Run` is what ``camcli explain`` iterates and what ``camcli.explain(...)`` returns. It
asks :class:`~camcli.session.ExplainSession` for a ready explainer, streams the images through
it, and, when writing, hands each image to the output parts: the folder lock and policy, resume,
the ordered writer, shard merging, the run's pictures and ``run.json``. Its summary is an
attribute once the run has ended. It installs no signal handler: a caller that wants a graceful
Ctrl-C (the command line does) calls :meth:`Run.request_stop`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from camcli.engine.images import discover
from camcli.engine.stream import ImageResult
from camcli.errors import UsageError
from camcli.output.csvfile import PredictionsCSV, sort_by_index
from camcli.output.folder import OutputLock, claim_out_dir, prepare_out_dir
from camcli.output.paths import write_json
from camcli.output.pictures import write_run_pictures
from camcli.output.render import colormap_lut
from camcli.output.rows import PredictionRow, columns
from camcli.run.manifest import write_manifest
from camcli.run.ordered_writer import OrderedWriter
from camcli.run.resume import SETTINGS_FILE, finished_rows, fingerprint, whole_batches
from camcli.run.shards import Shard, merge_after_barrier
from camcli.session import ExplainSession
from camcli.settings import ExplainSettings


@dataclass
class RunSummary:
    images: int  # this shard's images, finished earlier or now
    ok: int
    failed: int
    empty_maps: int
    seconds: float
    out: Path | None  # None when nothing was written
    interrupted: bool = False
    resumed: int = 0  # images already done by an earlier run
    csv_name: str = "predictions.csv"


class Run:
    """Explain every image of ``inputs`` with ``settings``; iterate for results in input order.

    >>> run = Run(settings, ["photos/"])     # doctest: +SKIP
    >>> for result in run: ...               # ImageResult per image, as its files are written
    >>> run.summary.failed                   # doctest: +SKIP

    With ``write=False`` nothing is written (no folder, no lock, no CSV): the Python API without
    ``out=`` and ``camcli evaluate`` explaining images in memory.
    """

    def __init__(self, settings: ExplainSettings, inputs: list[str], *, write: bool = True,
                 log: Callable[[str], None] | None = None) -> None:
        if settings.resume and not write:
            raise UsageError("`resume` needs an output folder (`out`)")
        self.settings = settings
        self.inputs = [str(i) for i in inputs]
        self.write = write
        self.log = log or (lambda msg: None)
        self.session: ExplainSession | None = None  # set once the model is loaded
        self.total: int | None = None  # images in this shard, once discovered
        self.summary: RunSummary | None = None  # set when the run has ended
        self._stop = False

    def request_stop(self) -> None:
        """Stop after the image in hand; what is in flight is still written and the summary made."""
        self._stop = True

    def __iter__(self) -> Iterator[ImageResult]:
        for result, _rows in self.outcomes():
            yield result

    def execute(self) -> RunSummary:
        """Run to the end and return the summary."""
        for _ in self.outcomes():
            pass
        return self.summary

    def outcomes(self) -> Iterator[tuple[ImageResult, list[PredictionRow]]]:
        """``(result, rows)`` per image in input order; ``rows`` as written to the CSV (empty when not writing)."""
        started = time.perf_counter()
        s = self.settings
        all_items = discover(self.inputs, hidden=s.hidden)
        shard = Shard.of(s)
        items = shard.select(all_items)
        self.total = len(items)
        with ExitStack() as stack:
            out, keep, writer, raised = None, [], None, None
            if self.write:
                colormap_lut(s.colormap)  # an unknown colour map fails before anything is loaded
                out = prepare_out_dir(Path(s.out))
                stack.enter_context(OutputLock(out, shard.suffix))
                claim_out_dir(out, shard.csv_name, s.resume, s.overwrite)
            self.session = session = ExplainSession.open(s, local_rank=shard.local_rank)
            if self.write:
                expected = fingerprint(s, session.loaded)
                keep = finished_rows(out, shard.csv_name, expected, session.maps_per_image) if s.resume else []
                if shard.index == 0 or not (out / SETTINGS_FILE).exists():
                    write_json(out / SETTINGS_FILE, expected)
                csv = PredictionsCSV(out / shard.csv_name, columns(s.topk, s.boxes, s.box_rotated, s.box_mode == "all"),
                                     keep=keep)
                writer = OrderedWriter(out, s, csv, limit=2 * s.batch_size)
            done = {r.path for r in keep}
            self.log(f"{session.describe()}; {len(items)} image(s){shard.describe(len(all_items))}"
                     + (f", {len(done)} already done" if done else ""))
            counts = {"ok": len(done), "failed": 0, "empty": sum(bool(r.empty_map) for r in keep)}
            stopped = interrupted = False

            def counted(result: ImageResult, rows: list[PredictionRow]):
                nonlocal stopped
                failed = result.status != "ok" or any(not r.ok for r in rows)
                counts["failed" if failed else "ok"] += 1
                counts["empty"] += sum(m.empty for m in result.maps)
                stopped = stopped or (failed and s.fail_fast)
                return result, rows

            try:
                try:
                    for result in session.results(whole_batches(items, done, s.batch_size), skip=done):
                        for pair in (writer.submit(result) if writer else [(result, [])]):
                            yield counted(*pair)
                        if stopped:
                            self.log(f"stopping at the first failure (fail-fast): {result.item.rel}")
                            break
                        if self._stop:
                            interrupted = True
                            break
                except KeyboardInterrupt as e:
                    interrupted, raised = True, e
                except RuntimeError:
                    if not self._stop:  # a loader worker killed by the same Ctrl-C
                        raise
                    interrupted = True
                if writer:
                    for pair in writer.drain():  # finish what is in flight, also after Ctrl-C
                        yield counted(*pair)
            finally:
                if writer:
                    writer.close()

            summary = RunSummary(len(items), counts["ok"], counts["failed"], counts["empty"], 0.0, out, interrupted,
                                 len(done), shard.csv_name)
            if self.write:
                self._finish_folder(out, shard, bool(keep))
                summary.seconds = time.perf_counter() - started
                write_manifest(out / shard.manifest_name, session, self.inputs, shard, summary, stopped)
            summary.seconds = time.perf_counter() - started
            self.summary = summary
        if raised is not None:
            raise raised

    def _finish_folder(self, out: Path, shard: Shard, resumed: bool) -> None:
        if resumed:
            sort_by_index(out / shard.csv_name)
        merged = merge_after_barrier(out, shard, self.log) if shard.distributed else False
        if shard.count == 1 or merged:
            write_run_pictures(out, self.settings.html, self.settings.grid)

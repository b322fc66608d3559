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
from dataclasses import dataclass, field, replace
from pathlib import Path

from camcli.engine.discovery import KIND_FORMATS, KIND_NOUNS
from camcli.engine.images import discover
from camcli.engine.stream import ImageResult
from camcli.engine.work import WorkMeter, counting
from camcli.errors import UsageError
from camcli.engine.layer_names import display_name
from camcli.output.csvfile import PredictionsCSV, sort_by_index
from camcli.output.folder import OutputLock, check_out_dir, claim_out_dir, prepare_out_dir, remove_leftovers
from camcli.output.paths import write_json
from camcli.output.pictures import write_run_pictures
from camcli.output.render import colormap_lut
from camcli.output.rows import PredictionRow
from camcli.run.manifest import write_manifest
from camcli.run.memory import MemoryPlan, budget_bytes, plan_memory
from camcli.run.ordered_writer import OrderedWriter
from camcli.run.resume import (PRESENTATION, SETTINGS_FILE, finished_rows, fingerprint, presentation,
                               presentation_changes, whole_batches)
from camcli.run.shards import Shard, merge_after_barrier
from camcli.run.warnings import RunWarnings
from camcli.session import ExplainSession
from camcli.settings import ExplainSettings


class StopRequested(BaseException):
    """Raised into a computing run by a signal handler (see :attr:`Run.computing`): the batch in hand
    is dropped, everything finished is written, and the run ends as interrupted.

    A ``BaseException``, as ``KeyboardInterrupt`` is: it may land anywhere in the computation, also
    inside code that turns any ``Exception`` into a finding (decoding an image in the main process
    makes a failed file an error row), and a stop is never an image's failure."""


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
    unit: str = "image"  # what its inputs are, for the lines that count them (a volume run's: 3D scan)


@dataclass
class _Tally:
    """Counts as images finish; ``stopped`` once an image fails under ``fail_fast``."""

    ok: int = 0
    failed: int = 0
    empty: int = 0
    fail_fast: bool = False
    stopped: bool = False
    interrupted: bool = False
    warnings: RunWarnings = field(default_factory=lambda: RunWarnings(lambda msg: None))

    def add(self, result: ImageResult, rows: list[PredictionRow]) -> tuple[ImageResult, list[PredictionRow]]:
        failed = result.status != "ok" or any(not r.ok for r in rows)
        if failed:
            self.failed += 1
            self.stopped = self.stopped or self.fail_fast
        else:
            self.ok += 1
        self.empty += sum(m.empty for m in result.maps)
        self.warnings.add(result)
        return result, rows


class Run:
    """Explain every image of ``inputs`` with ``settings``; iterate for results in input order.

    >>> run = Run(settings, ["photos/"])     # doctest: +SKIP
    >>> for result in run: ...               # ImageResult per image, as its files are written
    >>> run.summary.failed                   # doctest: +SKIP

    With ``write=False`` nothing is written (no folder, no lock, no CSV): the Python API without
    ``out=`` and ``camcli evaluate`` explaining images in memory.
    """

    def __init__(self, settings: ExplainSettings, inputs: list[str], *, write: bool = True,
                 log: Callable[[str], None] | None = None, module=None, items: list | None = None) -> None:
        if settings.resume and not write:
            raise UsageError("`resume` needs an output folder (`out`)")
        self.settings = settings
        self.inputs = [str(i) for i in inputs]
        self.write = write
        self.log = log or (lambda msg: None)
        self.module = module  # the model itself, handed over from Python (else settings.model names it)
        self.items = items  # ``inputs`` already discovered (the command line checks them first), else None
        self.session: ExplainSession | None = None  # set once the model is loaded
        self.total: int | None = None  # images in this shard, once discovered
        self.summary: RunSummary | None = None  # set when the run has ended
        self.work = WorkMeter()  # how far the run has got, for a progress display polling from another thread
        self.warnings: list[dict] = []  # failed method assumptions and all-empty layers, when the run has ended
        self._stop = False
        self._computing = False
        self._started = False
        self._found: tuple[list, list] | None = None  # (every input image, this shard's), once discovered

    def request_stop(self) -> None:
        """Stop after the image in hand; what is in flight is still written and the summary made."""
        self._stop = True

    @property
    def computing(self) -> bool:
        """Whether the run is computing a batch (no file is being written): a signal handler may then
        raise :class:`StopRequested` to drop that batch instead of waiting for it (Score-CAM's can take minutes)."""
        return self._computing

    def __iter__(self) -> Iterator[ImageResult]:
        for result, _rows in self.outcomes():
            yield result

    def __len__(self) -> int:
        """How many images this run explains (this shard's), found without loading the model."""
        return len(self._discover()[1])

    def _discover(self) -> tuple[list, list]:
        if self._found is None:
            s = self.settings
            found = self.items if self.items is not None else discover(self.inputs, hidden=s.hidden,
                                                                         out=s.out if self.write else None)
            self._found = (found, Shard.of(s).select(found))
            self.total = len(self._found[1])
        return self._found

    def execute(self) -> RunSummary:
        """Run to the end and return the summary."""
        for _ in self.outcomes():
            pass
        return self.summary

    def outcomes(self) -> Iterator[tuple[ImageResult, list[PredictionRow]]]:
        """``(result, rows)`` per image in input order; ``rows`` as written to the CSV (empty when not writing)."""
        if self._started:  # its results are not kept (a folder of maps would not fit in memory)
            raise UsageError("this run has already run: a Run explains its images once; keep its results with "
                             "`results = list(run)`, or call camcli.explain again")
        self._started = True
        started = time.perf_counter()
        s = self.settings
        all_items, items = self._discover()
        shard = Shard.of(s)
        with ExitStack() as stack:
            if self.write:
                self._check_folder(shard)
            self.session = session = ExplainSession.open(s, local_rank=shard.local_rank, module=self.module)
            task = session.task
            gathered = task.gathered(all_items)
            if gathered is not all_items:  # regrouped (a folder of frames is one clip): the shards split the groups
                items = shard.select(gathered)
            items = self._of_kind(items, task.inputs)
            shard = replace(shard, stem=task.csv_stem)  # the folder is claimed knowing the task's file names
            out = self._claim_folder(stack, shard) if self.write else None
            keep = self._finished_rows(out, shard) if self.write else []
            done = {r.path for r in keep}
            plan = plan_memory(items, session.batch_size, s.workers, budget_bytes(s.memory_budget))
            plan = replace(plan, batches=whole_batches(plan.batches, done))
            noun = KIND_NOUNS[task.inputs]
            self.work.unit = f"{noun}s"  # the progress lines count what the run explains
            self.log(f"{session.describe()}; {len(items)} {noun}(s){shard.describe(len(all_items))}"
                     + (f", {len(done)} already done" if done else "") + f"; {task.plan_in_words(session, plan)}")
            for line in session.cost_notes():
                self.log(line)
            tally = _Tally(ok=len(done), empty=sum(bool(r.empty_map) for r in keep), fail_fast=s.fail_fast,
                           warnings=RunWarnings(self.log))
            writer = None
            if self.write:
                csv = PredictionsCSV(out / shard.csv_name, task.header(s, session), keep=keep)
                writer = OrderedWriter(out, s, csv, limit=2 * session.batch_size, max_bytes=plan.writer_bytes,
                                       threads=plan.writer_threads, write=task.write)
            self.work.start(len(items), already=len(done))
            try:
                with counting(self.work):
                    raised = yield from self._stream(session, plan, done, writer, tally)
            finally:
                if writer:
                    writer.close()
            if writer:
                writer.csv.check_in_place()  # the folder deleted under the run: say so, never "24 of 24"
            lm = session.loaded
            self.warnings = tally.warnings.finish(
                lambda layer: task.earlier_layer(lm, layer, session.device), session.empty_cause())
            summary = RunSummary(len(items), tally.ok, tally.failed, tally.empty, 0.0, out, tally.interrupted,
                                 len(done), shard.csv_name, noun)
            if self.write:
                self._finish_folder(out, shard, bool(keep))
            summary.seconds = time.perf_counter() - started
            if self.write:
                write_manifest(out / shard.manifest_name, session, self.inputs, shard, summary, tally.stopped,
                               self.warnings)
            self.summary = summary
        if raised is not None:
            raise raised

    def _of_kind(self, items: list, kind: str) -> list:
        """The inputs the task explains: found ones of another kind (scans beside images) are left
        out, with a line saying so; named ones stay (their rows say what is wrong with them)."""
        kept = [i for i in items if i.kind == kind or i.named]
        ours = KIND_NOUNS[kind]
        others = [KIND_NOUNS[k] for k in dict.fromkeys(i.kind for i in items if i.kind != kind)]
        if len(kept) < len(items):
            self.log(f"left out {len(items) - len(kept)} {' or '.join(others)}(s) found in the input folders: this model "
                     f"explains {ours}s")
        if items and not kept:
            raise UsageError(f"no {ours}s among the inputs, which hold {len(items)} {' or '.join(others)}(s): this model "
                             f"explains {ours}s" + KIND_FORMATS.get(kind, ""))
        self.total = len(kept)
        return kept

    def _check_folder(self, shard: Shard) -> None:
        """What makes the run fail before the model is loaded: an unknown colour map, an output
        folder that may not be written."""
        s = self.settings
        colormap_lut(s.colormap)
        check_out_dir(Path(s.out), shard.csv_name, s.resume, s.overwrite)

    def _claim_folder(self, stack: ExitStack, shard: Shard) -> Path:
        """Create and lock the output folder (the lock lives as long as ``stack``), then check it may be written."""
        s = self.settings
        out = prepare_out_dir(Path(s.out))
        stack.enter_context(OutputLock(out, shard.suffix, log=self.log))
        claim_out_dir(out, shard.csv_name, s.resume, s.overwrite)
        remove_leftovers(out, self.log)
        return out

    def _finished_rows(self, out: Path, shard: Shard) -> list[PredictionRow]:
        """With ``resume``, the rows an earlier run finished; records this run's settings fingerprint."""
        expected = fingerprint(self.settings, self.session.loaded)
        keep = (finished_rows(out, shard.csv_name, expected, self.session.maps_per_image)
                if self.settings.resume else [])
        changed = presentation_changes(out, self.settings) if self.settings.resume else []
        done_paths = {r.path for r in keep}
        if changed and keep:
            self.log(f"presentation settings differ from the earlier run: {', '.join(changed)}; the {len(done_paths)} "
                     "image(s) finished earlier keep their files, new images and the run's gallery and sheets use "
                     "the new settings (`overwrite` redraws everything)")
        if shard.index == 0 or not (out / SETTINGS_FILE).exists():
            write_json(out / SETTINGS_FILE, expected | {PRESENTATION: presentation(self.settings)})
        return keep

    def _stream(self, session: ExplainSession, plan: MemoryPlan, done: set[str], writer: OrderedWriter | None,
                tally: _Tally):
        """Yield ``(result, rows)`` in order until the end, a stop or Ctrl-C; return a Ctrl-C to re-raise."""
        raised = None
        if self._stop:  # asked to stop while the model was loading
            tally.interrupted = True
            return raised
        results = session.results([i for batch in plan.batches for i in batch], skip=done, plan=plan)
        try:
            while True:
                self._computing = True
                try:
                    result = next(results, None)
                finally:
                    self._computing = False
                if result is None:
                    break
                self.work.image_done()  # explained; its files follow on the writer's threads
                for pair in (writer.submit(result) if writer else [(result, [])]):
                    yield tally.add(*pair)
                if tally.stopped:
                    self.log(f"stopping at the first failure (fail-fast): {result.item.rel}")
                    break
                if self._stop:
                    tally.interrupted = True
                    break
        except StopRequested:
            tally.interrupted = True
            results.close()  # the decoding workers are shut down now, not when collected
        except KeyboardInterrupt as e:
            tally.interrupted, raised = True, e
        except RuntimeError:
            if not self._stop:  # a loader worker killed by the same Ctrl-C
                raise
            tally.interrupted = True
        if writer:
            for pair in writer.drain():  # finish what is in flight, also after Ctrl-C
                yield tally.add(*pair)
        return raised

    def _finish_folder(self, out: Path, shard: Shard, resumed: bool) -> None:
        if resumed:
            sort_by_index(out / shard.csv_name)
        merged = merge_after_barrier(out, shard, self.log) if shard.distributed else False
        if shard.count == 1 or merged:
            session = self.session
            about = {"model": session.loaded.describe(), "methods": [m.name for m in session.methods],
                     "layers": [display_name(layer) for layer in session.layers]} if session else None
            write_run_pictures(out, self.settings.html, self.settings.grid, about)

"""Pictures of a whole run, made from its final ``predictions.csv``: the gallery and contact sheets.

Built after the run from the CSV (not from the stream), so resumed and merged runs get them
too, and they show exactly what the CSV says.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import cv2

from camcli import tasks
from camcli.output.csvfile import read_rows
from camcli.output.figures import ContactSheets
from camcli.output.gallery import Gallery
from camcli.output.paths import atomic_write
from camcli.output.render import encode_png


def run_csv(out: Path) -> Path:
    """A finished run's CSV: its task's (``predictions.csv``, a detection run's ``detections.csv``,
    a segmentation run's ``segments.csv``); ``predictions.csv`` when there is none."""
    return out / f"{run_task(out).csv_stem}.csv"


def run_task(out: Path):
    """The task of the run in ``out`` (by its CSV); a classifier's when there is none."""
    return tasks.of_folder(out) or tasks.fallback()


def write_run_pictures(out: Path, html: bool, grid: bool, about: dict | None = None) -> None:
    """``index.html`` (with ``html``; ``about``: the run's ``model``, ``methods`` and ``layers`` for its
    header) and ``grid/sheet_NNN.png`` (with ``grid``)."""
    if not (html or grid):
        return
    task = run_task(out)
    _header, rows = read_rows(out / f"{task.csv_stem}.csv", task.row_type)
    if html:
        gallery = Gallery(out, about, task)
        try:
            for _path, group in groupby(rows, key=lambda r: r.path):
                gallery.add(list(group))
        finally:
            gallery.close()
    if grid:
        sheets, count = ContactSheets(), 0

        def save(sheet) -> None:
            nonlocal count
            if sheet is not None:
                count += 1
                atomic_write(out / "grid" / f"sheet_{count:03d}.png", encode_png(sheet))

        for row in rows:
            if not row.ok or not row.output:
                continue
            picture = cv2.imread(str(out / row.output), cv2.IMREAD_COLOR)
            if picture is not None:
                save(sheets.add(picture[..., ::-1], f"{row.path}\n{row.method} @ {row.layer}\n{row.explained_label}"))
        save(sheets.flush())


def rebuild_pictures(out: Path, grid: bool = False) -> Path:
    """(Re)build a finished run's ``index.html`` (and with ``grid`` its contact sheets) from its
    ``predictions.csv`` and ``run.json``: ``camcli gallery``, and ``camcli evaluate --html`` to link its report."""
    import json

    from camcli.errors import UsageError

    if not run_csv(out).is_file():
        names = [f"{stem}.csv" for stem in tasks.csv_stems()]
        raise UsageError(f"{out} has no {', '.join(names[:-1])} or {names[-1]}: is it a `camcli explain` output "
                         "folder?")
    about = None
    try:
        manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
        about = {"model": manifest.get("model"), "methods": manifest.get("methods"), "layers": manifest.get("layers")}
    except (OSError, ValueError, AttributeError):
        pass  # no run.json (a merged or interrupted run): the header names no model
    write_run_pictures(out, True, grid, about)
    return out / "index.html"

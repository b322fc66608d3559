"""The maps an audit looks across: a finished run's saved heatmaps, downsampled to one small grid.

An audit needs each map itself, so it reads the files ``--save-heatmap npy`` (or ``png16``) wrote,
named in the run's CSV; a run without them is refused with the command that makes them.
``--heatmap-size layer`` keeps a large run's maps small (a 7 x 7 map is 200 bytes), and is
what an audit of tens of thousands of images should be explained with.

Each map is area-averaged to ``grid`` x ``grid`` over the whole picture (a 4:1 picture's map is
squeezed as the model's input was, so a place is a fraction of the picture's width and height).
Clustering compares where each map's strongest evidence lies: the part of the map above half its
maximum (the region camcli's boxes are drawn from), as a unit vector. The whole map blurs the
strategies into each other: a map with a strong watermark and a weaker object lies halfway
between the watermark's maps and the object's, and a class's maps then form a continuum that no
eigengap splits; the part above half the maximum puts it with the strategy that dominates it. The peak
is kept as a fraction of the picture too, from the map at its saved resolution (refined below a
cell: :func:`peak_of`). A map that cannot
be read (missing, damaged, not 2D) joins no cluster; the audit says which and goes on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from camcli import tasks
from camcli.errors import UsageError, first_line
from camcli.output.csvfile import read_rows
from camcli.output.paths import inside
from camcli.output.pictures import run_csv
from camcli.output.render import decode_heatmap

GRID = 16
FOCUS = 0.5  # clustering compares the part of each map above this share of its maximum


@dataclass
class MapRecord:
    """One map of the run: what it explains and where its picture and files are."""

    path: str  # the image, relative to the run's input folder
    method: str
    layer: str
    explained: str  # the class the map explains
    predicted: str | None  # the classifier's prediction (None for other tasks)
    width: int
    height: int
    heatmap: str  # relative to the run folder
    box: tuple[float, float, float, float] | None = None  # where the explained thing is, if the row says (a detector's box)


@dataclass
class MapSet:
    """The maps of one method at one layer: records, the vectors clustering compares (n, grid*grid:
    each map's part above half its maximum, a unit vector), the maps themselves on the grid (scaled
    to a maximum of 1, float16: for mean maps), peaks (n, 2) as fractions (x, y) of the picture,
    and which maps were empty (all zero: no vector)."""

    method: str
    layer: str
    records: list[MapRecord]
    vectors: np.ndarray
    small: np.ndarray
    peaks: np.ndarray
    empty: np.ndarray
    grid: int = GRID
    unreadable: dict = field(default_factory=dict)  # index -> why: a map that could not be read joins no cluster


def read_run_maps(run: Path, grid: int = GRID, method: str | None = None, layer: str | None = None,
                  threads: int = 4) -> list[MapSet]:
    """Every saved map of the finished run in ``run``, one MapSet per method and layer."""
    run = Path(run)
    if not run.is_dir() or tasks.of_folder(run) is None:
        raise UsageError(f"{run} is not a finished `camcli explain` output folder (it has no predictions.csv, "
                         "detections.csv or segments.csv)")
    task = tasks.of_folder(run)
    if task.inputs != "image":  # a scan's or a clip's maps have a third axis
        from camcli.engine.discovery import KIND_NOUNS

        raise UsageError(f"{run} is a {task.name} run: its maps are three-dimensional ({KIND_NOUNS[task.inputs]}s), "
                         "and camcli audit compares the 2D maps of images")
    _, rows = read_rows(run_csv(run))
    ok = [r for r in rows if r.ok and r.method]
    with_maps = [r for r in ok if r.heatmap]
    if not with_maps:
        raise UsageError(f"{run} saved no maps: an audit reads each map, so explain with `save_heatmap` npy "
                         "(`--heatmap-size layer` keeps them small), e.g. camcli explain IMAGES --save-heatmap npy "
                         "--heatmap-size layer --out RUN")
    if method is not None:
        with_maps = [r for r in with_maps if r.method == method]
    if layer is not None:
        with_maps = [r for r in with_maps if r.layer == layer]
    if not with_maps:
        raise UsageError(f"{run} has no saved maps of method {method or 'any'} at layer {layer or 'any'}; it has "
                         + ", ".join(sorted({f'{r.method} at {r.layer}' for r in ok if r.heatmap})))
    groups: dict[tuple[str, str], list[MapRecord]] = {}
    for r in with_maps:
        explained = r.explained_label
        if explained is None:
            raise UsageError(f"{run_csv(run).name} does not say which class each map explains: this run's task cannot be "
                             "audited")
        groups.setdefault((r.method, r.layer), []).append(MapRecord(
            r.path, r.method, r.layer, explained, getattr(r, "pred_label", None), r.width, r.height, r.heatmap,
            r.explained_box))
    return [_read(run, method_, layer_, records, grid, threads) for (method_, layer_), records in groups.items()]


def _read(run: Path, method: str, layer: str, records: list[MapRecord], grid: int, threads: int) -> MapSet:
    vectors = np.zeros((len(records), grid * grid), np.float32)
    smalls = np.zeros((len(records), grid * grid), np.float16)
    peaks = np.zeros((len(records), 2), np.float32)
    empty = np.zeros(len(records), bool)
    unreadable: dict[int, str] = {}

    def one(i: int) -> None:
        try:
            heat = read_map(inside(run, records[i].heatmap))
        except (UsageError, ValueError) as e:  # missing, damaged, not 2D, or a name or link leaving the run
            unreadable[i] = str(e)
            empty[i] = True
            peaks[i] = np.nan
            return
        top = float(heat.max())
        if not np.isfinite(top) or top <= 0:
            empty[i] = True
            peaks[i] = np.nan
            return
        whole = cv2.resize(heat, (grid, grid), interpolation=cv2.INTER_AREA).ravel()
        focus = cv2.resize(np.clip(heat - FOCUS * top, 0, None), (grid, grid), interpolation=cv2.INTER_AREA).ravel()
        norm = float(np.linalg.norm(focus))
        if norm <= 0:  # the part above half the maximum vanished in the averaging: the whole map stands in
            focus, norm = whole, float(np.linalg.norm(whole))
        vectors[i] = focus / norm
        smalls[i] = whole / top
        peaks[i] = peak_of(heat)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(records))))
    return MapSet(method, layer, records, vectors, smalls, peaks, empty, grid, unreadable)


def peak_of(heat: np.ndarray) -> tuple[float, float]:
    """The map's peak as fractions (x, y) of the picture, refined below a cell: the centroid of the
    3 x 3 cells around the maximum. A layer's map is coarse (14 x 14, 7 x 7), and a small thing
    between cells puts the maximum in one cell or its neighbour from picture to picture; the
    centroid lands between them each time, so one place stays one place."""
    h, w = heat.shape
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    y0, y1, x0, x1 = max(0, y - 1), min(h, y + 2), max(0, x - 1), min(w, x + 2)
    window = np.clip(heat[y0:y1, x0:x1], 0, None).astype(np.float64)
    total = window.sum()
    if total <= 0:
        return (x + 0.5) / w, (y + 0.5) / h
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return float(((xs * window).sum() / total + 0.5) / w), float(((ys * window).sum() / total + 0.5) / h)


def read_map(path: Path) -> np.ndarray:
    """A saved map (:func:`~camcli.output.render.decode_heatmap`); one that is not 2D is refused."""
    try:
        heat = decode_heatmap(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the map {path}: {first_line(str(e))}") from None
    if heat.ndim != 2:
        raise UsageError(f"the map {path} has {heat.ndim} dimensions: an audit compares 2D maps of pictures")
    return np.nan_to_num(heat)

"""Writing one image of a detection run: an overlay per box (or one per method and layer with all
its boxes), raw heatmaps, and one row per box x method x layer.

Runs in the run's writer threads, as :mod:`.image_writer` does for classifiers; a file that
cannot be written turns its rows into error rows and never stops the run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from camcli.engine.layer_names import display_name
from camcli.engine.stream import ImageResult, MapResult
from camcli.geometry import Box, energy_inside
from camcli.output.image_writer import first_columns, write_heatmap
from camcli.output.paths import atomic_write, box_part, inside, overlay_rel
from camcli.output.render import OVERLAY_FORMATS, draw_labelled_boxes, fit_side, overlay_strips, picture_pieces
from camcli.output.rows import DetectionRow
from camcli.settings import ExplainSettings

#: the longer side of the map on which a box's share of the energy is measured
ENERGY_SIDE = 512


def map_box_part(m: MapResult) -> str:
    """``--box2-dog``: the box in the file names of a detection run's per-box files."""
    return box_part(m.detection.rank, m.detection.label)


def energy_in_box(m: MapResult) -> float | None:
    """The share of the map's sum that lies inside its own box (``None`` for an empty map),
    measured on the map read back over the image at most :data:`ENERGY_SIDE` pixels a side."""
    if m.empty:
        return None
    h, w = m.size
    scale = min(1.0, ENERGY_SIDE / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    heat = m.upsampled(size)
    if float(heat.max()) <= 0:  # its evidence lies outside the image (the detector's padding)
        return None
    x0, y0, x1, y1 = m.detection.box
    sx, sy = size[1] / w, size[0] / h
    return energy_inside(heat, [Box(x0 * sx, y0 * sy, x1 * sx, y1 * sy)])


def base_row(result: ImageResult) -> DetectionRow:
    """The columns every row of this image shares (or its one error row, or its no-box row)."""
    row = first_columns(result, DetectionRow)
    if result.status == "ok":
        row.detections = len(result.detections or [])
    return row


def _label(m: MapResult) -> str:
    d = m.detection
    return f"{d.label} {d.score:.2f}"


def write_detection_image(result: ImageResult, out: Path, settings: ExplainSettings) -> list[DetectionRow]:
    """Write one image's files; return its rows (one per box x method x layer, or one row saying
    it has no box, or one error row)."""
    base = base_row(result)
    if result.status != "ok" or not result.maps:
        return [base]
    s = settings
    ext = OVERLAY_FORMATS[s.overlay_format]
    bgr = s.overlay_format != "png"
    backdrop, scale = fit_side(result.image, s.overlay_max_side)
    rows = []
    for m in result.maps:
        d = m.detection
        rel = overlay_rel(result.item.rel, m.method, m.layer, ext, map_box_part(m) if s.detection_maps == "each" else "")
        rows.append(replace(base, method=m.method, layer=display_name(m.layer), output=rel, empty_map=m.empty,
                            warning=m.warning or None, det_rank=d.rank, det_index=d.index, det_label=d.label,
                            det_score=d.score, det_box=tuple(round(v, 1) for v in d.box),
                            energy_in_box=energy_in_box(m)))
    pictures = []  # (rows, maps) written as one overlay
    if s.detection_maps == "each":
        pictures = [([row], [m]) for row, m in zip(rows, result.maps)]
    else:
        groups: dict[tuple[str, str], tuple[list, list]] = {}
        for row, m in zip(rows, result.maps):
            group = groups.setdefault((m.method, m.layer), ([], []))
            group[0].append(row)
            group[1].append(m)
        pictures = list(groups.values())
    for group_rows, maps in pictures:
        try:
            if len(maps) == 1:
                read_rows = maps[0].row_reader(backdrop.shape[:2])
            else:
                readers = [m.row_reader(backdrop.shape[:2]) for m in maps]

                def read_rows(top, bottom, readers=readers):
                    return np.maximum.reduce([r(top, bottom) for r in readers])
            picture = overlay_strips(backdrop, read_rows, s.colormap, s.alpha, bgr=bgr)
            boxes = [(*m.detection.box, _label(m)) for m in maps]
            draw_labelled_boxes(picture, boxes, scale=scale, inplace=True)
            atomic_write(inside(out, group_rows[0].output), picture_pieces(picture, s.overlay_format,
                                                                           s.overlay_quality, bgr=bgr))
        except (OSError, ValueError) as e:
            for row in group_rows:
                row.status, row.error, row.output = "error", f"cannot write outputs: {e}", None
    if s.save_heatmap:
        for row, m in zip(rows, result.maps):
            write_heatmap(row, m, out, result.item.rel, s, map_box_part(m))
    return rows
